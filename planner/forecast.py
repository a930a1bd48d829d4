"""Forecast GPU demand against capacity, and say when to buy.

The model, and why: cluster demand has a daily cycle (people submit by day) and a weekly one
(weekends are quiet), on top of a level that drifts as teams grow. Holt-Winters
(``ExponentialSmoothing``) carries only one seasonal period, and a 168-hour season estimated from
the three or four weeks a fleet usually has is mostly noise. So the hourly series is split by MSTL
(LOESS, robust to the bursts a job log has) into a daily and a weekly component plus the rest; an
ETS model with additive errors and a damped additive trend (``ETSModel``) follows the rest —
damped, so a busy week does not extrapolate into an exploding trend; the seasonal components are
carried forward as their last cycle. Which seasons to model (both, daily only, none) is chosen on the
series' own last stretch (``select_periods``); a season needs two full cycles of history.

Prediction intervals are the wider of two: ETS's analytic interval and the quantiles of the errors
the chosen model made on that held-out stretch (split conformal). Neither is enough alone: ETS's
comes from in-sample residuals that MSTL has already fitted, so with real seasonality it is too
narrow (59% coverage of a nominal 90% on the synthetic test series); the held-out errors come from
one recent stretch and miss regime changes (30–70% on the Helios VCs). ETS's interval also widens
like a random walk's without bound, which demand over weeks does not, so its half-width is capped at
z × the spread of the adjusted series over the last four weeks.

The yardstick is the seasonal-naive forecast (the same hour of last week, or of yesterday), and
``backtest`` reports both by rolling-origin sMAPE, so a user can see whether the model earns its
keep on their data. ``capacity_answer`` turns a forecast into the operator's sentence: when p95
demand first exceeds usable capacity × target allocation, and how many GPUs close the gap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = 24
WEEK = 168
DEFAULT_LEVEL = 0.90  # the upper bound of a 90% interval is the 95th percentile
MIN_CALIBRATION = 24  # held-out errors needed to calibrate the interval on them
RECENT = 4 * WEEK  # the history whose spread bounds the ETS interval


@dataclass(frozen=True)
class Forecast:
    """``frame``: future bucket starts with ``mean``, ``lower`` and ``upper`` (the ``level``
    prediction interval, so ``upper`` is the (1 + level) / 2 quantile)."""

    frame: pd.DataFrame
    model: str
    level: float


def seasonal_periods(n: int) -> tuple[int, ...]:
    """The seasons (in hourly steps) that ``n`` observations can estimate: two full cycles each."""
    return tuple(p for p in (DAY, WEEK) if n >= 2 * p)


def _future_index(y: pd.Series, horizon: int) -> pd.DatetimeIndex:
    step = pd.Timedelta(y.index.freq) if y.index.freq is not None else y.index[-1] - y.index[-2]
    return pd.date_range(y.index[-1] + step, periods=horizon, freq=step)


def _clean(y: pd.Series) -> pd.Series:
    y = y.astype(float).interpolate(limit_direction="both")
    if y.isna().any():
        raise ValueError("the series has no values")
    return y


def seasonal_naive(y: pd.Series, horizon: int) -> pd.Series:
    """The baseline: each future hour repeats the same hour one week earlier (one day earlier when
    there is less than a week of history, the last value when there is less than a day)."""
    y = _clean(y)
    season = WEEK if len(y) >= WEEK else DAY if len(y) >= DAY else 1
    last = y.to_numpy()[-season:]
    values = np.resize(last, horizon)
    return pd.Series(values, index=_future_index(y, horizon), name="baseline")


def fit_forecast(y: pd.Series, horizon: int, *, level: float = DEFAULT_LEVEL,
                 periods: Sequence[int] | None = None) -> Forecast:
    """MSTL + damped ETS forecast of an hourly series ``horizon`` steps ahead (see the module
    docstring), clipped at zero, with a ``level`` prediction interval. ``periods`` default: the
    seasons ``select_periods`` picks on the series' own recent past."""
    y = _clean(y)
    candidates = [tuple(periods)] if periods is not None else _candidates(len(y), horizon)
    best, errors = _holdout(y, horizon, candidates)
    fc = _fit(y, horizon, best, level)
    if errors is None or len(errors) < MIN_CALIBRATION:
        return fc
    lo, hi = np.quantile(errors, [(1 - level) / 2, (1 + level) / 2])
    frame = fc.frame.assign(lower=np.minimum(fc.frame["lower"], fc.frame["mean"] + lo),
                            upper=np.maximum(fc.frame["upper"], fc.frame["mean"] + hi)).clip(lower=0.0)
    return Forecast(frame, fc.model, level)


def _candidates(n: int, horizon: int) -> list[tuple[int, ...]]:
    usable = seasonal_periods(n - min(horizon, n // 4))
    return [p for p in ((DAY, WEEK), (DAY,), ()) if set(p) <= set(usable)]


def _holdout(y: pd.Series, horizon: int,
             candidates: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], np.ndarray | None]:
    """The candidate with the lowest sMAPE on the series' last ``min(horizon, n/4)`` hours when
    fitted on the rest, and its errors there (actual − forecast)."""
    held = min(horizon, len(y) // 4)
    if held < 1 or not candidates:
        return seasonal_periods(len(y)), None
    train, actual = y.iloc[: len(y) - held], y.iloc[len(y) - held:].to_numpy()
    scored = []
    for p in candidates:
        mean = _fit(train, held, p, DEFAULT_LEVEL).frame["mean"].to_numpy()
        scored.append((smape(actual, mean), p, actual - mean))
    _, best, errors = min(scored, key=lambda s: s[0])
    return best, errors


def select_periods(y: pd.Series, horizon: int) -> tuple[int, ...]:
    """The seasons to model, chosen by holding out the series' last ``min(horizon, n/4)`` hours and
    keeping the candidate — daily and weekly, daily only, none — with the lowest sMAPE there. Three
    weeks of history rarely pin down a weekly shape, and a VC that is busy one week and idle the
    next is better served by its level alone; the data decides, not a fixed rule."""
    y = _clean(y)
    return _holdout(y, horizon, _candidates(len(y), horizon))[0]


def _fit(y: pd.Series, horizon: int, periods: tuple[int, ...], level: float) -> Forecast:
    from scipy.stats import norm
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    from statsmodels.tsa.seasonal import MSTL

    index = _future_index(y, horizon)
    if len(y) < 4 or float(y.std()) == 0.0:
        flat = np.full(horizon, float(y.iloc[-1]))
        return Forecast(pd.DataFrame({"mean": flat, "lower": flat, "upper": flat}, index=index), "last value", level)
    seasonal_future = np.zeros(horizon)
    adjusted = y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from the optimiser; the backtest is the judge
        if periods:
            fit = MSTL(y.reset_index(drop=True), periods=list(periods)).fit()
            seasonal = fit.seasonal.to_frame() if isinstance(fit.seasonal, pd.Series) else fit.seasonal
            for col, period in zip(seasonal.columns, periods, strict=True):
                seasonal_future += np.resize(seasonal[col].to_numpy()[-period:], horizon)
            adjusted = y - seasonal.sum(axis=1).to_numpy()
        ets = ETSModel(adjusted.reset_index(drop=True), error="add", trend="add", damped_trend=True).fit(disp=False)
        pred = ets.get_prediction(start=len(adjusted), end=len(adjusted) + horizon - 1).summary_frame(alpha=1 - level)
    mean = pred["mean"].to_numpy()
    cap = float(norm.ppf((1 + level) / 2)) * float(adjusted.iloc[-RECENT:].std())  # see the module docstring
    frame = pd.DataFrame({"mean": mean + seasonal_future,
                          "lower": np.maximum(pred["pi_lower"].to_numpy(), mean - cap) + seasonal_future,
                          "upper": np.minimum(pred["pi_upper"].to_numpy(), mean + cap) + seasonal_future},
                         index=index).clip(lower=0.0)
    name = f"MSTL({','.join(map(str, periods))})+ETS(A,Ad,N)" if periods else "ETS(A,Ad,N)"
    return Forecast(frame, name, level)


def smape(actual: Sequence[float] | np.ndarray, forecast: Sequence[float] | np.ndarray) -> float:
    """Symmetric mean absolute percentage error as a ratio (0 perfect, 2 worst); hours where both
    are zero count as perfect."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    denom = np.abs(a) + np.abs(f)
    terms = np.divide(2 * np.abs(f - a), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(terms.mean())


@dataclass(frozen=True)
class Backtest:
    """Per fold: ``origin`` (first forecast hour), ``model_smape``, ``baseline_smape``, the mean
    absolute errors ``model_mae`` and ``baseline_mae`` (in the series' unit: sMAPE says little on
    a VC that is idle most hours) and ``coverage`` (share of actual hours inside the interval);
    plus their means over folds."""

    folds: pd.DataFrame
    horizon: int
    model: str

    @property
    def model_smape(self) -> float:
        return float(self.folds["model_smape"].mean())

    @property
    def baseline_smape(self) -> float:
        return float(self.folds["baseline_smape"].mean())

    @property
    def model_mae(self) -> float:
        return float(self.folds["model_mae"].mean())

    @property
    def baseline_mae(self) -> float:
        return float(self.folds["baseline_mae"].mean())

    @property
    def coverage(self) -> float:
        return float(self.folds["coverage"].mean())


MIN_FOLD_TRAIN = 2 * DAY  # a fold fits on two days of history at least


def backtest_origins(n: int, horizon: int, folds: int, step: int | None = None,
                     min_train: int = 2 * WEEK) -> list[int]:
    """Rolling-origin fold starts: the last fold ends at the end of the series, earlier folds step
    back by ``step`` (default half a horizon); folds with less than ``min_train`` history (or, for a
    short series, than all but the horizon) are dropped, and never fit on under two days."""
    step = step or max(1, horizon // 2)
    origins = [n - horizon - k * step for k in range(folds)]
    floor = max(MIN_FOLD_TRAIN, min(min_train, n - horizon))
    return sorted(o for o in origins if o >= floor)


def backtest(y: pd.Series, horizon: int, *, folds: int = 3, step: int | None = None,
             min_train: int = 2 * WEEK, level: float = DEFAULT_LEVEL) -> Backtest:
    """Rolling-origin evaluation: fit on everything before each origin, forecast ``horizon`` hours,
    score model and seasonal-naive baseline against what happened."""
    y = _clean(y)
    rows = []
    model = ""
    for origin in backtest_origins(len(y), horizon, folds, step, min_train):
        train, actual = y.iloc[:origin], y.iloc[origin:origin + horizon].to_numpy()
        fc = fit_forecast(train, horizon, level=level)
        baseline = seasonal_naive(train, horizon)
        model = fc.model if not model or model == fc.model else "selected per fold"
        inside = (actual >= fc.frame["lower"].to_numpy() - 1e-9) & (actual <= fc.frame["upper"].to_numpy() + 1e-9)
        rows.append({"origin": y.index[origin], "train_hours": origin,
                     "model_smape": smape(actual, fc.frame["mean"]),
                     "baseline_smape": smape(actual, baseline),
                     "model_mae": float(np.abs(fc.frame["mean"].to_numpy() - actual).mean()),
                     "baseline_mae": float(np.abs(baseline.to_numpy() - actual).mean()),
                     "coverage": float(inside.mean())})
    if not rows:
        raise ValueError(f"too short to backtest: {len(y)} points for a {horizon}-point horizon")
    return Backtest(pd.DataFrame(rows), horizon, model)


# -- capacity -----------------------------------------------------------------------------------


def capacity_path(index: pd.DatetimeIndex, latest: float, *,
                  planned: Sequence[tuple[pd.Timestamp, float]] = (), unavailable: float = 0.0) -> pd.Series:
    """Usable capacity over a forecast horizon: the latest capacity held forward, stepping to each
    planned capacity from its date on, minus what is down (``unavailable``)."""
    values = np.full(len(index), float(latest))
    for when, capacity in sorted(planned):
        values[index >= pd.Timestamp(when)] = float(capacity)
    return pd.Series(np.maximum(values - unavailable, 0.0), index=index, name="usable")


@dataclass(frozen=True)
class CapacityAnswer:
    """When the ``upper`` forecast first exceeds usable capacity × target (``exceeds_at``, None
    when never within the horizon), and how much to add (``add``, in ``unit``, rounded up to whole
    ``per_node`` nodes)."""

    exceeds_at: pd.Timestamp | None
    add: int
    peak_upper: float
    usable: float
    target: float
    horizon_end: pd.Timestamp
    unit: str
    model: str | None
    quantile: float

    @property
    def threshold(self) -> float:
        return self.usable * self.target

    def sentence(self) -> str:
        p = f"p{round(self.quantile * 100)}"
        ref = (f"usable capacity × target allocation ({self.usable:,.0f} × {self.target:.0%} = "
               f"{self.threshold:,.0f} {self.unit})")
        if self.exceeds_at is None:
            return (f"{p} demand stays under {ref} through {self.horizon_end:%Y-%m-%d} (peak {self.peak_upper:,.0f}); "
                    f"nothing to add")
        of_model = f" of model {self.model}" if self.model else ""
        return (f"{p} demand exceeds {ref} on {self.exceeds_at:%Y-%m-%d} (peak {self.peak_upper:,.0f}); "
                f"add {self.add:,} {self.unit}{of_model}")


def capacity_answer(forecast: Forecast, usable: pd.Series, *, target: float = 0.8, per_node: int = 8,
                    unit: str = "GPUs", model: str | None = None) -> CapacityAnswer:
    """Compare the forecast's upper bound with ``usable × target`` over the horizon. ``add`` is the
    smallest multiple of ``per_node`` that keeps the upper bound within target everywhere."""
    if not 0 < target <= 1:
        raise ValueError(f"target allocation {target} is not in (0, 1]")
    upper = forecast.frame["upper"]
    usable = usable.reindex(upper.index, method="ffill")
    over = upper > usable * target
    exceeds_at = upper.index[over.to_numpy().argmax()] if over.any() else None
    short = float((upper / target - usable).max())
    per_node = max(1, per_node)
    add = int(math.ceil(max(short, 0.0) / per_node - 1e-9) * per_node) if exceeds_at is not None else 0
    at = usable.loc[exceeds_at] if exceeds_at is not None else usable.iloc[-1]
    return CapacityAnswer(exceeds_at, add, float(upper.max()), float(at), target, upper.index[-1],
                          unit, model, (1 + forecast.level) / 2)

"""Scenarios for the fake NVML: which GPUs a node has, how busy they are, and which faults happen when.

A scenario is built in code (``Scenario(model="H100", gpus=8, faults=(Fault("xid", at=5, gpu=3,
code=79),))``) or loaded from YAML (``load_scenario("xid79")`` or a path). The file format is
documented at the top of ``scenarios/healthy.yaml``. Every value is validated; a bad one raises
``ScenarioError`` naming the file and the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .gpu_models import MODELS, get_model


class ScenarioError(ValueError):
    """A scenario that does not exist or does not make sense; the message is one line."""


# Fault kinds, their extra parameters with defaults (None: derived from the model), default duration.
FAULT_PARAMS: Mapping[str, Mapping[str, float | None]] = {
    "xid": {"pid": None},
    "thermal": {"peak_c": 91.0, "ramp_s": 5.0},
    "powercap": {"limit_w": None},  # None: 70% of the model's default limit
    "slow": {"factor": 0.85},
    "ecc_corrected": {"per_hour": 30.0},
    "nvml_timeout": {},
    "missing": {},
}
DEFAULT_DURATION: Mapping[str, float] = {"thermal": 300.0, "nvml_timeout": 60.0}
ECC_XIDS = frozenset({48, 63, 64, 92, 94, 95})


def _number(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ScenarioError(f"{name}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{name}: {value!r} is outside [{lo:g}, {hi:g}]")
    return float(value)


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{name}: expected an integer, got {value!r}")
    _number(name, value, lo, hi)
    return value


@dataclass(frozen=True)
class Load:
    """Utilization over time: jobs start and stop on a slot grid, more of them at the daily peak.

    Each slot of ``job_slot_s`` seconds is busy with probability ``busy_fraction`` (raised by up to
    ``daily_amplitude`` at ``peak_hour_utc``, lowered as much 12 hours later); a busy slot runs at a
    level drawn from [level_min, level_max], plus a short cycle and noise.
    """

    busy_fraction: float = 0.7
    daily_amplitude: float = 0.2
    peak_hour_utc: float = 15.0
    job_slot_s: float = 3600.0
    level_min: float = 0.55
    level_max: float = 0.98
    cycle_period_s: float = 600.0
    cycle_amplitude: float = 0.1
    noise: float = 0.03
    shared_jobs: bool = True  # one job spans every GPU of the node (training); False: one per GPU
    # Share of busy slots whose job holds the GPU (processes, memory) but computes nothing: the
    # idle-but-allocated waste an operator wants to find.
    idle_allocated_fraction: float = 0.0
    # Taken off busy_fraction on Saturdays and Sundays (UTC): the weekly cycle.
    weekend_dip: float = 0.0

    def __post_init__(self) -> None:
        for name, lo, hi in (("busy_fraction", 0, 1), ("daily_amplitude", 0, 1), ("peak_hour_utc", 0, 24),
                             ("idle_allocated_fraction", 0, 1), ("weekend_dip", 0, 1),
                             ("job_slot_s", 10, 1e7), ("level_min", 0.05, 1), ("level_max", 0.05, 1),
                             ("cycle_period_s", 1, 1e7), ("cycle_amplitude", 0, 0.5), ("noise", 0, 0.3)):
            object.__setattr__(self, name, _number(name, getattr(self, name), lo, hi))
        if self.level_min > self.level_max:
            raise ScenarioError(f"level_min: {self.level_min:g} is above level_max {self.level_max:g}")
        if not isinstance(self.shared_jobs, bool):
            raise ScenarioError(f"shared_jobs: expected true or false, got {self.shared_jobs!r}")


@dataclass(frozen=True)
class Fault:
    """One fault on one GPU, ``at`` seconds after the scenario starts, lasting ``duration`` seconds.

    ``duration`` None takes the kind's default (thermal 300 s, nvml_timeout 60 s, others forever);
    ``code`` is the XID for kind ``xid``; ``params`` holds the kind's extra parameters.
    """

    kind: str
    at: float
    gpu: int = 0
    code: int | None = None
    duration: float | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_PARAMS:
            raise ScenarioError(f"kind: unknown fault kind {self.kind!r}; valid: {', '.join(FAULT_PARAMS)}")
        object.__setattr__(self, "at", _number("at", self.at, 0))
        _integer("gpu", self.gpu, 0, 1023)
        if self.kind == "xid":
            _integer("code", self.code, 1, 999)
        elif self.code is not None:
            raise ScenarioError(f"code: only faults of kind 'xid' take a code, not {self.kind!r}")
        if self.duration is not None:
            object.__setattr__(self, "duration", _number("duration", self.duration, 0))
        allowed = FAULT_PARAMS[self.kind]
        params = dict(self.params)
        for key, value in params.items():
            if key not in allowed:
                valid = ", ".join(allowed) or "none"
                raise ScenarioError(f"{key}: not a parameter of fault kind {self.kind!r} (valid: {valid})")
            params[key] = _number(key, value, 0)
        if not 0 < params.get("factor", 1.0) <= 1:
            raise ScenarioError(f"factor: {params['factor']:g} is outside (0, 1]")
        _number("peak_c", params.get("peak_c", 91.0), 50, 120)
        object.__setattr__(self, "params", params)

    @property
    def end(self) -> float:
        if self.kind == "xid":
            return self.at
        duration = self.duration if self.duration is not None else DEFAULT_DURATION.get(self.kind, math.inf)
        return self.at + duration

    def param(self, name: str) -> float | None:
        return self.params.get(name, FAULT_PARAMS[self.kind].get(name))


@dataclass(frozen=True)
class Scenario:
    """A node: ``gpus`` GPUs of one ``model``, its load, its faults and (A100/H100/H200) MIG layout."""

    model: str = "H100"
    gpus: int = 8
    name: str = "custom"
    description: str = ""
    load: Load = field(default_factory=Load)
    faults: tuple[Fault, ...] = ()
    mig: tuple[str, ...] = ()  # MIG profiles on every GPU, e.g. ("3g.40gb", "2g.20gb"); empty: MIG off
    driver_version: str = "550.90.07"
    cuda_version: int = 12040

    def __post_init__(self) -> None:
        model = get_model(self.model) if isinstance(self.model, str) else None
        if model is None:
            raise ScenarioError(f"model: unknown GPU model {self.model!r}; valid: {', '.join(MODELS)}")
        object.__setattr__(self, "model", model.key)
        _integer("gpus", self.gpus, 1, 64)
        _integer("cuda_version", self.cuda_version, 1000, 99999)
        if not isinstance(self.driver_version, str) or not self.driver_version:
            raise ScenarioError(f"driver_version: expected a string, got {self.driver_version!r}")
        if not isinstance(self.load, Load):
            raise ScenarioError(f"load: expected a Load, got {type(self.load).__name__}")
        object.__setattr__(self, "faults", tuple(self.faults))
        object.__setattr__(self, "mig", tuple(self.mig))
        for i, fault in enumerate(self.faults):
            where = f"faults[{i}]"
            if not isinstance(fault, Fault):
                raise ScenarioError(f"{where}: expected a Fault, got {type(fault).__name__}")
            if fault.gpu >= self.gpus:
                raise ScenarioError(f"{where}.gpu: {fault.gpu} but the node has {self.gpus} GPUs")
            if not model.ecc and (fault.kind == "ecc_corrected" or fault.code in ECC_XIDS):
                raise ScenarioError(f"{where}.kind: {model.key} has no ECC memory")
            limit = fault.param("limit_w")
            if limit is not None and not model.power_min_w <= limit <= model.power_limit_w:
                raise ScenarioError(f"{where}.limit_w: {limit:g} W is outside {model.key}'s range "
                                    f"[{model.power_min_w:g}, {model.power_limit_w:g}]")
        if self.mig:
            if not model.mig_profiles:
                raise ScenarioError(f"mig: {model.key} does not support MIG")
            unknown = [p for p in self.mig if p not in model.mig_profiles]
            if unknown:
                raise ScenarioError(f"mig: unknown profile {unknown[0]!r} for {model.key}; "
                                    f"valid: {', '.join(model.mig_profiles)}")
            if sum(model.mig_profiles[p][0] for p in self.mig) > 7:
                raise ScenarioError("mig: the profiles need more than the GPU's 7 compute slices")


def _scenario_dir() -> Any:
    return resources.files("collectors") / "scenarios"


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.name[:-5] for p in _scenario_dir().iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | os.PathLike[str]) -> Scenario:
    """A shipped scenario by name (``"xid79"``) or a YAML file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise ScenarioError(f"{path}: scenario file not found")
        return scenario_from_dict(_read_yaml(path.read_text(encoding="utf-8"), str(path)), str(path),
                                  default_name=path.stem)
    entry = _scenario_dir() / f"{text}.yaml"
    if not entry.is_file():
        raise ScenarioError(f"unknown scenario {text!r}; valid names: {', '.join(list_scenarios())}")
    return scenario_from_dict(_read_yaml(entry.read_text(encoding="utf-8"), str(entry)), str(entry),
                              default_name=text)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScenarioError(f"{source}: not valid YAML: {first}") from None


def _mapping(where: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise ScenarioError(f"{where}{'.' if where else ''}{key}: unknown field; valid: "
                                f"{', '.join(sorted(allowed))}")
    return value


def scenario_from_dict(data: Any, source: str = "<scenario>", *, default_name: str = "custom") -> Scenario:
    """Validate a parsed scenario file and build the ``Scenario``; errors name ``source`` and the field."""
    try:
        top = {f.name for f in fields(Scenario)}
        data = dict(_mapping("", data if data is not None else {}, top))
        data.setdefault("name", default_name)
        load = _mapping("load", data.get("load") or {}, {f.name for f in fields(Load)})
        try:
            data["load"] = Load(**load)
        except ScenarioError as exc:
            raise ScenarioError(f"load.{exc}") from None
        raw_faults = data.get("faults") or []
        if not isinstance(raw_faults, list):
            raise ScenarioError(f"faults: expected a list, got {type(raw_faults).__name__}")
        faults = []
        for i, raw in enumerate(raw_faults):
            base = {"kind", "at", "gpu", "code", "duration"}
            kind = raw.get("kind") if isinstance(raw, dict) else None
            extra = set(FAULT_PARAMS.get(kind, {})) if isinstance(kind, str) else set()
            raw = _mapping(f"faults[{i}]", raw, base | extra)
            for required in ("kind", "at"):
                if required not in raw:
                    raise ScenarioError(f"faults[{i}].{required}: missing")
            try:
                faults.append(Fault(params={k: v for k, v in raw.items() if k not in base},
                                    **{k: v for k, v in raw.items() if k in base}))
            except ScenarioError as exc:
                raise ScenarioError(f"faults[{i}].{exc}") from None
        data["faults"] = tuple(faults)
        mig = data.get("mig") or []
        if not isinstance(mig, list) or not all(isinstance(p, str) for p in mig):
            raise ScenarioError(f"mig: expected a list of profile names, got {mig!r}")
        data["mig"] = tuple(mig)
        for key in ("name", "description", "driver_version"):
            if key in data and not isinstance(data[key], str):
                data[key] = str(data[key])
        return Scenario(**data)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None

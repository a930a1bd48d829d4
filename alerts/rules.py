"""Alert rules: the YAML file, its validation, and the rule objects the evaluator runs.

A rule file is a mapping with one key, ``rules``, a list of rules. Every rule has ``name``, ``kind``
and ``severity`` (critical | warning | info), and may have ``for`` (how long the condition must hold
before the alert fires, as Prometheus), ``keep_firing_for`` (how long it keeps firing after the
condition clears), ``labels`` and ``annotations`` (templates, see ``alerts.templates``). The other
fields depend on the kind; ``default_rules.yaml`` documents each with an example.

Every mistake is a ``RuleError`` with one line naming the file, the line and the field::

    rules.yaml line 12: rules[3].for: expected a duration like 5m
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from alerts import templates
from alerts.rulefile import Document, Fields, RuleError, parse_duration

__all__ = ["RuleError", "Rule", "load_default_rules", "load_rules", "parse_duration", "parse_rules"]
from db.models import GpuSample

KINDS = ("threshold", "rate", "event", "absence", "bench", "idle_allocated")
SEVERITIES = ("critical", "warning", "info")
OPS = (">", ">=", "<", "<=")
# gpu_samples columns a rule may compare: every measured one (not keys, status or error text).
SAMPLE_COLUMNS = tuple(c.name for c in GpuSample.__table__.columns
                       if c.name not in ("gpu_id", "ts", "node_id", "status", "error"))
# Labels the evaluator sets; a rule's ``labels`` may not override them.
RESERVED_LABELS = frozenset({"alertname", "severity", "node", "gpu", "uuid", "model", "xid", "category"})
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DEFAULT_RULES = "default_rules.yaml"


# -- the rule objects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Threshold:
    """The GPU's ``column`` compared with ``value``, or with ``factor`` x another column (``value_ref``)."""

    column: str
    op: str
    value: float | None
    value_ref: str | None = None
    factor: float = 1.0


@dataclass(frozen=True, slots=True)
class Rate:
    """The increase of counter ``column`` over ``window`` (resets count from zero) compared with ``value``."""

    column: str
    op: str
    value: float
    window: float


@dataclass(frozen=True, slots=True)
class EventMatch:
    """Events that fire the rule: ``count`` matching events within ``window`` on one GPU (or node).

    Non-sticky: the condition holds until ``resolve_after`` after the last such trigger. Sticky
    (``until_recovered``): it also holds until the GPU is seen ok again (an ok sample or a
    ``gpu_recovered`` event newer than the trigger), looking back at most ``max_age``.
    """

    kinds: tuple[str, ...]
    codes: tuple[str, ...] = ()
    fatal: bool | None = None  # XIDs: the catalogue's fatality; other events: their ``fatal`` column
    resolutions: tuple[str, ...] = ()  # XID catalogue resolution buckets (RESTART_APP, RESET_GPU, …)
    severities: tuple[str, ...] = ()
    count: int = 1
    window: float = 3600.0
    resolve_after: float = 3600.0
    until_recovered: bool = False
    max_age: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Absence:
    """``target: node``: the last heartbeat is older than max(``intervals`` x the node's interval,
    ``at_least``). ``target: gpu``: a GPU of the inventory sent no ok sample for ``window`` while its
    node is up."""

    target: str
    intervals: float = 3.0
    at_least: float = 60.0
    window: float = 300.0


@dataclass(frozen=True, slots=True)
class Bench:
    """A GPU's latest result (within ``lookback``) below ``factor`` x the fleet median of its
    workload, metric and GPU model (``db.stragglers``)."""

    factor: float = 0.9
    lookback: float = 7 * 86400.0
    min_peers: int = 3
    workloads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IdleAllocated:
    """An allocated GPU below ``utilization``. ``source``: ``jobs`` (running jobs' node lists),
    ``processes`` (a process on the GPU), or ``auto`` (jobs when any job runs now, else processes)."""

    utilization: float = 0.05
    source: str = "auto"


Spec = Threshold | Rate | EventMatch | Absence | Bench | IdleAllocated


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    severity: str
    spec: Spec
    for_seconds: float = 0.0
    keep_firing_for: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # "FILE line N", for messages



# -- loading ------------------------------------------------------------------------------------


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rule file; raises ``RuleError`` (one line: file, line, field) on any mistake."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"{p}: cannot read the rule file: {exc.strerror}") from exc
    return parse_rules(text, str(p))


def load_default_rules() -> list[Rule]:
    """The rule pack shipped with gpufleet (``alerts/default_rules.yaml``)."""
    text = resources.files("alerts").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")
    return parse_rules(text, DEFAULT_RULES)


def parse_rules(text: str, filename: str = "<rules>") -> list[Rule]:
    doc = Document(text, filename)
    top = doc.data
    if top is None:
        top = {}
    if not isinstance(top, dict):
        doc.fail("", "expected a mapping with a 'rules' list")
    for key in top:
        if key != "rules":
            doc.fail(str(key), "unknown field (a rule file has one key, 'rules')")
    items = top.get("rules")
    if not isinstance(items, list):
        doc.fail("rules" if "rules" in top else "", "expected a list of rules under 'rules'")
    rules = [_rule(doc, f"rules[{i}]", item) for i, item in enumerate(items)]
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        if r.name in seen:
            doc.fail(f"rules[{i}].name", f"duplicate rule name {r.name!r} (also rules[{seen[r.name]}])")
        seen[r.name] = i
    return rules


def _column(f: Fields, name: str, *, required: bool = True) -> Any:
    v = f.string(name, required=required)
    if v is not None and v not in SAMPLE_COLUMNS:
        f.fail(name, f"unknown gpu_samples column {v!r}")
    return v


def _positive(v: float) -> bool:
    return v > 0


def _rule(doc: Document, path: str, item: Any) -> Rule:
    if not isinstance(item, dict):
        doc.fail(path, "expected a mapping (name, kind, severity, …)")
    f = Fields(doc, path, item)
    name = f.string("name", required=True)
    if not _LABEL_NAME.match(name):
        f.fail("name", "expected a name of letters, digits and underscores (it becomes the alertname label)")
    kind = f.string("kind", required=True, choices=KINDS)
    severity = f.string("severity", required=True, choices=SEVERITIES)
    spec = _SPECS[kind](f)
    labels = f.mapping("labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key):
            f.fail(f"labels.{key}", "expected a label name of letters, digits and underscores")
        if key in RESERVED_LABELS:
            f.fail(f"labels.{key}", "this label is set by the evaluator" +
                   (" (use the rule's severity field)" if key == "severity" else ""))
        if isinstance(value, dict | list) or value is None:
            f.fail(f"labels.{key}", "expected a string")
    template_kind = f"absence.{spec.target}" if isinstance(spec, Absence) else kind
    annotations: dict[str, str] = {}
    for key, template in f.mapping("annotations").items():
        if not isinstance(template, str):
            f.fail(f"annotations.{key}", "expected a template string")
        try:
            templates.check(template, template_kind)
        except templates.TemplateError as exc:
            f.fail(f"annotations.{key}", str(exc))
        annotations[str(key)] = template
    rule = Rule(
        name=name, kind=kind, severity=severity, spec=spec,
        for_seconds=f.duration("for", 0.0), keep_firing_for=f.duration("keep_firing_for", 0.0),
        labels={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in labels.items()},
        annotations=annotations, origin=f"{doc.filename} line {doc.line(path)}",
    )
    f.finish()
    return rule


def _threshold(f: Fields) -> Threshold:
    column = _column(f, "column")
    op = f.string("op", required=True, choices=OPS)
    value = f.number("value")
    ref = _column(f, "value_ref", required=False)
    if (value is None) == (ref is None):
        f.fail("value", "give either value or value_ref (with an optional factor)")
    factor = f.number("factor", 1.0)
    if ref is None and "factor" in f.data:
        f.fail("factor", "factor applies to value_ref only")
    return Threshold(column, op, value, ref, factor)


def _rate(f: Fields) -> Rate:
    return Rate(_column(f, "column"), f.string("op", ">", choices=OPS), f.number("value", required=True),
                f.duration("window", required=True))


def _event(f: Fields) -> EventMatch:
    match = f.get("match", required=True)
    if not isinstance(match, dict):
        f.fail("match", "expected a mapping (kind, code, fatal, resolution, severity)")
    m = Fields(f.doc, f"{f.path}.match", match)
    kinds = m.strings("kind")
    if not kinds:
        m.fail("kind", "required field is missing")
    codes = m.strings("code")
    fatal = m.boolean("fatal")
    resolutions = m.strings("resolution")
    if resolutions and kinds != ("xid",):
        m.fail("resolution", "resolution (the XID catalogue's bucket) needs kind: xid")
    severities = m.strings("severity")
    for s in severities:
        if s not in SEVERITIES:
            m.fail("severity", f"expected one of {', '.join(SEVERITIES)}, not {s!r}")
    m.finish()
    count = f.number("count", 1, check=lambda v: v >= 1 and v == int(v), what="a whole number >= 1")
    window = f.duration("window", 3600.0)
    sticky = f.boolean("until_recovered", False)
    resolve_after = f.duration("resolve_after", 0.0 if sticky else window)
    if not sticky and resolve_after <= 0:
        f.fail("resolve_after", "an event alert that is not until_recovered needs a resolve_after above 0")
    return EventMatch(kinds, codes, fatal, resolutions, severities, int(count), window, resolve_after, sticky,
                      f.duration("max_age", 7 * 86400.0))


def _absence(f: Fields) -> Absence:
    target = f.string("target", required=True, choices=("node", "gpu"))
    if target == "node":
        return Absence(target, intervals=f.number("intervals", 3.0, check=_positive, what="a number above 0"),
                       at_least=f.duration("at_least", 60.0))
    return Absence(target, window=f.duration("window", 300.0))


def _bench(f: Fields) -> Bench:
    return Bench(factor=f.number("factor", 0.9, check=lambda v: 0 < v < 1, what="a number between 0 and 1"),
                 lookback=f.duration("lookback", 7 * 86400.0),
                 min_peers=int(f.number("min_peers", 3, check=lambda v: v >= 1 and v == int(v),
                                        what="a whole number >= 1")),
                 workloads=f.strings("workload"))


def _idle(f: Fields) -> IdleAllocated:
    return IdleAllocated(utilization=f.number("utilization", 0.05, check=lambda v: 0 < v <= 1,
                                              what="a ratio between 0 and 1"),
                         source=f.string("source", "auto", choices=("auto", "jobs", "processes")))


_SPECS: dict[str, Callable[[Fields], Spec]] = {
    "threshold": _threshold, "rate": _rate, "event": _event, "absence": _absence, "bench": _bench,
    "idle_allocated": _idle,
}

"""The controller's own settings and its periodic tasks."""

from __future__ import annotations

import pytest

from alerts.config import parse_config
from alerts.controller import Controller, ControllerError, Settings, Task
from tests.alerts.harness import T0, store


def test_retention_per_table() -> None:
    s = Settings.from_mapping({"retention_days": {"gpu_samples": 7, "events": 90}}, "c.yaml")
    assert s.retention_days == {"gpu_samples": 7.0, "events": 90.0}
    with pytest.raises(ControllerError, match="retention_days.*no retention for table 'gpu_sample'"):
        Settings.from_mapping({"retention_days": {"gpu_sample": 7}}, "c.yaml")
    with pytest.raises(ControllerError, match="retention_days: a mapping"):
        Settings.from_mapping({"retention_days": 7}, "c.yaml")
    with pytest.raises(ControllerError, match="retention_days.events: not a number"):
        Settings.from_mapping({"retention_days": {"events": "soon"}}, "c.yaml")


def test_tasks_run_when_due_and_a_failing_one_is_not_fatal(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    now = [T0]
    ran: list[tuple[str, float]] = []

    def broken(engine, at):  # noqa: ANN001, ANN202
        ran.append(("broken", at))
        raise RuntimeError("planner down")

    ctl = Controller(engine, parse_config("route: {receiver: none}\nreceivers: [{name: none, type: none}]"),
                     rules=[], clock=lambda: now[0], tasks=[
                         Task("every_minute", 60.0, lambda e, at: ran.append(("minute", at))),
                         Task("broken", 600.0, broken)])
    for step in (0, 15, 30, 60, 75, 600):
        now[0] = T0 + step
        assert ctl.cycle().leader
    assert ran == [("minute", T0), ("broken", T0), ("minute", T0 + 60), ("minute", T0 + 600),
                   ("broken", T0 + 600)]
    engine.dispose()


def test_a_cycle_pauses_the_collector_but_collects_its_own_cycles(sqlite_url: str) -> None:
    import gc
    import weakref

    engine = store(sqlite_url)
    refs: list[weakref.ref] = []

    class Node:
        pass

    def make_garbage(engine, at):  # noqa: ANN001, ANN202
        assert not gc.isenabled()  # no automatic collection inside the cycle
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle, garbage once this returns
        refs.append(weakref.ref(a))

    ctl = Controller(engine, parse_config("route: {receiver: none}\nreceivers: [{name: none, type: none}]"),
                     rules=[], clock=lambda: T0, tasks=[Task("garbage", 1.0, make_garbage)])
    ctl.cycle()
    assert gc.isenabled()
    assert refs and refs[0]() is None  # collected at the end of the cycle
    engine.dispose()

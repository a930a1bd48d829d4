"""The importers and the exposition, fed damaged and random input: job files import whole or raise ``JobFileError``
and write nothing; the Prometheus importer's time and step parsers return a value or a ``UserError``; the
``/metrics`` text renders every label value the way prometheus_client does and parses back."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine, func, select

from agent.exporter import render_text
from db.engine import make_engine, upgrade
from gpufleet import timeargs
from gpufleet.cli import UserError
from tests.property.strategies import FAST, TEXT, damaged

jobs = pytest.importorskip("planner.jobs")
promimport = pytest.importorskip("gpufleet.promimport")

VALID = {
    "sacct": "JobID|User|Partition|State|Submit|Start|End|AllocTRES|NodeList|ExitCode\n"
             "101|alice|gpu|COMPLETED|2024-03-01T10:00:00|2024-03-01T10:01:00|2024-03-01T12:00:00|"
             "billing=8,cpu=32,gres/gpu=8,node=1|gpu-01|0:0\n"
             "102|bob|gpu|FAILED|2024-03-01T11:00:00|2024-03-01T11:05:00|2024-03-01T11:30:00|"
             "cpu=64,gres/gpu:h100=16,node=2|gpu-[02-03]|1:0\n",
    "helios": "job_id,user,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time\n"
              "j1,u1,8,32,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 02:00:00\n"
              "j2,u2,1,4,1,FAILED,2020-04-01 01:00:00,2020-04-01 01:00:30,2020-04-01 01:10:00\n",
    "openb": "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
             "scheduled_time\n"
             "openb-pod-0001,12000,16384,1,1000,,LS,Running,100,,105\n"
             "openb-pod-0002,8000,32768,2,1000,V100M16,BE,Succeeded,200,900,210\n",
    "csv": "job_id,submit_time,start_time,end_time,gpus,state,user\n"
           "a,1700000000,1700000100,1700003600,8,COMPLETED,alice\n"
           "b,2024-03-01T10:00:00Z,,,4,PENDING,bob\n",
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as folder:
        store = make_engine(f"sqlite:///{Path(folder) / 'jobs.db'}")
        upgrade(store)
        yield store
        store.dispose()


def _count(engine: Engine) -> int:
    from db.models import Job

    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def _import(engine: Engine, fmt: str, text: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"jobs-{n}.{fmt}"
        path.write_text(text)
        before = _count(engine)
        try:
            result = jobs.import_jobs(engine, path, fmt, cluster=f"c{n}")
        except jobs.JobFileError as exc:
            assert "\n" not in str(exc)
            assert _count(engine) == before, "a failed import wrote rows"
        else:
            assert _count(engine) - before == result.inserted <= result.rows


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_the_valid_samples_import(engine: Engine, fmt: str) -> None:
    before = _count(engine)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs"
        path.write_text(VALID[fmt])
        result = jobs.import_jobs(engine, path, fmt, cluster="valid")
    assert result.inserted == 2 == _count(engine) - before


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_job_files(engine: Engine, fmt: str) -> None:
    counter = iter(range(10**6))

    @FAST
    @given(damaged(VALID[fmt]))
    def check(text: str) -> None:
        _import(engine, fmt, text, next(counter))

    check()


@FAST
@given(st.one_of(TEXT, st.sampled_from(["now", "-6h", "-1h30m", "-", "-x", "1700000000", "-1", "nan", "inf",
                                        "2024-03-01T10:00:00Z", "2024-13-01", "1e999"])))
def test_prometheus_times_and_steps(text: str) -> None:
    for parse in (lambda t: timeargs.parse_time(t, 1.7e9, "--start"), promimport.parse_step):
        try:
            value = parse(text)
        except UserError as exc:
            assert "\n" not in str(exc)
        else:
            assert math.isfinite(value)


LABEL = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


class _Families:
    def __init__(self, rows: list[tuple[str, str, float]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily("gpufleet_gpu_power_watts", 'Power "draw"\\ in\nwatts', labels=["node", "model"])
        for node, model, value in self.rows:
            fam.add_metric([node, model], value)
        yield fam


@FAST
@given(st.dictionaries(st.tuples(LABEL, LABEL), st.floats(allow_nan=False), max_size=6))
def test_exposition_matches_prometheus_client_and_parses_back(rows: dict[tuple[str, str], float]) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([(n, m, v) for (n, m), v in rows.items()]))  # type: ignore[arg-type]
    text = render_text(registry)
    assert text == generate_latest(registry)
    parsed = {(s.labels["node"], s.labels["model"]): s.value
              for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}
    assert parsed == rows

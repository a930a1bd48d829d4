"""Job-log import: each format on real-layout rows, all-or-nothing on broken files, idempotent re-import."""

from __future__ import annotations

import datetime as dt
import gzip
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, upgrade
from db.models import Job
from planner.jobformats import count_hosts, parse_tres
from planner.jobs import JobFileError, import_jobs, load_jobs, parse_job_file
from tests.conftest import SHARED_DATA, missing

DATA = Path(__file__).resolve().parents[1] / "data" / "jobs"


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def by_id(path: Path, fmt: str, **kw: object) -> dict[str, dict]:
    return {j["external_id"]: j for j in parse_job_file(path, fmt, **kw).jobs}  # type: ignore[arg-type]


def test_sacct_rows_map_states_gpus_nodes_and_skip_steps() -> None:
    parsed = parse_job_file(DATA / "sacct_sample.txt", "sacct", cluster="c1")
    assert parsed.skipped == 2  # 4100.batch, 4100.extern
    jobs = {j["external_id"]: j for j in parsed.jobs}
    assert set(jobs) == {"4100", "4101", "4102", "4103", "4104", "4105_3", "4106", "4107"}
    done = jobs["4100"]
    assert (done["state"], done["category"], done["gpus"], done["gpu_model"], done["nodes"]) == (
        "COMPLETED", None, 8, "h100", 1)
    assert done["submit_ts"] == utc("2024-03-04T09:00:00") and done["end_ts"] == utc("2024-03-04T11:10:00")
    assert (done["user"], done["account"], done["partition"], done["cluster"]) == ("alice", "nlp", "gpu", "c1")
    assert jobs["4101"]["category"] == "host" and jobs["4101"]["nodes"] == 4
    assert jobs["4101"]["node_list"] == "gpu-a[02-05]"
    assert jobs["4102"]["category"] == "user/app" and jobs["4102"]["exit_code"] == "1:0"
    cancelled = jobs["4103"]
    assert (cancelled["state"], cancelled["category"], cancelled["start_ts"], cancelled["gpus"]) == (
        "CANCELLED", "cancelled", None, 4)  # no AllocTRES: the request counts
    assert cancelled["node_list"] is None
    assert jobs["4104"]["category"] == "timeout" and jobs["4104"]["nodes"] == 2
    assert jobs["4105_3"]["category"] == "user/app"  # OUT_OF_MEMORY
    assert jobs["4106"]["gpus"] == 0 and jobs["4106"]["end_ts"] is None
    assert jobs["4107"]["state"] == "PENDING" and jobs["4107"]["gpus"] == 64 and jobs["4107"]["nodes"] == 8


def test_tres_and_hostlists() -> None:
    assert parse_tres("billing=4,cpu=4,gres/gpu:a100=2,gres/gpu:h100=2,node=1") == (4, None, 1)
    assert parse_tres("cpu=4,mem=1G") == (0, None, None)
    assert parse_tres("") == (None, None, None)
    assert count_hosts("gpu[01-03,07],cpu1") == 5
    assert count_hosts("None assigned") is None


def test_helios_rows() -> None:
    jobs = by_id(DATA / "helios_sample.csv", "helios")
    assert len(jobs) == 6
    j = jobs["jZq5Pj9h"]
    assert (j["partition"], j["gpus"], j["nodes"], j["state"], j["category"]) == ("vcpDC", 16, 2, "FAILED", "user/app")
    assert j["start_ts"] - j["submit_ts"] == 2280  # the log's own queue column
    assert jobs["Xy9wT4Lm"]["category"] == "host"
    assert jobs["Ab3cD4Ef"]["category"] == "timeout"
    assert jobs["Kw0sD2Vn"]["category"] == "cancelled"


def test_openb_rows_copied_from_the_trace() -> None:
    jobs = by_id(DATA / "openb_sample.csv", "openb", origin=1_000_000.0)
    assert jobs["openb-pod-0001"]["gpus"] == pytest.approx(0.46)  # a shared GPU: gpu_milli 460
    assert jobs["openb-pod-0017"]["gpus"] == 8 and jobs["openb-pod-0017"]["state"] == "COMPLETED"
    assert jobs["openb-pod-0005"]["gpus"] == 0
    pending = jobs["openb-pod-0061"]
    assert pending["state"] == "PENDING" and pending["start_ts"] is None
    assert pending["submit_ts"] == 1_000_000 + 10001278
    assert jobs["openb-pod-0128"]["category"] == "user/app"
    assert jobs["openb-pod-0000"]["details"]["memory_bytes"] == 16384 * 2**20


def test_plain_csv_rows() -> None:
    jobs = by_id(DATA / "jobs_sample.csv", "csv")
    assert jobs["train-1"]["category"] == "gpu-hardware"  # the override beats FAILED's user/app
    assert jobs["train-1"]["submit_ts"] == utc("2026-01-05T08:00:00")
    assert jobs["eval-2"]["state"] == "COMPLETED" and jobs["eval-2"]["end_ts"] == 1767600660


@pytest.mark.parametrize(("name", "fmt", "lines"), [
    ("openb_bad.csv", "openb", ["line 4: num_gpu 'one'", "line 6: unknown pod_phase 'Exploded'"]),
    ("sacct_bad.txt", "sacct", ["line 3: unknown state 'EXPLODED'", "line 4: Submit 'yesterday'"]),
    ("helios_bad.csv", "helios", ["line 3: 9 fields, the header has 12", "line 4: gpu_num '-1'"]),
])
def test_bad_files_import_nothing_and_name_their_lines(sqlite_url: str, name: str, fmt: str,
                                                      lines: list[str]) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with pytest.raises(JobFileError) as exc:
        import_jobs(engine, DATA / name, fmt)
    message = str(exc.value)
    assert "nothing imported" in message and "\n" not in message
    for line in lines:
        assert line in message
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_missing_columns_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(JobFileError, match="line 1: the file is empty"):
        parse_job_file(tmp_path / "empty.csv", "helios")
    with pytest.raises(JobFileError, match="line 1: missing column.*submit_time"):
        parse_job_file(DATA / "openb_sample.csv", "csv")
    with pytest.raises(JobFileError, match="cannot read"):
        parse_job_file(tmp_path / "nope.csv", "csv")


def test_import_is_idempotent_and_loads_back(store_url: str, tmp_path: Path) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    gz = tmp_path / "sacct.txt.gz"
    gz.write_bytes(gzip.compress((DATA / "sacct_sample.txt").read_bytes()))
    first = import_jobs(engine, gz, "sacct")
    assert (first.rows, first.inserted, first.skipped) == (8, 8, 2)
    again = import_jobs(engine, DATA / "sacct_sample.txt", "sacct")
    assert (again.inserted, again.already_present) == (0, 8)
    assert import_jobs(engine, DATA / "sacct_sample.txt", "sacct", cluster="other").inserted == 8
    frame = load_jobs(engine, utc("2024-03-04T10:40:00"), utc("2024-03-04T11:00:00"), cluster="")
    # alive in the window: 4101 (until 12:30), 4104? no (submitted 11:30); 4100 (until 11:10); 4106/4107 later
    assert sorted(frame["external_id"]) == ["4100", "4101"]
    engine.dispose()


def test_the_full_openb_trace_imports_in_seconds(sqlite_url: str) -> None:
    path = SHARED_DATA / "alibaba_gpu_v2023" / "openb_pod_list_default.csv"
    if not path.exists():
        missing(f"shared data not found: {path}")
    engine = make_engine(sqlite_url)
    upgrade(engine)
    t0 = time.perf_counter()
    result = import_jobs(engine, path, "openb")
    elapsed = time.perf_counter() - t0
    assert result.inserted == 8152
    assert elapsed < 10, f"{elapsed:.1f} s"


def gpufleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpufleet", *args], capture_output=True, text=True, timeout=120)


def test_cli_imports_and_reports_bad_files_in_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    ok = gpufleet("import", "jobs", str(DATA / "helios_sample.csv"), "--format", "helios", "--db", db)
    assert ok.returncode == 0, ok.stderr
    assert "6 jobs read, 6 new" in ok.stdout
    bad = gpufleet("import", "jobs", str(DATA / "openb_bad.csv"), "--format", "openb", "--db", db)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("gpufleet: error:")]
    assert len(errors) == 1 and "line 4" in errors[0] and "nothing imported" in errors[0]
    nofile = gpufleet("import", "jobs", str(tmp_path / "nope.csv"), "--format", "csv", "--db", db)
    assert nofile.returncode == 2 and "cannot read" in nofile.stderr and "Traceback" not in nofile.stderr

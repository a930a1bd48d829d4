"""The Recommendations page through the real router: the same list as ``planner.recommend`` (and so as
`gpufleet plan recommend`), its filters, links to the evidence, and the audited acknowledgement."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db.audit import read
from db.engine import make_engine
from planner.recommend import recommend
from tests.dashboard import seed
from tests.dashboard.conftest import APP
from tests.dashboard.test_alerts_page import frame_with
from tests.dashboard.test_app import metrics, page
from tests.security.test_auth import OPS, SIGN_IN, VIEWS

RECS = "views/recommendations.py"


def _copy(seeded_url: str, folder: Path) -> str:
    copy = folder / "planning.db"
    shutil.copy(Path(seeded_url.removeprefix("sqlite:///")), copy)
    url = f"sqlite:///{copy}"
    engine = make_engine(url)
    seed.seed_alerting(engine)  # health, as the controller judges the seeded fleet
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def planning_url(seeded_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _copy(seeded_url, tmp_path_factory.mktemp("recs"))


@pytest.fixture
def planning(planning_url: str, use_store: Callable[[str], None]) -> str:
    use_store(planning_url)
    return planning_url


def expected(url: str) -> list[tuple[str, str, str]]:
    engine = make_engine(url)
    try:
        return [(r.kind, r.target, r.id) for r in recommend(engine, now=seed.NOW, window=7 * 86400.0)]
    finally:
        engine.dispose()


def test_the_page_lists_what_the_planner_recommends(planning: str) -> None:
    at = page(RECS)
    listed = frame_with(at, "severity", "kind", "target", "gain", "id")
    want = expected(planning)
    assert list(zip(listed["kind"], listed["target"], listed["id"], strict=True)) == want
    # What the seed was built to show, so that a wrong seed cannot make both sides agree.
    assert {("drain", "node-c"), ("idle", "node-a GPU 2"), ("idle", "node-a GPU 3"), ("reset", "node-c GPU 2"),
            ("straggler", "node-b GPU 3")} <= {(k, t) for k, t, _ in want}
    got = metrics(at)
    assert got["Critical"] == str(sum(1 for s in listed["severity"] if s == "critical"))
    idle_hours = listed.loc[listed["unit"] == "GPU-hours", "gain"].sum()
    assert got["GPU-hours to reclaim"] == f"{idle_hours:,.1f}"
    assert any("gpufleet plan recommend --db URL --window-days 7" in c.value for c in at.caption)


def test_filters_and_links_to_the_evidence(planning: str) -> None:
    at = page(RECS)
    at.multiselect(key="rec_kind").set_value(["idle"]).run()
    listed = frame_with(at, "kind", "target")
    assert set(listed["kind"]) == {"idle"} and set(listed["target"]) == {"node-a GPU 2", "node-a GPU 3"}
    links = {(el.proto.page, el.proto.query_string) for el in at.get("page_link")}
    assert any(p == "node" and "node=node-a" in q and "gpu=2" in q for p, q in links)
    at.multiselect(key="rec_kind").set_value(["straggler"]).run()
    links = {(el.proto.page, el.proto.query_string) for el in at.get("page_link")}
    assert any(p == "benchmarks" and "node=node-b" in q for p, q in links)
    at.multiselect(key="rec_kind").set_value([]).run()
    at.multiselect(key="rec_severity").set_value(["critical"]).run()
    assert set(frame_with(at, "severity", "kind")["severity"]) == {"critical"}


def test_a_link_opens_its_recommendation(planning: str) -> None:
    kind, target, rec = next(x for x in expected(planning) if x[0] == "straggler")
    at = page(RECS, {"rec": rec})
    first = at.expander[0]
    assert target in first.label and first.proto.expanded


def signed_in(email: str, query: dict[str, str] | None = None) -> AppTest:
    """The page as a signed-in user (sign-in configured, ``st.user`` faked; ``OPS`` is an operator)."""
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets = dict(SIGN_IN)
    at.user = {"is_logged_in": True, "sub": email, "email": email}
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run().switch_page(RECS).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_an_operator_acknowledges_and_it_is_audited(seeded_url: str, tmp_path: Path,
                                                    use_store: Callable[[str], None]) -> None:
    url = _copy(seeded_url, tmp_path)
    use_store(url)
    _kind, _target, rec = next(x for x in expected(url) if x[:2] == ("idle", "node-a GPU 2"))
    assert not [b for b in signed_in(VIEWS, {"rec": rec}).button if b.label == "Acknowledge"]  # a viewer cannot
    at = signed_in(OPS, {"rec": rec})
    at.text_input(key=f"ack_note_{rec}").input("ticket 7")
    at.button(key=f"ack_{rec}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Acknowledged" in s.value for s in at.success)
    engine = make_engine(url)
    entry = read(engine, actions=["recommendation.ack"])[0]
    assert (entry.actor, entry.source, entry.outcome, entry.target) == (OPS, "dashboard", "ok", "idle node-a GPU 2")
    assert entry.details == {"id": rec, "note": "ticket 7"}
    acked = next(r for r in recommend(engine, now=seed.NOW) if r.id == rec)
    engine.dispose()
    assert (acked.acknowledged_by, acked.note) == (OPS, "ticket 7")
    at = page(RECS)
    listed = frame_with(at, "target", "acknowledged")
    assert listed.set_index("target").loc["node-a GPU 2", "acknowledged"].startswith(OPS)
    at.checkbox(key="rec_acked").uncheck().run()
    assert "node-a GPU 2" not in set(frame_with(at, "target", "acknowledged")["target"])


def test_empty_store_explains(empty_url: str, use_store: Callable[[str], None]) -> None:
    use_store(empty_url)
    at = page(RECS)
    assert any("gpufleet demo" in i.value for i in at.info) and not at.dataframe

"""The app's pages, by section: adding a page is adding one line here (and its module in views/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class PageSpec:
    path: str  # relative to the app's folder, as st.page_link and AppTest.switch_page want it
    title: str
    icon: str
    url_path: str
    default: bool = False

    @property
    def route(self) -> str:
        """The path the page is served at: Streamlit serves the default page at the root ("")."""
        return "" if self.default else self.url_path


OVERVIEW = PageSpec("views/overview.py", "Fleet overview", ":material/dashboard:", "overview", default=True)
NODE = PageSpec("views/node.py", "Node and GPU detail", ":material/dns:", "node")
FAILURES = PageSpec("views/failures.py", "Failures", ":material/report:", "failures")
BENCHMARKS = PageSpec("views/benchmarks.py", "Benchmarks", ":material/speed:", "benchmarks")
ALERTS = PageSpec("views/alerts.py", "Alerts", ":material/notifications_active:", "alerts")
AUDIT = PageSpec("views/audit.py", "Audit", ":material/history:", "audit")
CAPACITY = PageSpec("views/capacity.py", "Capacity", ":material/trending_up:", "capacity")
RECOMMENDATIONS = PageSpec("views/recommendations.py", "Recommendations", ":material/task_alt:", "recommendations")

SECTIONS: dict[str, list[PageSpec]] = {
    "Fleet": [OVERVIEW, NODE],
    "Reliability": [FAILURES],
    "Performance": [BENCHMARKS],
    "Planning": [CAPACITY, RECOMMENDATIONS],
    "Operations": [ALERTS, AUDIT],
}


def all_pages() -> list[PageSpec]:
    return [p for pages in SECTIONS.values() for p in pages]

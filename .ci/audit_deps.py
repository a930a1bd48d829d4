"""Dependency audit for ``make test``: pip-audit over the installed environment, with one documented rule.

The rule: every known vulnerability is printed; the run fails only for a vulnerability that (1) is in a package
gpufleet needs at run time (the closure of its requirements with the agent, dashboard, planner, prometheus and
postgres extras; test and lint tools are reported, not failed on) and (2) has a fixed release, so raising the
lower bound in pyproject.toml is the fix. A vulnerability without a fix is a warning to look at, not a red build.
When the vulnerability service cannot be reached (offline CI, an outage) the audit says so and passes.

Run: ``.venv/bin/python .ci/audit_deps.py`` (exit 0 clean or only warnings, 1 actionable finding).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

RUNTIME_EXTRAS = ("agent", "dashboard", "planner", "prometheus", "postgres")
UNREACHABLE = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Max retries", "NameResolution",
               "Temporary failure", "Network is unreachable", "ServiceError", "SSLError", "Connection refused")


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _extras(requirement: str) -> tuple[str, ...]:
    found = re.search(r"\[([^\]]+)\]", requirement.split(";")[0])
    return tuple(e.strip() for e in found.group(1).split(",")) if found else ()


def _wanted(requirement: str, extras: tuple[str, ...]) -> bool:
    """Does this Requires-Dist line apply to an install with ``extras`` (markers: only ``extra ==`` matters
    for the closure; platform markers are taken as true, erring on the side of auditing more)."""
    _, _, marker = requirement.partition(";")
    wanted = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    return not wanted or any(w in extras for w in wanted)


def runtime_closure(root: str = "gpufleet", extras: tuple[str, ...] = RUNTIME_EXTRAS) -> set[str]:
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    while todo:
        name, with_extras = todo.pop()
        key = f"{name}[{','.join(sorted(with_extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(_name(r), _extras(r)) for r in requires if _wanted(r, with_extras)]
    return {k.split("[")[0] for k in seen} - {root}


def main() -> int:
    try:
        done = subprocess.run([sys.executable, "-m", "pip_audit", "--skip-editable", "--desc", "on", "--format",
                               "json", "--progress-spinner", "off"], capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        print("pip-audit: the vulnerability service did not answer within 240 s; dependency audit skipped")
        return 0
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if any(word in done.stderr for word in UNREACHABLE):
            print(f"pip-audit: vulnerability service unreachable ({reason[:200]}); dependency audit skipped")
            return 0
        print(f"pip-audit failed: {reason}", file=sys.stderr)
        return 1
    deps = report.get("dependencies", [])
    skipped = [d["name"] for d in deps if d.get("skip_reason")]
    if deps and len(skipped) == len(deps):  # a package index without the JSON API answers "not found" for all
        print(f"pip-audit: the vulnerability service knew none of the {len(deps)} packages "
              f"({deps[0]['skip_reason'][:120]}); dependency audit skipped")
        return 0
    runtime = runtime_closure()
    failing = 0
    findings = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    for name, version, vuln in findings:
        fixes = vuln.get("fix_versions") or []
        needed = name.lower().replace("_", "-") in runtime
        failing += bool(fixes) and needed
        summary = ((vuln.get("description") or "").strip().splitlines() or [""])[0][:160]
        print(f"pip-audit {'FAIL' if fixes and needed else 'warn'}: {name} {version} {vuln['id']} "
              f"({'runtime' if needed else 'tool/test'} dependency; fixed in {', '.join(fixes) or 'nothing yet'})"
              f": {summary}")
    print(f"pip-audit: {len(deps)} packages, {len(findings)} known vulnerabilities, "
          f"{failing} in runtime dependencies with a fix" + (f"; not audited: {', '.join(skipped)}" if skipped else ""))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())

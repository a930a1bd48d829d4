"""The shipped service definitions: systemd units that ``systemd-analyze verify`` accepts, sandboxed as documented,
and Kubernetes examples that parse and hold what docs/DEPLOY.md promises."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import missing

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
EXEC = "/usr/local/bin/gpufleet"
SANDBOX = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
           "CapabilityBoundingSet": "", "DynamicUser": "yes", "Restart": "on-failure", "UMask": "0077"}


def _directives(unit: Path) -> dict[str, list[str]]:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",), comment_prefixes=("#", ";"),
                                          interpolation=None, dict_type=_MultiDict)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return {k: v if isinstance(v, list) else [v] for k, v in parser["Service"].items()}


class _MultiDict(dict):  # type: ignore[type-arg]
    """Repeated keys (DeviceAllow=) collected as lists instead of overwriting."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def test_three_units() -> None:
    assert {u.name for u in UNITS} == {"gpufleet-agent.service", "gpufleet-controller.service",
                                       "gpufleet-dashboard.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_sandboxed(unit: Path) -> None:
    d = _directives(unit)
    for key, value in SANDBOX.items():
        assert d.get(key, [None])[-1] == value, f"{unit.name}: {key}"
    assert d["ExecStart"][0].startswith(EXEC + " ")
    assert any(v.startswith("/etc/gpufleet/") for v in d["EnvironmentFile"])
    assert d.get("StateDirectory"), "the only writable place is the state directory"
    if unit.name == "gpufleet-agent.service":
        assert d["DevicePolicy"] == ["closed"]
        allowed = [v.split()[0] for v in d["DeviceAllow"]]
        assert all(a.startswith(("char-nvidia", "/dev/nvidia", "/dev/kmsg")) for a in allowed), allowed
        assert "PrivateDevices" not in d  # it would hide /dev/nvidia*
    else:
        assert d["PrivateDevices"] == ["yes"]


def test_environment_examples_name_every_unit_file() -> None:
    for unit in UNITS:
        for env_file in _directives(unit)["EnvironmentFile"]:
            name = Path(env_file.lstrip("-")).name
            example = DEPLOY / "systemd" / f"{name}.example"
            assert example.is_file(), f"{unit.name} reads {env_file}: ship {example.name}"
            for line in example.read_text().splitlines():
                if line and not line.startswith("#"):
                    assert re.fullmatch(r"GPUFLEET_[A-Z_]+=\S+", line), line


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` fails on a unit whose ExecStart binary is missing, so each unit is checked as a
    copy whose ExecStart points at an executable that exists here; everything else is verified as shipped."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (systemd)")
    stand_in = shutil.which("gpufleet") or shutil.which("true")
    assert stand_in is not None
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(EXEC, stand_in))
    done = subprocess.run([analyze, "verify", *(str(tmp_path / u.name) for u in UNITS)], capture_output=True,
                          text=True, timeout=60)
    # verify exits 0 on unknown or misspelt directives but says so: any word from it is a finding.
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for unit in UNITS:  # systemd's exposure score, 0 (locked down) to 10; the threshold is in tenths
        exposure = subprocess.run([analyze, "security", "--offline=yes", "--threshold=30", str(tmp_path / unit.name)],
                                  capture_output=True, text=True, timeout=60)
        assert exposure.returncode == 0, f"{unit.name}: {exposure.stdout.strip().splitlines()[-1:]}"


def test_kubernetes_examples() -> None:
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}
    kinds = {name: [d["kind"] for d in found] for name, found in docs.items()}
    assert kinds["agent-daemonset.yaml"] == ["DaemonSet"]
    assert kinds["controller-deployment.yaml"] == ["Deployment"]
    assert kinds["dashboard-deployment.yaml"][0] == "Deployment"
    assert set(kinds["secret.example.yaml"]) == {"Secret"}
    secrets = {d["metadata"]["name"] for d in docs["secret.example.yaml"]}
    agent = docs["agent-daemonset.yaml"][0]["spec"]["template"]["spec"]
    assert agent["runtimeClassName"] == "nvidia" and agent["hostPID"] is False
    for name, found in docs.items():
        for doc in found:
            if doc["kind"] not in ("DaemonSet", "Deployment"):
                continue
            pod = doc["spec"]["template"]["spec"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"][
                "labels"].items(), name
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for container in pod["containers"]:
                assert container["resources"]["requests"] and container["resources"]["limits"], name
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
                refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
                refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                         if "secretKeyRef" in e.get("valueFrom", {})]
                assert refs and set(refs) <= secrets, name  # secrets come from Secrets, never inline
                inline = {e["name"] for e in container.get("env", []) if "value" in e}
                assert not inline & {"GPUFLEET_DB_URL", "GPUFLEET_DB_PASSWORD", "GPUFLEET_WEBHOOK_SECRET"}, name

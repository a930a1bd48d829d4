"""What keeps the agent's cycle cheap, held to giving the same telemetry: NVML fields batched in one
nvmlDeviceGetFieldValues call (the fake answering each field as its single call does), static values
read once per refresh, the per-link NVLink fallback for older drivers, and a filesystem's mount
looked up again only when the filesystem under the path changes."""

from __future__ import annotations

import os
from collections import Counter, namedtuple
from typing import Any

import pytest

from collectors import nvml as nvml_collector
from collectors.fake_nvml import FakeNVML
from collectors.nvml import BATCHED_FIELDS, INVENTORY_REFRESH_SECONDS, NvmlCollector
from collectors.records import GpuInfo, Sample
from collectors.scenarios import Fault, Scenario
from collectors.storage import MOUNT_REFRESH_SECONDS, StorageCollector
from tests.conftest import ManualClock

START = 1_764_000_000.0


def Clock() -> ManualClock:  # noqa: N802 - reads as the class it stands for
    return ManualClock(START)


class Counting:
    """A module-shaped proxy over a FakeNVML that counts the calls made through it."""

    def __init__(self, fake: FakeNVML) -> None:
        self._fake = fake
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fake, name)
        if not name.startswith("nvml") or not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            return attr(*args)

        call.__name__ = name
        return call


def _single_call(nvml: FakeNVML, h: Any, column: str) -> Any:
    """The value of ``column`` read the old way, one NVML function per value (None when unsupported)."""
    calls = {
        "temperature_memory_celsius": None,  # only ever a field
        "energy_joules_total": lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "pcie_replay_total": lambda: nvml.nvmlDeviceGetPcieReplayCounter(h),
        "ecc_corrected_volatile_total": lambda: nvml.nvmlDeviceGetTotalEccErrors(h, 0, 0),
        "ecc_uncorrected_volatile_total": lambda: nvml.nvmlDeviceGetTotalEccErrors(h, 1, 0),
        "ecc_corrected_aggregate_total": lambda: nvml.nvmlDeviceGetTotalEccErrors(h, 0, 1),
        "ecc_uncorrected_aggregate_total": lambda: nvml.nvmlDeviceGetTotalEccErrors(h, 1, 1),
        "retired_pages_sbe": lambda: len(nvml.nvmlDeviceGetRetiredPages(h, 0)),
        "retired_pages_dbe": lambda: len(nvml.nvmlDeviceGetRetiredPages(h, 1)),
        "remapped_rows_correctable": lambda: nvml.nvmlDeviceGetRemappedRows(h)[0],
        "remapped_rows_uncorrectable": lambda: nvml.nvmlDeviceGetRemappedRows(h)[1],
        "remapped_rows_pending": lambda: nvml.nvmlDeviceGetRemappedRows(h)[2],
        "remapped_rows_failure": lambda: nvml.nvmlDeviceGetRemappedRows(h)[3],
    }
    fn = calls[column]
    if fn is None:
        return "skip"
    try:
        return fn()
    except nvml.NVMLError_NotSupported:
        return None


@pytest.mark.parametrize("model", ["H100", "V100", "RTX4090", "L40S"])
def test_batched_fields_answer_what_the_single_calls_answer(model: str) -> None:
    clock = Clock()
    ecc_faults = (Fault("xid", at=5, gpu=0, code=48), Fault("ecc_corrected", at=0, gpu=0, params={"per_hour": 36000}))
    scenario = Scenario(model=model, gpus=1, faults=ecc_faults if model != "RTX4090" else ())  # no ECC memory
    nvml = FakeNVML(scenario, clock=clock, start=START)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    clock.now = START + 3600
    got = nvml.nvmlDeviceGetFieldValues(h, [f for f, _ in BATCHED_FIELDS])
    for fv, (fid, column) in zip(got, BATCHED_FIELDS, strict=True):
        assert fv.fieldId == fid
        single = _single_call(nvml, h, column)
        if single == "skip":
            continue
        if single is None:
            assert fv.nvmlReturn == nvml.NVML_ERROR_NOT_SUPPORTED, column
        else:
            assert fv.nvmlReturn == nvml.NVML_SUCCESS and fv.value.ullVal == single, column
    assert any(fv.nvmlReturn == nvml.NVML_SUCCESS and fv.value.ullVal for fv in got)  # errors were counted


def test_link_state_is_a_per_link_field() -> None:
    nvml = FakeNVML("healthy", clock=Clock(), start=START)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    states = nvml.nvmlDeviceGetFieldValues(h, [(nvml.NVML_FI_DEV_NVLINK_GET_STATE, link) for link in range(19)])
    assert [s.value.uiVal for s in states[:18]] == [nvml.NVML_NVLINK_STATE_ACTIVE] * 18
    assert states[18].nvmlReturn == nvml.NVML_ERROR_INVALID_ARGUMENT  # H100 has 18 links


def _collector(nvml: Any, clock: Clock) -> NvmlCollector:
    c = NvmlCollector(nvml, clock=clock, event_thread=False)
    assert c.check()
    return c


def test_one_field_call_per_gpu_and_static_values_once_per_refresh() -> None:
    clock = Clock()
    counting = Counting(FakeNVML("healthy", clock=clock, start=START, gpu_count=2))
    c = _collector(counting, clock)
    first = c.collect()
    assert len([r for r in first if isinstance(r, GpuInfo)]) == 2
    counting.calls.clear()
    clock.now += 10
    second = c.collect()
    calls = counting.calls
    assert calls["nvmlDeviceGetFieldValues"] == 2  # one per GPU: ECC, pages, rows, energy, NVLink, ...
    for static in ("nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetUUID",
                   "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetNvLinkState"):
        assert calls[static] == 0, static
    assert sum(calls.values()) <= 2 + 2 * 17  # the count and the event poll, then 17 calls per GPU
    row = next(r for r in second if isinstance(r, Sample) and r.kind == "gpu").values
    assert row["sm_clock_max_hz"] > 0 and row["pcie_link_width_max"] == 16 and row["nvlink_links_active"] == 18
    assert not any(isinstance(r, GpuInfo) for r in second)

    counting.calls.clear()
    clock.now += INVENTORY_REFRESH_SECONDS
    third = c.collect()
    assert counting.calls["nvmlDeviceGetMaxClockInfo"] == 4  # read again, SM and memory, per GPU
    assert not any(isinstance(r, GpuInfo) for r in third)  # unchanged: nothing new to store
    c.close()


class OlderDriver(FakeNVML):
    """An NVML without the per-link NVLink state field (drivers before it existed): that entry fails."""

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Any) -> Any:
        out = super().nvmlDeviceGetFieldValues(handle, fieldIds)
        for fv in out:
            if fv.fieldId == self.NVML_FI_DEV_NVLINK_GET_STATE:
                fv.nvmlReturn = self.NVML_ERROR_INVALID_ARGUMENT
        return out


def test_links_are_asked_one_by_one_when_the_driver_lacks_the_state_field() -> None:
    clock = Clock()
    counting = Counting(OlderDriver("healthy", clock=clock, start=START, gpu_count=1))
    c = _collector(counting, clock)
    rows = [r.values for r in c.collect() + c.collect() if isinstance(r, Sample) and r.kind == "gpu"]
    assert [r["nvlink_links_active"] for r in rows] == [18, 18]
    assert counting.calls["nvmlDeviceGetNvLinkState"] >= 18
    info = c._inventory[0]
    assert "nvlink_links_active" not in info.unsupported
    c.close()


def test_a_gpu_back_from_an_error_is_identified_again() -> None:
    clock = Clock()
    scenario = Scenario(model="H100", gpus=1, faults=(Fault("nvml_timeout", at=5, gpu=0, duration=3),))
    counting = Counting(FakeNVML(scenario, clock=clock, start=START))
    c = _collector(counting, clock)
    statuses = []
    for _ in range(10):
        clock.now += 1
        counting.calls.clear()
        statuses.append(next(r.values["status"] for r in c.collect() if isinstance(r, Sample)))
        if statuses[-1] == "ok" and "error" in statuses:
            assert counting.calls["nvmlDeviceGetUUID"] == 1  # handle and UUID read again after the error
            break
    assert "error" in statuses and statuses[-1] == "ok"
    c.close()


# -- storage: the mount of a configured path --------------------------------------------------------

sdiskpart = namedtuple("sdiskpart", "device mountpoint fstype opts")
statvfs_result = namedtuple("statvfs_result", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_fsid")


class Mounts:
    def __init__(self) -> None:
        self.table = [sdiskpart("/dev/vda1", "/", "ext4", "rw")]
        self.reads = 0

    def disk_io_counters(self, perdisk: bool = False) -> dict:
        return {}

    def disk_partitions(self, all: bool = False) -> list:
        self.reads += 1
        return list(self.table)


def test_the_mount_is_looked_up_again_when_the_filesystem_changes(tmp_path: Any) -> None:
    clock, mounts, fsid = Clock(), Mounts(), [1]
    path = str(tmp_path)
    c = StorageCollector(mounts, sysfs=os.fspath(tmp_path), procfs=os.fspath(tmp_path), clock=clock,
                         statvfs=lambda p: statvfs_result(4096, 4096, 100, 50, 40, 10, 5, fsid[0]), paths=[path])

    def device() -> str:
        return next(r.values["device"] for r in c.collect() if isinstance(r, Sample) and r.kind == "filesystem")

    assert device() == "/dev/vda1" and device() == "/dev/vda1"
    assert mounts.reads == 1  # not read again while nothing changed
    mounts.table.append(sdiskpart("/dev/nvme0n1", path, "xfs", "rw"))
    fsid[0] = 2  # a filesystem mounted on the path: another f_fsid
    assert device() == "/dev/nvme0n1" and mounts.reads == 2
    mounts.table.pop()
    mounts.table.append(sdiskpart("/dev/nvme1n1", path, "xfs", "rw"))  # same fsid: seen at the next refresh
    clock.now += MOUNT_REFRESH_SECONDS
    assert device() == "/dev/nvme1n1"


def test_the_batched_field_table_names_sample_columns() -> None:
    columns = {column for _, column in BATCHED_FIELDS}
    assert columns <= set(nvml_collector._CALL_COLUMNS["field_values"])
    assert len(columns) == len(BATCHED_FIELDS)

"""What the dashboard's words mean: GPU states, problems, GPU-hours lost, MTBF, stragglers.

One place for the thresholds and for the sentences the pages show as captions, so that what a page
says is what the code does. The SQL side of the same thresholds lives in ``db.rollups`` and
``db.readmodels``.
"""

from __future__ import annotations

from db.readmodels import MINUTE_MAX_SECONDS, RAW_MAX_SECONDS
from db.rollups import IDLE_UTILIZATION, THROTTLE
from db.stragglers import STRAGGLER_RATIO, Z_LIMIT  # shared with the bench_slow alert and events

BUSY_UTILIZATION = IDLE_UTILIZATION  # a sample at or above this utilization is busy
THROTTLE_MASK = THROTTLE  # power cap 0x4, HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40, power brake 0x80
THERMAL_MASK = 0x20 | 0x40
POWER_MASK = 0x4 | 0x80
RECENT_MIN_SECONDS = 60.0  # "recent" for current state is at least this ...
RECENT_INTERVALS = 3  # ... and at least three of the node's sampling intervals
DEFAULT_INTERVAL_SECONDS = 10.0  # the agent's default, when heartbeats cannot tell
LIVE_REFRESH_SECONDS = 10
HEATMAP_MAX_GPUS = 128
EVENT_TIMELINE_LIMIT = 5000

# Exclusive states of a GPU, in the order they stack; "throttled" and "unhealthy" are flags on top.
STATES = ("busy", "idle-allocated", "idle", "down")
FLAGS = ("throttled", "unhealthy")

STATE_CAPTION = (
    f"**busy**: utilization ≥ {BUSY_UTILIZATION:.0%}; **idle-allocated**: below that with a process on "
    f"the GPU; **idle**: below that with no process; **down**: the GPU reports a non-ok status, or "
    f"nothing for {RECENT_INTERVALS} sampling intervals (at least {RECENT_MIN_SECONDS:.0f} s). "
    f"**throttled**: a power-cap, HW-slowdown, SW/HW-thermal or power-brake clock-event reason is set; "
    f"**unhealthy**: a fatal or critical event in the range not followed by `gpu_recovered`, or a "
    f"pending or failed ECC row remap."
)
SOURCE_CAPTION = (
    f"Ranges up to {RAW_MAX_SECONDS // 3600} h read raw samples, up to {MINUTE_MAX_SECONDS // 86400} days "
    "1-minute rollups, longer ones 1-hour rollups; a rollup bucket is classified by its mean utilization."
)
HOURS_CAPTION = (
    "GPU-hours in a state are the area under the state chart: each GPU counts in each state for its share "
    "of samples in a bucket; a GPU that sent nothing in a bucket counts as down."
)
LOST_CAPTION = (
    "**GPU-hours lost** to a fatal event run from the event until the GPU is next seen with an ok status "
    "(or the end of the range); overlapping outages of one GPU count once, for the first event. "
    "**down, no fatal event** is the rest of the range's down GPU-hours (lost, erroring or silent GPUs)."
)
MTBF_CAPTION = (
    "**MTBF** = observed hours / failures in the range, where a failure is a fatal event and fatal events on "
    "one GPU during one outage count once. GPU: GPU-hours up (reporting an ok status) / GPU failures; node: "
    "node-hours up (per node, the hours of its longest-up GPU) / failures on nodes; fleet: wall-clock hours "
    "of the range / failures anywhere."
)
STRAGGLER_CAPTION = (
    f"A **straggler** is a result at or below {STRAGGLER_RATIO:g} x the fleet median of comparable results: same "
    "workload, parameters and metric, same device model, dtype, torch and driver (at or above median / "
    f"{STRAGGLER_RATIO:g} where lower is better: latency, time). 5% off the median, or a robust z-score "
    f"(median/MAD) beyond {Z_LIMIT:g} at least 2% off, is a warning. Two straggling runs in a row raise a "
    "`bench_slow` event. Evidence: the share of the run's samples with a throttling reason, its peak "
    "temperature and mean clocks."
)
EMPTY_STORE = (
    "There is no data in this store yet. Start an agent on a GPU server with `gpufleet agent run --db URL`, "
    "or try the simulated fleet with `gpufleet demo`, then open the dashboard on the same store "
    "(`gpufleet dashboard --db URL`)."
)

#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in under five minutes: the standard benchmark suite on CUDA, one
# collection by the real NVML collector, and the CUDA targets (bf16 gemm >= 90% of torch.matmul,
# device copy >= 90% of tensor.copy_), summed up in one short table (bench/cuda_check.py).
# Fails clearly (exit 2) where there is no GPU. Usage: bench/gpu_check.sh  (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPUFLEET=${GPUFLEET:-.venv/bin/gpufleet}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-210}

fail() { echo "gpu_check: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA GPU here: nvidia-smi is not installed"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || fail "no NVIDIA GPU here: nvidia-smi lists none"
[ -x "$PY" ] || fail "$PY not found: run 'make test' (or create .venv) first"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || fail "torch sees no CUDA device ($("$PY" -c 'import torch; print(torch.__version__)'), a CPU build?)"
"$PY" -c 'import pynvml' 2>/dev/null || fail "nvidia-ml-py is not installed (pip install -e '.[agent]')"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nvidia-smi --query-gpu=index,name,driver_version,temperature.gpu,power.draw,clocks.sm --format=csv,noheader

# The standard suite on CUDA into a throwaway store; a failed workload shows in the table, so go on.
timeout "$SUITE_TIMEOUT" "$GPUFLEET" bench run --suite standard --device cuda --db "sqlite:///$work/store.db" \
  --json >"$work/bench.json" 2>"$work/bench.log" || {
  rc=$?
  [ -s "$work/bench.json" ] || { tail -20 "$work/bench.log" >&2; fail "gpufleet bench run failed (exit $rc)"; }
}
# One collection by the real NVML collector (no store, no /metrics).
"$GPUFLEET" agent run --once --metrics-addr '' --spool-dir "$work/spool" >"$work/agent.json" 2>"$work/agent.log" \
  || { tail -20 "$work/agent.log" >&2; fail "gpufleet agent run --once failed"; }
"$PY" bench/cuda_check.py --bench-json "$work/bench.json" --agent-json "$work/agent.json"

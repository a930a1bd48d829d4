"""gpufleet: monitoring, benchmarking and capacity planning for GPU clusters."""

__version__ = "0.1.0"

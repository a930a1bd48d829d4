"""Benchmark workloads run by ``gpufleet bench run`` and the agent's scheduler (see ``base.py``)."""

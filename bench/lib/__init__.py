"""Helpers for bench/run_proxy_bench.py: config rendering, processes, wrk, reporting."""

__all__: list[str] = []

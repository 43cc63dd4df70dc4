"""Proxy benchmark: kedge vs the bare backend vs nginx (and HAProxy) on one machine, one run.

Usage: python bench/run_proxy_bench.py [--duration 10] [--reps 3] [--connections 64] [--quick]
       [--with-haproxy] [--auth] [--json FILE] [--idle-connections 1000] [--keep-temp]
       [--kedge-cmd CMD]
--auth adds `kedge-auth`: the same edge with an OIDC issuer, the hit route requiring a
permission, and wrk sending a valid RS256 bearer token (verified once, then from the cache),
plus the in-process cost of token verification (bench/bench_auth.py).
The method (CPU pinning, what CPU/request means, fairness) is in bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.auth import JwksServer, auth_section, mint_token, rsa_signing_key
from lib.idle import IdleResult, measure_idle_memory, raise_nofile_limit
from lib.procs import (
    ManagedProcess,
    cpu_busy_seconds,
    http_get,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from lib.render import BODY, HIT_HOST
from lib.report import (
    RunSample,
    TargetSummary,
    format_idle_table,
    format_table,
    summarize,
)
from lib.targets import (
    LOAD_CPU,
    PROXY_CPU,
    Target,
    start_haproxy,
    start_kedge,
    start_nginx_backend,
    start_nginx_proxy,
)
from lib.tools import ensure_tools, machine_facts
from lib.wrk import WrkError, run_wrk, wrk_command

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 2.0
NOFILE = 65536
NOISY_OTHER = 0.25  # share of the proxy's CPU used by anything else before a run is suspect


@dataclass
class Bench:
    """What one invocation started and measured; filled in step by step by `run`."""

    args: argparse.Namespace
    workdir: Path
    started: list[ManagedProcess] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    samples: dict[str, list[RunSample]] = field(default_factory=dict)
    idle: dict[str, IdleResult] = field(default_factory=dict)
    jwks: JwksServer | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--reps", type=int, default=3, help="measured runs per target")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (-c)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 rep of 3 s")
    p.add_argument("--with-haproxy", action="store_true", help="install and bench HAProxy too")
    p.add_argument(
        "--auth", action="store_true", help="also bench kedge with a bearer token on the route"
    )
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    p.add_argument("--idle-connections", type=int, default=1000, help="N for the idle-memory test")
    p.add_argument("--keep-temp", action="store_true", help="keep configs and logs for reading")
    p.add_argument(
        "--kedge-cmd",
        help="run this instead of `python -m kedge` (the harness appends `serve --config ...`)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration = 1, 3.0
    if args.reps < 1 or args.duration < 1 or args.connections < 1 or args.idle_connections < 1:
        p.error("--reps, --duration, --connections and --idle-connections must be at least 1")
    return args


def check_target(target: Target) -> None:
    """One request by hand: the target must answer 200 with the backend's exact body."""
    headers = dict(h.split(": ", 1) for h in target.headers)
    status, body = http_get(
        f"http://127.0.0.1:{target.port}/", host=HIT_HOST, timeout_s=5.0, headers=headers
    )
    if status != 200 or body != BODY.encode():
        raise RuntimeError(f"{target.name}: expected 200 + the bench body, got {status} {body!r}")


def start_targets(bench: Bench) -> Target:
    """Backend, nginx, (HAProxy), kedge; a kedge that never gets ready is skipped, not fatal."""
    backend = start_nginx_backend(bench.workdir)
    bench.started.append(backend.process)
    bench.targets.append(backend)
    nginx = start_nginx_proxy(bench.workdir, backend.port)
    bench.started.append(nginx.process)
    bench.targets.append(nginx)
    if bench.args.with_haproxy:
        haproxy = start_haproxy(bench.workdir, backend.port)
        bench.started.append(haproxy.process)
        bench.targets.append(haproxy)
    program = shlex.split(bench.args.kedge_cmd) if bench.args.kedge_cmd else None
    kedges: list[dict[str, Any]] = [{"name": "kedge"}]
    if bench.args.auth:
        key = rsa_signing_key()
        jwks = JwksServer(key)
        bench.jwks = jwks
        token = mint_token(key, jwks.issuer)
        kedges.append(
            {
                "name": "kedge-auth",
                "auth": auth_section(jwks.issuer),
                "headers": (f"Proxy-Authorization: Bearer {token}",),
            }
        )
    for spec in kedges:
        name = spec["name"]
        try:
            kedge = start_kedge(bench.workdir, backend.port, REPO_ROOT, program, **spec)
            bench.started.append(kedge.process)
            bench.targets.append(kedge)
        except RuntimeError as exc:
            bench.skipped[name] = str(exc)
            print(f"\nSKIPPING {name}: `kedge serve` did not get ready:\n{exc}\n", flush=True)
    for target in list(bench.targets):
        try:
            check_target(target)
        except (RuntimeError, OSError) as exc:
            said = target.process.log_tail()
            reason = f"first request failed: {exc}" + (f"\n{said}" if said else "")
            bench.skipped[target.name] = reason
            bench.targets.remove(target)
            if target.name != "direct":  # the backend is needed by the others
                target.process.stop()
                bench.started.remove(target.process)
            print(f"SKIPPING {target.name}: {reason}", flush=True)
    return backend


def measure_idle(bench: Bench) -> None:
    """Idle keep-alive cost of each proxy, measured before any load so its heap is still small.

    After a load run the allocator keeps freed memory, and new connections reuse it without
    any RSS growth; a fresh proxy (one request served) shows what each connection costs.
    """
    for target in bench.targets:
        # kedge-auth is the same process shape as kedge; its requests need a token.
        if target.cpu_of == "proxy" and not target.headers:
            bench.idle[target.name] = measure_idle_memory(
                target.port,
                host=HIT_HOST,
                count=bench.args.idle_connections,
                rss=functools.partial(tree_rss_bytes, target.process.pid),
            )


def measured_run(bench: Bench, target: Target, backend: Target, rep: int) -> None:
    """Warm up, then one wrk run; CPU is charged to the target's process tree."""
    args = bench.args
    wrk = functools.partial(
        wrk_command,
        port=target.port,
        host=HIT_HOST,
        connections=args.connections,
        threads=1,
        cpu=LOAD_CPU,
        headers=target.headers,
    )
    started = time.monotonic()
    try:
        run_wrk(wrk(duration_s=WARMUP_S), duration_s=WARMUP_S)
        cpu0 = tree_cpu_seconds(target.process.pid)
        backend0 = tree_cpu_seconds(backend.process.pid)
        busy0, steal0 = cpu_busy_seconds(PROXY_CPU)
        result, _ = run_wrk(wrk(duration_s=args.duration), duration_s=args.duration)
        cpu = tree_cpu_seconds(target.process.pid) - cpu0
        backend_cpu = tree_cpu_seconds(backend.process.pid) - backend0
        busy1, steal1 = cpu_busy_seconds(PROXY_CPU)
    except WrkError as exc:
        print(f"  rep {rep}/{args.reps} {target.name:8} wrk failed: {exc}", flush=True)
        bench.runs[target.name].append({"rep": rep, "error": str(exc)})
        bench.samples[target.name].append(RunSample(math.nan, 0, math.nan, math.nan, 1, 0, 0))
        return
    # Noise check: work on the proxy's CPU that is not the proxy (other tenants, or the kernel's
    # softirq share of the proxy's own sockets), and time the hypervisor stole from it.
    proxy_cpu_busy = busy1 - busy0
    other = max(0.0, proxy_cpu_busy - cpu) if target.cpu_of == "proxy" else math.nan
    stolen = steal1 - steal0
    sample = RunSample(
        rps=result.rps,
        requests=result.requests,
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        errors=result.errors,
        cpu_s=cpu,
        duration_s=result.duration_s,
    )
    bench.samples[target.name].append(sample)
    bench.runs[target.name].append(
        {
            "rep": rep,
            **asdict(result),
            "errors": result.errors,
            "cpu_of": target.cpu_of,
            "cpu_s": cpu,
            "cpu_us_per_request": sample.cpu_us_per_request,
            "cpu_busy": sample.cpu_busy,
            "backend_cpu_s": backend_cpu,
            "backend_cpu_us_per_request": backend_cpu * 1e6 / max(result.requests, 1),
            "proxy_cpu_busy_s": proxy_cpu_busy,
            "proxy_cpu_other_s": other,
            "proxy_cpu_steal_s": stolen,
        }
    )
    noise = ""
    if target.cpu_of == "proxy":
        noise = f"  CPU {PROXY_CPU}: other {other / result.duration_s:.0%}"
        noise += f" steal {stolen / result.duration_s:.0%}"
    print(
        f"  rep {rep}/{args.reps} {target.name:8} {result.rps:>9,.0f} rps  "
        f"p50 {result.p50_us / 1000:.3f} ms  p99 {result.p99_us / 1000:.3f} ms  "
        f"CPU {sample.cpu_us_per_request:.1f} us/req of {target.cpu_of} "
        f"({sample.cpu_busy:.0%} busy)  errors {result.errors}  "
        f"[{time.monotonic() - started:.0f} s]{noise}",
        flush=True,
    )


def measure_throughput(bench: Bench, backend: Target) -> None:
    for target in bench.targets:
        bench.runs[target.name] = []
        bench.samples[target.name] = []
    # Reps interleave the targets so slow drift (thermal, noisy neighbours) hits all alike.
    for rep in range(1, bench.args.reps + 1):
        for target in bench.targets:
            measured_run(bench, target, backend, rep)


def _finite(value: Any) -> Any:
    """JSON has no NaN: turn it into null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(
    path: Path, bench: Bench, facts: dict[str, str], summaries: list[TargetSummary]
) -> None:
    args = bench.args
    doc = {
        "facts": facts,
        "params": {
            "duration_s": args.duration,
            "reps": args.reps,
            "connections": args.connections,
            "wrk_threads": 1,
            "warmup_s": WARMUP_S,
            "idle_connections": args.idle_connections,
        },
        "runs": bench.runs,
        "summary": [asdict(s) for s in summaries],
        "idle_memory": {
            name: {**asdict(r), "kib_per_connection": r.kib_per_connection}
            for name, r in bench.idle.items()
        },
        "access_log_bytes": _access_log_bytes(bench),
        "skipped": bench.skipped,
    }
    path.write_text(json.dumps(_finite(doc), indent=2) + "\n")
    print(f"wrote {path}")


def _access_log_bytes(bench: Bench) -> dict[str, int]:
    return {
        t.name: t.access_log.stat().st_size
        for t in bench.targets
        if t.access_log is not None and t.access_log.exists()
    }


def run(bench: Bench) -> int:
    args = bench.args
    facts = machine_facts(with_haproxy=args.with_haproxy)
    print("machine:")
    for key, value in facts.items():
        print(f"  {key:10} {value}")
    print(
        f"params: {args.reps} x {args.duration:.0f} s per target after a {WARMUP_S:.0f} s warm-up, "
        f"wrk -t1 -c{args.connections}, idle connections {args.idle_connections}",
        flush=True,
    )
    backend = start_targets(bench)
    measure_idle(bench)
    measure_throughput(bench, backend)

    summaries = summarize({t.name: (t.cpu_of, bench.samples[t.name]) for t in bench.targets})
    print("\nthroughput and CPU (medians over reps; 'CPU of' = whose CPU is charged)")
    print(format_table(summaries))
    n = args.idle_connections
    print(f"\nidle keep-alive connections (N={n}, one request each, RSS of the proxy's processes)")
    print(format_idle_table(bench.idle))
    logs = _access_log_bytes(bench)
    print("\naccess log bytes written: " + ", ".join(f"{k} {v:,}" for k, v in logs.items()))
    for name, reason in bench.skipped.items():
        print(f"SKIPPED {name}: {reason.splitlines()[0]}")

    noisy = [
        f"{name} rep {r['rep']}"
        for name, reps in bench.runs.items()
        for r in reps
        if r.get("proxy_cpu_other_s", 0.0) > NOISY_OTHER * r.get("duration_s", math.inf)
    ]
    if noisy:
        print(
            f"WARNING: CPU {PROXY_CPU} did more than {NOISY_OTHER:.0%} other work during "
            f"{', '.join(noisy)}: the machine was not quiet, rerun when it is"
        )

    _route_table_cost(args.quick)
    if args.auth:
        _token_cost(args.quick)

    errors = sum(s.errors for s in summaries) + sum(r.failed for r in bench.idle.values())
    if errors:
        print(f"\nFAIL: {errors} errors (non-2xx/3xx, socket errors or failed idle connections)")
    if args.json:
        write_json(args.json, bench, facts, summaries)
    return 1 if errors else 0


def _route_table_cost(quick: bool) -> None:
    """Route-table lookup cost at 10 / 1k / 100k routes (bench/bench_route_table.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_route_table.py")
    print("\nroute-table lookup cost (python bench/bench_route_table.py)")
    cmd = [sys.executable, script] + (["--lookups", "20000"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    print(proc.stdout.rstrip() or proc.stderr.rstrip())


def _token_cost(quick: bool) -> None:
    """In-process cost of the auth layer's token check (bench/bench_auth.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_auth.py")
    print("\ntoken verification cost (python bench/bench_auth.py)")
    cmd = [sys.executable, script] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    print(proc.stdout.rstrip() or proc.stderr.rstrip())


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: the proxy gets CPU 0, wrk and the backend CPU 1")
    # SIGTERM (a CI timeout, kill) must still run the cleanup in `finally`.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The harness shares the load CPU with wrk and the backend, never the proxy's CPU.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {LOAD_CPU})
    raise_nofile_limit(NOFILE)
    ensure_tools(with_haproxy=args.with_haproxy)
    bench = Bench(args=args, workdir=Path(tempfile.mkdtemp(prefix="kedge-bench-")))
    try:
        return run(bench)
    except RuntimeError as exc:
        # A server that would not start: its own output is in the message.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for proc in reversed(bench.started):
            proc.stop()
        if bench.jwks is not None:
            bench.jwks.stop()
        if args.keep_temp:
            print(f"kept {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

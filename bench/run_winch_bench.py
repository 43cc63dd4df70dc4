"""Winch benchmark: the laptop-side hop (winch -> TLS edge) vs nginx doing the same, one run.

Usage: python bench/run_winch_bench.py [--duration 10] [--reps 3] [--connections 64] [--quick]
       [--json FILE] [--keep-temp] [--winch-cmd CMD]

Same method as bench/run_proxy_bench.py (bench/README.md): wrk -t1 -c64 loads each target
with `Host: bench.ns.cluster-a.internal` (origin form, which winch accepts for a mapped name),
every path ends at the same one-worker nginx backend with its 100-byte body, and the figure
that matters is the CPU time per request of the process under test (user+system of its
process tree during the measured run / the requests wrk completed).

Targets, interleaved rep by rep after a 2 s warm-up each:
- direct:      wrk -> backend (the CPU column is the backend's);
- edge:        wrk -> kedge edge (plain HTTP/1.1, the 1,000-route table) -> backend: one
               kedge hop for reference, the edge on CPU 0 as in run_proxy_bench.py;
- winch+edge:  wrk -> winch (`python -m winch`, one route, a static `backend_auth` token)
               -> kedge edge (TLS, ALPN h2, one pooled connection) -> backend;
- nginx+nginx: wrk -> nginx "local proxy" (verified TLS to the edge, keep-alive pool, the
               same bearer token injected) -> nginx "edge" (TLS listener) -> backend.

Where things run: the process under test (winch, the local nginx, or the one-hop kedge edge)
is alone on CPU 0 (PROXY_CPU); the second-hop edges (kedge or nginx, each one process/worker),
wrk, the backend and this harness share CPU 1 (LOAD_CPU). The edges' CPU per request is
measured and printed too, but they compete with wrk for their CPU, so compare rps only where
the CPU 0 process is the bottleneck (`proxy busy` near 100%).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.idle import raise_nofile_limit
from lib.procs import (
    ManagedProcess,
    cpu_busy_seconds,
    free_port,
    http_get,
    start_process,
    tree_cpu_seconds,
    wait_http_ok,
    wait_port_open,
)
from lib.render import BODY
from lib.targets import LOAD_CPU, PROXY_CPU, start_nginx, start_nginx_backend
from lib.tools import ensure_tools, machine_facts
from lib.winch_setup import (
    EDGE_SERVER_NAME,
    WINCH_HOST,
    HopSample,
    format_ratios,
    format_winch_table,
    kedge_edge_config,
    nginx_edge_conf,
    nginx_local_conf,
    summarize_hops,
    winch_yaml,
)
from lib.wrk import WrkError, run_wrk, wrk_command

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 2.0
NOFILE = 65536
READY_TIMEOUT_S = 20.0


@dataclass
class HopTarget:
    """Something wrk loads, and the processes on its path: role -> process."""

    name: str
    port: int
    roles: dict[str, ManagedProcess]


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    started: list[ManagedProcess] = field(default_factory=list)
    targets: list[HopTarget] = field(default_factory=list)
    samples: dict[str, list[HopSample]] = field(default_factory=dict)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--reps", type=int, default=3, help="measured runs per target")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (-c)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 rep of 3 s")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    p.add_argument("--keep-temp", action="store_true", help="keep configs and logs for reading")
    p.add_argument(
        "--winch-cmd",
        default=f"{shlex.quote(sys.executable)} -m winch",
        help="run this instead of `python -m winch` (the harness appends --config ...)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration = 1, 3.0
    if args.reps < 1 or args.duration < 1 or args.connections < 1:
        p.error("--reps, --duration and --connections must be at least 1")
    return args


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _stop_on_failure(proc: ManagedProcess, exc: RuntimeError) -> RuntimeError:
    tail = proc.log_tail()
    proc.stop()
    return RuntimeError(f"{exc}\n{tail}")


def start_kedge_edge(
    bench: Bench, name: str, cpu: int, backend_port: int, tls_pem: str | None
) -> tuple[ManagedProcess, int]:
    """`python -m kedge serve` pinned to `cpu`, once its /readyz answers 200."""
    port, admin_port = free_port(), free_port()
    prefix = bench.workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "kedge.yaml"
    data = kedge_edge_config(
        listen_port=port, admin_port=admin_port, backend_port=backend_port, tls_pem=tls_pem
    )
    config.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "kedge", "serve"]
    cmd += ["--config", str(config), "--access-log", str(prefix / "access.log")]
    proc = start_process(name, cmd, log_path=prefix / "stdout.log", cwd=REPO_ROOT, env=_env())
    bench.started.append(proc)
    try:
        wait_http_ok(f"http://127.0.0.1:{admin_port}/readyz", timeout_s=READY_TIMEOUT_S, proc=proc)
        wait_port_open(port, timeout_s=READY_TIMEOUT_S, proc=proc)
    except RuntimeError as exc:
        raise _stop_on_failure(proc, exc) from exc
    return proc, port


def start_winch(bench: Bench, edge_port: int, ca_file: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    prefix = bench.workdir / "winch"
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "winch.yaml"
    config.write_text(winch_yaml(edge_port=edge_port, ca_file=ca_file))
    cmd = ["taskset", "-c", str(PROXY_CPU), *shlex.split(bench.args.winch_cmd)]
    cmd += ["--config", str(config), "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    proc = start_process("winch", cmd, log_path=prefix / "stdout.log", cwd=REPO_ROOT, env=_env())
    bench.started.append(proc)
    try:
        wait_port_open(port, timeout_s=READY_TIMEOUT_S, proc=proc)
    except RuntimeError as exc:
        raise _stop_on_failure(proc, exc) from exc
    return proc, port


def start_nginx_pair(
    bench: Bench, backend_port: int, ca_file: str, tls_pem: str
) -> tuple[ManagedProcess, ManagedProcess, int]:
    """The nginx edge (LOAD_CPU), then the nginx local proxy (PROXY_CPU) in front of it."""
    root = os.geteuid() == 0
    edge_port, local_port = free_port(), free_port()
    edge_prefix = bench.workdir / "nginx-edge"
    edge_text = nginx_edge_conf(
        prefix=str(edge_prefix),
        port=edge_port,
        backend_port=backend_port,
        tls_pem=tls_pem,
        access_log=str(edge_prefix / "access.log"),
        is_root=root,
    )
    edge = start_nginx("nginx-edge", edge_text, edge_prefix, LOAD_CPU, edge_port)
    bench.started.append(edge)
    local_prefix = bench.workdir / "nginx-local"
    local_text = nginx_local_conf(
        prefix=str(local_prefix),
        port=local_port,
        edge_port=edge_port,
        ca_file=ca_file,
        is_root=root,
    )
    local = start_nginx("nginx-local", local_text, local_prefix, PROXY_CPU, local_port)
    bench.started.append(local)
    return local, edge, local_port


def start_targets(bench: Bench) -> None:
    ca = trustme.CA()
    ca_file = str(bench.workdir / "ca.pem")
    tls_pem = str(bench.workdir / "edge.pem")
    ca.cert_pem.write_to_path(ca_file)
    ca.issue_cert(EDGE_SERVER_NAME).private_key_and_cert_chain_pem.write_to_path(tls_pem)

    backend = start_nginx_backend(bench.workdir)
    bench.started.append(backend.process)
    be = backend.process
    bench.targets.append(HopTarget("direct", backend.port, {"backend": be}))

    ref, ref_port = start_kedge_edge(bench, "kedge-edge", PROXY_CPU, backend.port, None)
    bench.targets.append(HopTarget("edge", ref_port, {"proxy": ref, "backend": be}))

    tls_edge, tls_port = start_kedge_edge(bench, "kedge-tls-edge", LOAD_CPU, backend.port, tls_pem)
    winch, winch_port = start_winch(bench, tls_port, ca_file)
    roles = {"proxy": winch, "edge": tls_edge, "backend": be}
    bench.targets.append(HopTarget("winch+edge", winch_port, roles))

    local, nginx_edge, local_port = start_nginx_pair(bench, backend.port, ca_file, tls_pem)
    roles = {"proxy": local, "edge": nginx_edge, "backend": be}
    bench.targets.append(HopTarget("nginx+nginx", local_port, roles))

    for target in bench.targets:
        status, body = http_get(f"http://127.0.0.1:{target.port}/", host=WINCH_HOST, timeout_s=10)
        if status != 200 or body != BODY.encode():
            logs = "\n".join(p.log_tail() for p in target.roles.values())
            raise RuntimeError(
                f"{target.name}: expected 200 + the bench body, got {status} {body[:300]!r}\n{logs}"
            )


def measured_run(bench: Bench, target: HopTarget, rep: int) -> None:
    args = bench.args

    def wrk(duration_s: float) -> list[str]:
        return wrk_command(
            port=target.port,
            host=WINCH_HOST,
            duration_s=duration_s,
            connections=args.connections,
            threads=1,
            cpu=LOAD_CPU,
        )

    try:
        run_wrk(wrk(WARMUP_S), duration_s=WARMUP_S)
        cpu0 = {role: tree_cpu_seconds(p.pid) for role, p in target.roles.items()}
        busy0, _ = cpu_busy_seconds(PROXY_CPU)
        result, _ = run_wrk(wrk(args.duration), duration_s=args.duration)
        cpu = {role: tree_cpu_seconds(p.pid) - cpu0[role] for role, p in target.roles.items()}
        busy1, _ = cpu_busy_seconds(PROXY_CPU)
    except WrkError as exc:
        print(f"  rep {rep}/{args.reps} {target.name:11} wrk failed: {exc}", flush=True)
        bench.runs[target.name].append({"rep": rep, "error": str(exc)})
        nan = math.nan
        bench.samples[target.name].append(HopSample(nan, 0, nan, nan, 1, 0.0, {}))
        return
    sample = HopSample(
        rps=result.rps,
        requests=result.requests,
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        errors=result.errors,
        duration_s=result.duration_s,
        cpu_s=cpu,
    )
    bench.samples[target.name].append(sample)
    # Work on CPU 0 that is not the process under test: kernel softirq for its sockets, or noise.
    other = (busy1 - busy0) - cpu["proxy"] if "proxy" in cpu else math.nan
    bench.runs[target.name].append(
        {"rep": rep, **asdict(result), "errors": result.errors, "cpu_s": cpu, "cpu0_other_s": other}
    )
    noise = "" if math.isnan(other) else f"  CPU {PROXY_CPU} other {other / result.duration_s:.0%}"
    per_req = "  ".join(
        f"{role} {secs * 1e6 / max(result.requests, 1):.1f} us/req ({secs / result.duration_s:.0%})"
        for role, secs in cpu.items()
    )
    print(
        f"  rep {rep}/{args.reps} {target.name:11} {result.rps:>8,.0f} rps  "
        f"p50 {result.p50_us / 1000:.3f} ms  p99 {result.p99_us / 1000:.3f} ms  {per_req}  "
        f"errors {result.errors}{noise}",
        flush=True,
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def run(bench: Bench) -> int:
    args = bench.args
    facts = machine_facts(with_haproxy=False)
    print("machine:")
    for key, value in facts.items():
        print(f"  {key:10} {value}")
    print(
        f"params: {args.reps} x {args.duration:.0f} s per target after a {WARMUP_S:.0f} s warm-up, "
        f"wrk -t1 -c{args.connections}, Host: {WINCH_HOST}; CPU {PROXY_CPU}: winch / nginx "
        f"local / one-hop kedge; CPU {LOAD_CPU}: TLS edges, wrk, backend",
        flush=True,
    )
    start_targets(bench)
    for target in bench.targets:
        bench.samples[target.name], bench.runs[target.name] = [], []
    for rep in range(1, args.reps + 1):
        for target in bench.targets:
            measured_run(bench, target, rep)
    summaries = summarize_hops(bench.samples)
    print("\nthroughput and CPU per request (medians over reps; proxy = the CPU 0 process,")
    print("edge = the second hop on CPU 1, backend = the nginx backend)")
    print(format_winch_table(summaries))
    print("\nratios (medians)")
    for line in format_ratios(summaries):
        print("  " + line)
    errors = sum(s.errors for s in summaries)
    if errors:
        print(f"\nFAIL: {errors} errors (non-2xx/3xx or socket errors)")
    if args.json:
        doc = {
            "facts": facts,
            "params": {
                "duration_s": args.duration,
                "reps": args.reps,
                "connections": args.connections,
                "warmup_s": WARMUP_S,
            },
            "runs": bench.runs,
            "summary": [asdict(s) for s in summaries],
        }
        args.json.write_text(json.dumps(_finite(doc), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors else 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: the proxy under test gets CPU 0, the rest CPU 1")
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {LOAD_CPU})
    raise_nofile_limit(NOFILE)
    ensure_tools(with_haproxy=False)
    bench = Bench(args=args, workdir=Path(tempfile.mkdtemp(prefix="kedge-winch-bench-")))
    started = time.monotonic()
    try:
        return run(bench)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for proc in reversed(bench.started):
            proc.stop()
        if args.keep_temp:
            print(f"kept {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
        print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

"""Locality bench (issue 6, evidence 2-4): local zone, cluster failover, the nearer cluster.

Usage: python bench/run_locality_bench.py [--quick] [--keep-temp] [--scenarios 2,3,4]
(--help lists all.) Real processes on loopback: nginx backends, the delay proxy
(bench/lib/delay_proxy.py) and, for scenario 3, a second kedge as cluster b's edge. The
kedge under test is alone on CPU 0; wrk, backends, proxies and the remote edge share CPU 1.
Who served each request, when and with which status comes from kedge's access log.
Configs and tables: bench/lib/locality_scenarios.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.delay_proxy import listening_ports
from lib.locality_scenarios import (
    LogEntry,
    failover_config,
    failover_summary,
    format_failover,
    format_nearer,
    format_zone,
    median_ms,
    nearer_config,
    per_second,
    read_entries,
    remote_edge_config,
    tally,
    zone_config,
)
from lib.procs import ManagedProcess, free_port, http_get, start_process, wait_http_ok
from lib.render import BODY, HIT_HOST, nginx_backend_conf, template_dir
from lib.targets import LOAD_CPU, PROXY_CPU, start_nginx
from lib.tools import ensure_tools, machine_facts
from lib.wrk import WrkError, parse_wrk_output, run_wrk, wrk_command
from run_balancing_bench import DELAY_PROXY, LOG_SETTLE_S, REPO_ROOT, WARMUP_S

__all__ = ["main"]

SECTION = "## 8. Locality and failover (issue 6, evidence 2-4)"
SCENARIOS = ("2", "3", "4")


@dataclass(frozen=True)
class Nginx:
    """One backend, with what it takes to start it again on the same port."""

    name: str
    port: int
    prefix: Path
    conf: str

    @property
    def key(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Edge:
    port: int
    process: ManagedProcess
    access_log: Path


class Run:
    """One scenario's processes (stopped at its end) and the options."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.started: list[ManagedProcess] = []

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()

    # -- processes -----------------------------------------------------------------------
    def nginx(self, name: str) -> Nginx:
        prefix, port = self.workdir / name, free_port()
        template = (template_dir() / "nginx_backend.conf.tmpl").read_text()
        conf = nginx_backend_conf(
            template, prefix=str(prefix), port=port, is_root=os.geteuid() == 0
        )
        backend = Nginx(name, port, prefix, conf)
        self.start_nginx(backend)
        return backend

    def start_nginx(self, backend: Nginx) -> ManagedProcess:
        proc = start_nginx(backend.name, backend.conf, backend.prefix, LOAD_CPU, backend.port)
        self.started.append(proc)
        return proc

    def delay_proxies(self, specs: Sequence[tuple[int, float]]) -> list[int]:
        """One delay-proxy process, a proxy per (target port, delay ms); their ports."""
        cmd = ["taskset", "-c", str(LOAD_CPU), sys.executable, str(DELAY_PROXY)]
        cmd += [f"0:{port}:{delay:g}" for port, delay in specs]
        proc = start_process("delay-proxies", cmd, log_path=self.workdir / "delay-proxies.log")
        self.started.append(proc)
        deadline = time.monotonic() + 10.0
        while len(ports := listening_ports(proc.log_path.read_text())) < len(specs):
            if not proc.is_running() or time.monotonic() > deadline:
                raise RuntimeError(f"the delay proxies did not start:\n{proc.log_tail()}")
            time.sleep(0.05)
        return [ports[port] for port, _ in specs]

    def kedge(self, name: str, cpu: int, config_for: Callable[[int, int], dict[str, Any]]) -> Edge:
        """`python -m kedge serve` pinned to `cpu`, ready and answering HIT_HOST with BODY."""
        prefix, port, admin = self.workdir / name, free_port(), free_port()
        prefix.mkdir()
        config, log = prefix / "kedge.yaml", prefix / "access.log"
        config.write_text(yaml.safe_dump(config_for(port, admin), sort_keys=False))
        path = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))
        cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "kedge", "serve"]
        cmd += ["--config", str(config), "--access-log", str(log)]
        proc = start_process(
            name, cmd, log_path=prefix / "out.log", cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": path},
        )  # fmt: skip
        self.started.append(proc)
        try:
            wait_http_ok(f"http://127.0.0.1:{admin}/readyz", timeout_s=20.0, proc=proc)
            status, body = http_get(f"http://127.0.0.1:{port}/", host=HIT_HOST, timeout_s=5.0)
        except (RuntimeError, OSError) as exc:
            raise RuntimeError(f"{name} did not serve: {exc}\n{proc.log_tail()}") from exc
        if status != 200 or body != BODY.encode():
            raise RuntimeError(f"{name}: first request got {status}, not 200 + the bench body")
        return Edge(port, proc, log)

    # -- load ----------------------------------------------------------------------------
    def wrk(self, edge: Edge, duration_s: float) -> list[str]:
        return wrk_command(
            port=edge.port, host=HIT_HOST, duration_s=duration_s,
            connections=self.args.connections, threads=1, cpu=LOAD_CPU,
        )  # fmt: skip

    def measured(self, edge: Edge, duration_s: float) -> tuple[list[LogEntry], int, float]:
        """Warm-up (thrown away), then a run: its log entries, wrk's errors, and its rps."""
        run_wrk(self.wrk(edge, WARMUP_S), duration_s=WARMUP_S)
        time.sleep(LOG_SETTLE_S)
        offset = edge.access_log.stat().st_size
        result, _ = run_wrk(self.wrk(edge, duration_s), duration_s=duration_s)
        return self.entries_since(edge, offset), result.errors, result.rps

    def entries_since(self, edge: Edge, offset: int) -> list[LogEntry]:
        time.sleep(LOG_SETTLE_S)  # kedge flushes its access log every 100 ms
        with edge.access_log.open("rb") as f:
            f.seek(offset)
            return read_entries(f.read())


# -- scenarios -------------------------------------------------------------------------------
def zone_scenario(run: Run, command: str) -> tuple[str, bool]:
    """Evidence 2: 5 endpoints in zone a, 5 in zone b, the edge in zone a."""
    a = [run.nginx(f"zone-a-{i}") for i in range(5)]
    b = [run.nginx(f"zone-b-{i}") for i in range(5)]
    edge = run.kedge(
        "kedge-zone", PROXY_CPU,
        lambda port, admin: zone_config(
            listen_port=port, admin_port=admin,
            zone_a=[n.port for n in a], zone_b=[n.port for n in b],
        ),
    )  # fmt: skip
    entries, errors, rps = run.measured(edge, run.args.duration)
    groups = {n.key: "zone a" for n in a} | {n.key: "zone b" for n in b}
    counts = tally(entries, groups)
    header = (
        f"### Evidence 2: a healthy local zone keeps its traffic\n\n`{command}`: kedge with "
        "`locality: {zone: a}`, one static backend (`p2c_ewma`) of 10 nginx endpoints, 5 "
        f"labelled `zone: a` and 5 `zone: b`; wrk -t1 -c{run.args.connections} for "
        f"{run.args.duration:g} s after a {WARMUP_S:g} s warm-up ({rps:,.0f} rps); who served "
        "each request from kedge's access log."
    )
    ok = counts["zone a"] >= 0.99 * len(entries) and not errors and not counts["failed"]
    return format_zone(header, counts, errors), ok


def _kill(proc: ManagedProcess) -> None:
    """SIGKILL the whole nginx (master and worker): a crash, not a graceful stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.stop()


def failover_scenario(run: Run, command: str) -> tuple[str, bool]:
    """Evidence 3: cluster a's endpoints die under load and come back; cluster b's edge."""
    args = run.args
    local = [run.nginx(f"cluster-a-{i}") for i in range(args.local_endpoints)]
    far = [run.nginx(f"cluster-b-{i}") for i in range(2)]
    remote = run.kedge(
        "kedge-cluster-b", LOAD_CPU,
        lambda port, admin: remote_edge_config(
            listen_port=port, admin_port=admin, ports=[n.port for n in far]
        ),
    )  # fmt: skip
    edge = run.kedge(
        "kedge-cluster-a", PROXY_CPU,
        lambda port, admin: failover_config(
            listen_port=port, admin_port=admin, local=[n.port for n in local],
            remote_edge_port=remote.port, interval_s=args.interval, attempts=args.attempts,
        ),
    )  # fmt: skip
    procs = {n.name: p for n in local for p in run.started if p.name == n.name}
    run_wrk(run.wrk(edge, WARMUP_S), duration_s=WARMUP_S)
    time.sleep(LOG_SETTLE_S)
    offset = edge.access_log.stat().st_size
    wrk = subprocess.Popen(
        run.wrk(edge, args.failover_duration), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    start = time.time()
    try:
        time.sleep(max(0.0, start + args.kill_at - time.time()))
        kill_at = time.time()
        for n in local:
            _kill(procs[n.name])
            run.started.remove(procs[n.name])
        time.sleep(max(0.0, start + args.restart_at - time.time()))
        restart_at = time.time()
        for n in local:
            run.start_nginx(n)
        up_ms = (time.time() - restart_at) * 1000
        out, err = wrk.communicate(timeout=args.failover_duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    try:
        result = parse_wrk_output(out)
    except WrkError:
        raise RuntimeError(f"wrk failed: {err.strip()}") from None
    socket_errors = result.errors - result.non_2xx_3xx
    entries = run.entries_since(edge, offset)
    keys = {n.key for n in local}
    summary = failover_summary(entries, keys, kill_at, restart_at)
    header = (
        f"### Evidence 3: the local cluster dies under load and comes back\n\n`{command}`: "
        f"kedge with `locality: {{cluster: a, zone: a}}`, one backend (`p2c_ewma`) of "
        f"{len(local)} nginx endpoints labelled cluster a, plus `remote_clusters: [b]`: a "
        "second kedge (cluster b's edge, on CPU 1) with 2 nginx endpoints of its own; "
        f"`health_check: {{http: {{path: /}}, interval: {args.interval:g}s, "
        "healthy_threshold: 1, unhealthy_threshold: 1}`, "
        f"`retries: {{attempts: {args.attempts}}}`, outlier detection at its defaults. "
        f"wrk -t1 -c{args.connections} for {args.failover_duration:g} s; every local nginx "
        f"SIGKILLed at t={args.kill_at:g} s and started again at t={args.restart_at:g} s "
        f"(listening {up_ms:.0f} ms later); from kedge's access log."
    )
    text = format_failover(
        header, summary, per_second(entries, keys, start),
        wrk_non_2xx=result.non_2xx_3xx, wrk_socket_errors=socket_errors, interval_s=args.interval,
    )  # fmt: skip
    return text, summary.failed + result.errors == 0


def nearer_scenario(run: Run, command: str) -> tuple[str, bool]:
    """Evidence 4: two remote clusters of the same priority, +2 ms and +20 ms away."""
    args = run.args
    near_nginx, far_nginx = run.nginx("near"), run.nginx("far")
    near, far = run.delay_proxies([(near_nginx.port, args.near_ms), (far_nginx.port, args.far_ms)])
    parked = free_port()  # nothing listens there (see nearer_config)
    edge = run.kedge(
        "kedge-nearer", PROXY_CPU,
        lambda port, admin: nearer_config(
            listen_port=port, admin_port=admin, near_port=near, far_port=far, parked_port=parked
        ),
    )  # fmt: skip
    entries, errors, rps = run.measured(edge, args.duration)
    groups = {f"127.0.0.1:{near}": "near", f"127.0.0.1:{far}": "far"}
    header = (
        f"### Evidence 4: of two remote clusters, the nearer one\n\n`{command}`: kedge with "
        "`locality: {cluster: a}`, one backend (`p2c_ewma`) served by two `remote_clusters` "
        f"of priority 0: near = a delay proxy (+{args.near_ms:g} ms) in front of an nginx, "
        f"far = a delay proxy (+{args.far_ms:g} ms) in front of another (the backend's one "
        "static endpoint, required by the config, is a closed port labelled with an unlisted "
        "cluster: the farthest tier, which gets nothing while a remote cluster is up); "
        f"wrk -t1 -c{args.connections} for {args.duration:g} s after a {WARMUP_S:g} s warm-up "
        f"({rps:,.0f} rps); p50 is kedge's `duration_ms`."
    )
    counts = tally(entries, groups)
    ok = counts["near"] > counts["far"] and not errors and not counts["failed"]
    return format_nearer(header, counts, median_ms(entries, groups), errors), ok


# -- the command -----------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: 2,3,4")
    p.add_argument("--connections", type=int, default=8, help="wrk connections (-c)")
    p.add_argument("--duration", type=float, default=20.0, help="s per run of scenarios 2, 4")
    p.add_argument("--failover-duration", type=float, default=20.0, help="scenario 3's run, s")
    p.add_argument("--kill-at", type=float, default=5.0, help="scenario 3: kill local, s")
    p.add_argument("--restart-at", type=float, default=15.0, help="scenario 3: restart, s")
    p.add_argument("--interval", type=float, default=1.0, help="scenario 3: health interval, s")
    p.add_argument("--attempts", type=int, default=3, help="scenario 3: retries.attempts")
    p.add_argument("--local-endpoints", type=int, default=5, help="scenario 3: cluster a's")
    p.add_argument("--near-ms", type=float, default=2.0, help="scenario 4: near cluster delay")
    p.add_argument("--far-ms", type=float, default=20.0, help="scenario 4: far cluster delay")
    p.add_argument("--quick", action="store_true", help="smoke test: 5 s runs, 10 s failover")
    p.add_argument("--keep-temp", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.failover_duration, args.kill_at, args.restart_at = 5.0, 10.0, 3.0, 7.0
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if unknown := [x for x in args.scenarios if x not in SCENARIOS]:
        p.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    if not 0 < args.kill_at < args.restart_at < args.failover_duration:
        p.error("need 0 < --kill-at < --restart-at < --failover-duration")
    if min(args.duration, args.connections, args.attempts, args.local_endpoints) < 1:
        p.error("--duration, --connections, --attempts and --local-endpoints must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: kedge gets CPU 0; everything else CPU 1")

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # the cleanup in `finally` must still run

    signal.signal(signal.SIGTERM, _exit)
    os.sched_setaffinity(0, {LOAD_CPU})  # never on kedge's CPU
    ensure_tools(with_haproxy=False)
    workdir = Path(tempfile.mkdtemp(prefix="kedge-locality-"))
    command = shlex.join(["python", "bench/run_locality_bench.py", *argv])
    scenarios = {"2": zone_scenario, "3": failover_scenario, "4": nearer_scenario}
    sections, failed = [], []
    facts = machine_facts(with_haproxy=False)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    try:
        for name in args.scenarios:
            run = Run(args, workdir / f"scenario-{name}")
            run.workdir.mkdir()
            print(f"scenario {name} ...", flush=True)
            try:
                text, ok = scenarios[name](run, command)
            except (RuntimeError, WrkError) as exc:
                text, ok = f"### Evidence {name}: did not run\n\n{exc}", False
            finally:
                run.stop_all()
            print(text + "\n", flush=True)
            sections.append(text)
            if not ok:
                failed.append(name)
        print("\n" + "\n\n".join([SECTION, f"`{command}`", *sections]))
    finally:
        if args.keep_temp:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(f"FAIL: scenario(s) {', '.join(failed)} missed their goal or had errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

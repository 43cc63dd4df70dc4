"""HTTP/2 proxy benchmark: h2load (h2c, prior knowledge) against kedge, nginx and direct.

Usage: python bench/run_h2_bench.py [--duration 10] [--reps 3] [--clients 16] [--streams 4]
       [--quick] [--grpc]

Same method as bench/run_proxy_bench.py (bench/README.md): the proxy under test is pinned
to CPU 0, h2load and the backend share CPU 1, and the figure that matters is the proxy's
CPU time per request (user+system of its process tree over the measured run, divided by
the requests h2load completed), which does not depend on how fast the load generator is.

Targets, all serving the same 100-byte body from one nginx backend over HTTP/1.1:
- direct: the backend itself, with an `http2` listener (what HTTP/2 costs nginx alone);
- nginx:  one nginx worker accepting h2c and proxying with pooled keep-alive HTTP/1.1;
- kedge:  the edge accepting h2c (prior knowledge) and proxying the same way.

With `--grpc`: unary gRPC calls (h2load posting one length-prefixed message with
`content-type: application/grpc` and `te: trailers`) to a grpc.aio backend over h2c, through
nginx `grpc_pass` and through kedge (`protocol: h2c`). There is no "direct" row: the backend
is Python and would be charged for itself.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.procs import ManagedProcess, free_port, start_process, tree_cpu_seconds, wait_port_open
from lib.render import HIT_HOST, nginx_backend_conf, nginx_proxy_conf, template_dir
from lib.targets import LOAD_CPU, PROXY_CPU, Target, start_kedge, start_nginx

REPO_ROOT = Path(__file__).resolve().parent.parent
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


@dataclass
class Sample:
    requests: int
    seconds: float
    cpu_seconds: float

    @property
    def us_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _h2_listener(conf: str) -> str:
    """Serve HTTP/2 (h2c) on the template's listener. nginx closes an HTTP/2 connection
    after `keepalive_requests` (1000) requests and h2load does not reconnect, so that limit
    is lifted here: kedge has no such per-connection cap on HTTP/2."""
    conf = conf.replace("backlog=4096;", "backlog=4096 http2;")
    return conf.replace("http {", "http {\n    keepalive_requests 100000000;", 1)


def start_backend(workdir: Path, *, http2: bool) -> Target:
    port = free_port()
    prefix = workdir / ("backend-h2" if http2 else "backend")
    template = (template_dir() / "nginx_backend.conf.tmpl").read_text()
    text = nginx_backend_conf(template, prefix=str(prefix), port=port, is_root=os.geteuid() == 0)
    if http2:
        text = _h2_listener(text)
    cpu = PROXY_CPU if http2 else LOAD_CPU  # the h2 backend is itself the "direct" target
    proc = start_nginx(prefix.name, text, prefix, cpu, port)
    return Target(name="direct", port=port, process=proc, cpu_of="proxy")


def start_nginx_h2_proxy(workdir: Path, backend_port: int) -> Target:
    port = free_port()
    prefix = workdir / "nginx"
    template = (template_dir() / "nginx_proxy.conf.tmpl").read_text()
    text = nginx_proxy_conf(
        template,
        prefix=str(prefix),
        port=port,
        backend_port=backend_port,
        access_log=str(prefix / "access.log"),
        is_root=os.geteuid() == 0,
    )
    text = _h2_listener(text)
    proc = start_nginx("nginx", text, prefix, PROXY_CPU, port)
    return Target(name="nginx", port=port, process=proc, cpu_of="proxy")


GRPC_PATH = "/kedge.e2e.Greeter/SayHello"
# One gRPC message (uncompressed, 7 bytes): HelloRequest{name: "bench"} as protobuf.
GRPC_BODY = b"\x00\x00\x00\x00\x07\x0a\x05bench"


def h2load(
    port: int, seconds: float, clients: int, streams: int, grpc_body: Path | None = None
) -> tuple[int, float]:
    cmd = ["taskset", "-c", str(LOAD_CPU), "h2load", "-c", str(clients), "-m", str(streams)]
    cmd += ["-t", "1", "-D", f"{seconds:g}", "-H", f":authority: {HIT_HOST}"]
    if grpc_body is not None:
        cmd += ["-d", str(grpc_body), "-H", "content-type: application/grpc"]
        cmd += ["-H", "te: trailers", f"http://127.0.0.1:{port}{GRPC_PATH}"]
    else:
        cmd += [f"http://127.0.0.1:{port}/"]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    elapsed = time.monotonic() - started
    match = _REQUESTS.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-800:]}{out.stderr}")
    _, _, done, succeeded = map(int, match.groups())
    # With -D, the requests still in flight when time is up are cut and count as failed
    # (at most clients x streams of them); anything beyond that is a real failure.
    if done == 0 or done - succeeded > clients * streams:
        raise RuntimeError(f"h2load: {done - succeeded} of {done} requests failed")
    return succeeded, elapsed


def start_grpc_backend(workdir: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    script = Path(__file__).resolve().parent / "lib" / "grpc_backend.py"
    cmd = ["taskset", "-c", str(LOAD_CPU), sys.executable, str(script), str(port)]
    proc = start_process("grpc-backend", cmd, log_path=workdir / "grpc-backend.log")
    wait_port_open(port, timeout_s=10.0, proc=proc)
    return proc, port


def start_nginx_grpc_proxy(workdir: Path, backend_port: int) -> Target:
    port = free_port()
    prefix = workdir / "nginx-grpc"
    text = f"""
daemon off; master_process on; worker_processes 1; pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 8192; }}
http {{
    keepalive_requests 100000000;
    access_log {prefix}/access.log combined buffer=64k;
    client_body_temp_path {prefix}/client_body_temp;
    upstream grpc_bench {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} http2 backlog=4096;
        location / {{ grpc_pass grpc://grpc_bench; }}
    }}
}}
"""
    proc = start_nginx("nginx", text, prefix, PROXY_CPU, port)
    return Target(name="nginx", port=port, process=proc, cpu_of="proxy")


def start_kedge_grpc(workdir: Path, backend_port: int) -> Target:
    port, admin_port = free_port(), free_port()
    prefix = workdir / "kedge-grpc"
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "kedge.yaml"
    config.write_text(f"""
listeners: [{{name: http, address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin_port}"}}
backends:
  - name: grpc
    protocol: h2c
    resolver: {{static: {{endpoints: ["127.0.0.1:{backend_port}"]}}}}
routes:
  - backend: grpc
    match: {{host: {HIT_HOST}}}
""")
    cmd = ["taskset", "-c", str(PROXY_CPU), sys.executable, "-m", "kedge", "serve"]
    cmd += ["--config", str(config), "--access-log", str(prefix / "access.log")]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = start_process("kedge", cmd, log_path=prefix / "stdout.log", cwd=REPO_ROOT, env=env)
    wait_port_open(port, timeout_s=20.0, proc=proc)
    return Target(name="kedge", port=port, process=proc, cpu_of="proxy")


def measure(target: Target, args: argparse.Namespace) -> Sample:
    body = args.grpc_body
    h2load(target.port, 1.0 if args.quick else 2.0, args.clients, args.streams, body)  # warm-up
    before = tree_cpu_seconds(target.process.pid)
    requests, seconds = h2load(target.port, args.duration, args.clients, args.streams, body)
    cpu = tree_cpu_seconds(target.process.pid) - before
    return Sample(requests, seconds, cpu)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 s runs, one rep (smoke test)")
    p.add_argument("--grpc", action="store_true", help="unary gRPC instead of plain GETs")
    args = p.parse_args(argv)
    args.grpc_body = None
    if args.quick:
        args.duration, args.reps = 2.0, 1
    started: list[ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="kedge-h2-bench-") as d:
        workdir = Path(d)
        try:
            if args.grpc:
                args.grpc_body = workdir / "message.bin"
                args.grpc_body.write_bytes(GRPC_BODY)
                grpc_backend, backend_port = start_grpc_backend(workdir)
                started.append(grpc_backend)
                targets = [start_nginx_grpc_proxy(workdir, backend_port)]
                targets.append(start_kedge_grpc(workdir, backend_port))
            else:
                backend = start_backend(workdir, http2=False)
                started.append(backend.process)
                targets = [start_backend(workdir, http2=True)]
                targets.append(start_nginx_h2_proxy(workdir, backend.port))
                targets.append(start_kedge(workdir, backend.port, REPO_ROOT))
            started += [t.process for t in targets]
            results: dict[str, list[Sample]] = {t.name: [] for t in targets}
            for rep in range(args.reps):
                for target in targets:
                    sample = measure(target, args)
                    results[target.name].append(sample)
                    print(
                        f"rep {rep + 1} {target.name:7} {sample.rps:9.0f} req/s "
                        f"{sample.us_per_request:7.1f} us CPU/request",
                        flush=True,
                    )
        finally:
            for proc in reversed(started):
                proc.stop()
    best = {name: min(s.us_per_request for s in samples) for name, samples in results.items()}
    rps = {name: max(s.rps for s in samples) for name, samples in results.items()}
    what = "gRPC unary" if args.grpc else "GET"
    print(f"\n{what}, h2load -c{args.clients} -m{args.streams}, {args.duration:g}s x {args.reps}: "
          "best CPU per request of the proxy process (CPU 0)")  # fmt: skip
    print(f"{'target':8} {'req/s':>9} {'us/req':>8} {'vs nginx':>9}")
    for name in results:
        ratio = best[name] / best["nginx"]
        print(f"{name:8} {rps[name]:9.0f} {best[name]:8.1f} {ratio:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

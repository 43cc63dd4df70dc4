"""CONNECT tunnel benchmark: bulk bytes through kedge's tunnel, HAProxy in TCP mode, direct.

Usage: python bench/run_tunnel_bench.py [--size-mb 256] [--downloads 4] [--reps 3] [--quick]

A tunnel's hot path is moving bytes: once a CONNECT is answered the edge only copies, so
the figure that matters is CPU per byte. curl downloads one large file from an nginx
backend (sendfile, 1 worker) `--downloads` times per rep, through:

- direct:  curl -> backend (what the bytes cost with no proxy: nothing is charged);
- haproxy: curl -> HAProxy (`mode tcp`, one thread, `option splice-auto`, 256 KiB buffers
           like the 256 KiB reads of kedge's event loop; the 16 KiB default costs it ~1.8x
           the CPU per GB) -> backend, the reference: an L4 relay doing exactly what a
           tunnel does after its 200;
- kedge:   curl -p -x http://edge (CONNECT bulk.test:PORT) -> kedge -> backend.

A second phase opens `--tunnels` short tunnels one after another (curl fetches 1 KiB
through each): the per-tunnel cost, where the CONNECT's parsing, routing and dialing show.

The process under test is pinned to CPU 0 (bench/lib/targets.PROXY_CPU); curl and the
backend share CPU 1. Reported: MB/s of the downloads, the proxy's CPU seconds per GB
(user+system of its process tree over the rep / bytes moved), and the ratios.
Results and the command go to bench/RESULTS.md (§11).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.procs import ManagedProcess, free_port, start_process, tree_cpu_seconds, wait_port_open
from lib.targets import LOAD_CPU, PROXY_CPU, start_kedge, start_nginx
from lib.tools import tool_path

REPO_ROOT = Path(__file__).resolve().parent.parent
TUNNEL_HOST = "bulk.test"


@dataclass
class TunnelSample:
    target: str
    tunnels: int
    cpu_s: float

    @property
    def cpu_us_per_tunnel(self) -> float:
        return self.cpu_s / self.tunnels * 1e6


@dataclass
class Sample:
    target: str
    seconds: float
    nbytes: int
    cpu_s: float

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_s / (self.nbytes / 1e9)


def backend_conf(prefix: Path, port: int, root: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {root}; }}
    }}
}}
"""


def haproxy_tcp_conf(port: int, backend_port: int, bufsize: int = 262144) -> str:
    return f"""global
    nbthread 1
    maxconn 1000
    tune.bufsize {bufsize}
defaults
    mode tcp
    option splice-auto  # kernel splice(2) between the sockets: HAProxy's fastest relay
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend tunnel_in
    bind 127.0.0.1:{port}
    default_backend bulk
backend bulk
    server b1 127.0.0.1:{backend_port}
"""


def download(url: str, extra: list[str], size: int) -> float:
    """Seconds for curl (on the load CPU) to fetch `url` completely; checks the size."""
    cmd = ["taskset", "-c", str(LOAD_CPU), tool_path("curl"), "-sS", "-o", "/dev/null"]
    cmd += ["-w", "%{size_download}", "--max-time", "120", *extra, url]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    if int(done.stdout.strip() or 0) != size:
        raise RuntimeError(f"{url}: got {done.stdout} bytes, expected {size}: {done.stderr}")
    return elapsed


def run(args: argparse.Namespace) -> tuple[list[Sample], list[TunnelSample]]:
    size = args.size_mb * 1024 * 1024
    samples: list[Sample] = []
    short: list[TunnelSample] = []
    with tempfile.TemporaryDirectory(prefix="kedge-tunnel-bench-") as tmp:
        work = Path(tmp)
        root = work / "www"
        root.mkdir()
        with (root / "big.bin").open("wb") as f:
            f.truncate(size)  # sparse zeros: the page cache serves it, no disk in the way
        (root / "small.bin").write_bytes(b"x" * 1024)
        procs: list[ManagedProcess] = []
        try:
            backend_port = free_port()
            prefix = work / "backend"
            prefix.mkdir()
            procs.append(
                start_nginx(
                    "backend",
                    backend_conf(prefix, backend_port, root),
                    prefix,
                    LOAD_CPU,
                    backend_port,
                )
            )
            hap_port = free_port()
            conf = work / "haproxy.cfg"
            conf.write_text(haproxy_tcp_conf(hap_port, backend_port))
            cmd = ["taskset", "-c", str(PROXY_CPU), tool_path("haproxy"), "-db", "-f", str(conf)]
            haproxy = start_process("haproxy", cmd, log_path=work / "haproxy.log")
            procs.append(haproxy)
            wait_port_open(hap_port, timeout_s=10, proc=haproxy)
            kedge = start_kedge(work, backend_port, REPO_ROOT, connect_host=TUNNEL_HOST)
            procs.append(kedge.process)
            plans = [
                ("direct", None, f"http://127.0.0.1:{backend_port}/big.bin", []),
                ("haproxy", haproxy, f"http://127.0.0.1:{hap_port}/big.bin", []),
                (
                    "kedge",
                    kedge.process,
                    f"http://{TUNNEL_HOST}:{backend_port}/big.bin",
                    ["-p", "-x", f"http://127.0.0.1:{kedge.port}"],
                ),
            ]
            for _name, _, url, extra in plans:  # warm-up: page cache, pooled connections
                download(url, extra, size)
            for _ in range(args.reps):
                for name, proc, url, extra in plans:
                    cpu0 = tree_cpu_seconds(proc.popen.pid) if proc else 0.0
                    seconds = sum(download(url, extra, size) for _ in range(args.downloads))
                    cpu = (tree_cpu_seconds(proc.popen.pid) - cpu0) if proc else 0.0
                    samples.append(Sample(name, seconds, size * args.downloads, cpu))
            for name, proc, url, extra in plans[1:]:
                small = url.replace("/big.bin", "/small.bin")
                cpu0 = tree_cpu_seconds(proc.popen.pid) if proc else 0.0
                for _ in range(args.tunnels):
                    download(small, extra, 1024)
                cpu = (tree_cpu_seconds(proc.popen.pid) - cpu0) if proc else 0.0
                short.append(TunnelSample(name, args.tunnels, cpu))
        finally:
            for proc in reversed(procs):
                proc.stop()
    return samples, short


def report(samples: list[Sample], short: list[TunnelSample]) -> None:
    names = list(dict.fromkeys(s.target for s in samples))
    rate = {n: statistics.median(s.mb_per_s for s in samples if s.target == n) for n in names}
    cpu = {n: statistics.median(s.cpu_s_per_gb for s in samples if s.target == n) for n in names}
    print(f"{'target':>8}  {'MB/s':>8}  {'proxy CPU s/GB':>15}")
    for n in names:
        cpu_text = f"{cpu[n]:15.3f}" if n != "direct" else f"{'-':>15}"
        print(f"{n:>8}  {rate[n]:8.0f}  {cpu_text}")
    print()
    print(f"ratios (medians of {len([s for s in samples if s.target == 'kedge'])} reps)")
    print(f"  CPU/GB  kedge / haproxy  {cpu['kedge'] / cpu['haproxy']:.2f}x")
    print(f"  MB/s    kedge / haproxy  {rate['kedge'] / rate['haproxy']:.2f}x")
    print(f"  MB/s    kedge / direct   {rate['kedge'] / rate['direct']:.2f}x")
    per = {t.target: t.cpu_us_per_tunnel for t in short}
    print()
    print(f"short tunnels ({short[0].tunnels} each, 1 KiB through each): proxy CPU per tunnel")
    for name, value in per.items():
        print(f"  {name:>8}  {value:8.0f} us")
    print(f"  kedge / haproxy  {per['kedge'] / per['haproxy']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--downloads", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tunnels", type=int, default=300, help="short tunnels per target")
    parser.add_argument("--quick", action="store_true", help="64 MB, 1 download, 1 rep")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb, args.downloads, args.reps, args.tunnels = 64, 1, 1, 30
    started = time.monotonic()
    report(*run(args))
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

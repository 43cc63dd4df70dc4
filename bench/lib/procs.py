"""Child processes of the bench: start in their own process group, measure, stop for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil  # type: ignore[import-untyped]  # no stubs installed

__all__ = [
    "ManagedProcess",
    "cpu_busy_seconds",
    "free_port",
    "http_get",
    "start_process",
    "tree_cpu_seconds",
    "tree_rss_bytes",
    "wait_http_ok",
    "wait_port_open",
]


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free now; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child in its own session, so killing its group also ends its workers."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        self.log_file.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after `grace_s`."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_s)
        # Workers may outlive their leader; the group id is the leader's pid either way.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        self.log_file.close()


def start_process(
    name: str,
    cmd: list[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    log_file = log_path.open("wb")
    popen = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, log_file=log_file)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU of `pid` and its live descendants, all threads included."""
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def cpu_busy_seconds(cpu: int) -> tuple[float, float]:
    """(busy, steal) seconds one CPU has had since boot, whoever ran on it.

    Busy is user+nice+system+irq+softirq; steal is time the hypervisor gave to someone else.
    """
    t = psutil.cpu_times(percpu=True)[cpu]
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "steal", 0.0))


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def wait_port_open(port: int, *, timeout_s: float, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.is_running():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not open 127.0.0.1:{port} within {timeout_s:.0f} s")


def http_get(
    url: str,
    *,
    host: str | None = None,
    timeout_s: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One GET (optionally with a Host header); non-2xx statuses are returned, not raised."""
    fields = dict(headers or {})
    if host:
        fields["Host"] = host
    req = urllib.request.Request(url, headers=fields)
    # No ProxyHandler settings: an http_proxy in the environment must not catch 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_http_ok(url: str, *, timeout_s: float, proc: ManagedProcess) -> None:
    """Poll `url` until it answers 200, the process exits, or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.is_running():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}")
        try:
            status, _ = http_get(url, timeout_s=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: {url} not ready within {timeout_s:.0f} s ({last})")

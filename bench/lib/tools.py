"""Installing the bench's tools (wrk, nginx, HAProxy) with apt-get and recording machine facts."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ensure_tools", "machine_facts", "tool_path", "tool_version"]

_APT_LISTS = Path("/var/lib/apt/lists")


def _run_loud(cmd: list[str]) -> int:
    print(f"+ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, env=env, check=False, stdin=subprocess.DEVNULL).returncode


def _has_apt_lists() -> bool:
    return _APT_LISTS.is_dir() and any(_APT_LISTS.glob("*Packages*"))


def ensure_tools(*, with_haproxy: bool) -> None:
    """apt-get install what is missing: wrk, nginx (nginx-light), optionally haproxy."""
    wanted = {"wrk": "wrk", "nginx": "nginx-light"}
    if with_haproxy:
        wanted["haproxy"] = "haproxy"
    missing = [pkg for binary, pkg in wanted.items() if _which(binary) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing {', '.join(missing)} and no apt-get to install them")
    print(f"installing {', '.join(missing)} (missing on this machine)", flush=True)
    if not _has_apt_lists() and _run_loud(["apt-get", "update"]) != 0:
        raise SystemExit("apt-get update failed")
    install = ["apt-get", "install", "-y", *missing]
    # Stale package lists are the usual cause of a failed install: refresh once and retry.
    if _run_loud(install) != 0 and (
        _run_loud(["apt-get", "update"]) != 0 or _run_loud(install) != 0
    ):
        raise SystemExit(f"apt-get install {' '.join(missing)} failed")
    still = [b for b in wanted if _which(b) is None]
    if still:
        raise SystemExit(f"still missing after install: {', '.join(still)}")


def _which(binary: str) -> str | None:
    # nginx and haproxy live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin:/sbin")


def tool_path(binary: str) -> str:
    found = _which(binary)
    if found is None:
        raise SystemExit(f"{binary} not found")
    return found


def tool_version(cmd: list[str]) -> str:
    """First line a tool prints about its version (some print to stderr, some exit 1)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(*, with_haproxy: bool) -> dict[str, str]:
    facts = {
        "cpu_model": _cpu_model(),
        "cpus": str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "nginx": tool_version([tool_path("nginx"), "-v"]),
        "wrk": tool_version([tool_path("wrk"), "-v"]),
    }
    if with_haproxy:
        facts["haproxy"] = tool_version([tool_path("haproxy"), "-v"])
    return facts

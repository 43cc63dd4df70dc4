"""Starting the bench's servers: the nginx backend, the nginx and HAProxy proxies, and kedge."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import ManagedProcess, free_port, start_process, wait_http_ok, wait_port_open
from .render import (
    haproxy_conf,
    kedge_config_yaml,
    nginx_backend_conf,
    nginx_proxy_conf,
    template_dir,
)
from .tools import tool_path

__all__ = [
    "LOAD_CPU",
    "PROXY_CPU",
    "Target",
    "start_haproxy",
    "start_kedge",
    "start_nginx",
    "start_nginx_backend",
    "start_nginx_proxy",
]

PROXY_CPU = 0  # the proxy under test has this CPU to itself
LOAD_CPU = 1  # wrk, the backend and this harness share the other one
_START_TIMEOUT_S = 10.0
_KEDGE_READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Target:
    """Something wrk can load: a port, and the process whose CPU and RSS we charge to it."""

    name: str
    port: int
    process: ManagedProcess
    cpu_of: str  # "proxy", or "backend" for the direct run
    access_log: Path | None = None
    headers: tuple[str, ...] = ()  # extra request headers wrk sends (e.g. a bearer token)


def _is_root() -> bool:
    return os.geteuid() == 0


def start_nginx(name: str, conf_text: str, prefix: Path, cpu: int, port: int) -> ManagedProcess:
    """nginx with `conf_text` under `prefix`, pinned to `cpu`, once `port` accepts."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    # -e: the error log before the config is read, so nothing is written under /var/log.
    cmd = ["taskset", "-c", str(cpu), tool_path("nginx"), "-p", f"{prefix}/", "-c", str(conf)]
    cmd += ["-e", str(prefix / "error.log")]
    proc = start_process(name, cmd, log_path=prefix / "stdout.log")
    try:
        wait_port_open(port, timeout_s=_START_TIMEOUT_S, proc=proc)
    except RuntimeError as exc:
        proc.stop()
        tail = (prefix / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}\n{tail}") from exc
    except BaseException:
        proc.stop()
        raise
    return proc


def start_nginx_backend(workdir: Path) -> Target:
    port = free_port()
    prefix = workdir / "backend"
    template = (template_dir() / "nginx_backend.conf.tmpl").read_text()
    text = nginx_backend_conf(template, prefix=str(prefix), port=port, is_root=_is_root())
    proc = start_nginx("backend", text, prefix, LOAD_CPU, port)
    return Target(name="direct", port=port, process=proc, cpu_of="backend")


def start_nginx_proxy(workdir: Path, backend_port: int) -> Target:
    port = free_port()
    prefix = workdir / "nginx"
    access_log = prefix / "access.log"
    template = (template_dir() / "nginx_proxy.conf.tmpl").read_text()
    text = nginx_proxy_conf(
        template,
        prefix=str(prefix),
        port=port,
        backend_port=backend_port,
        access_log=str(access_log),
        is_root=_is_root(),
    )
    proc = start_nginx("nginx", text, prefix, PROXY_CPU, port)
    return Target(name="nginx", port=port, process=proc, cpu_of="proxy", access_log=access_log)


def start_haproxy(workdir: Path, backend_port: int) -> Target:
    port = free_port()
    prefix = workdir / "haproxy"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "haproxy.cfg"
    template = (template_dir() / "haproxy.cfg.tmpl").read_text()
    conf.write_text(haproxy_conf(template, port=port, backend_port=backend_port))
    # -db: foreground, so `log stdout` lands in the file the harness gives it.
    cmd = ["taskset", "-c", str(PROXY_CPU), tool_path("haproxy"), "-db", "-f", str(conf)]
    access_log = prefix / "access.log"
    proc = start_process("haproxy", cmd, log_path=access_log)
    try:
        wait_port_open(port, timeout_s=_START_TIMEOUT_S, proc=proc)
    except RuntimeError as exc:
        tail = proc.log_tail()
        proc.stop()
        raise RuntimeError(f"{exc}\n{tail}") from exc
    except BaseException:
        proc.stop()
        raise
    return Target(name="haproxy", port=port, process=proc, cpu_of="proxy", access_log=access_log)


def start_kedge(
    workdir: Path,
    backend_port: int,
    repo_root: Path,
    program: list[str] | None = None,
    *,
    name: str = "kedge",
    auth: dict[str, Any] | None = None,
    headers: tuple[str, ...] = (),
    connect_host: str | None = None,
) -> Target:
    """`python -m kedge serve` on PROXY_CPU; RuntimeError with its output if it is never ready.

    `program` replaces `python -m kedge` (the harness appends `serve --config ...`). With
    `auth` (an `auth:` section) the bench route requires the bench permission, and wrk
    sends `headers` (the token).
    """
    port, admin_port = free_port(), free_port()
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "kedge.yaml"
    config.write_text(
        kedge_config_yaml(
            listen_port=port,
            admin_port=admin_port,
            backend_port=backend_port,
            auth=auth,
            connect_host=connect_host,
        )
    )
    access_log = prefix / "access.log"
    program = program or [sys.executable, "-m", "kedge"]
    cmd = ["taskset", "-c", str(PROXY_CPU), *program, "serve"]
    cmd += ["--config", str(config), "--access-log", str(access_log)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH")) if p)
    proc = start_process(name, cmd, log_path=prefix / "stdout.log", cwd=repo_root, env=env)
    try:
        wait_http_ok(
            f"http://127.0.0.1:{admin_port}/readyz", timeout_s=_KEDGE_READY_TIMEOUT_S, proc=proc
        )
        wait_port_open(port, timeout_s=_START_TIMEOUT_S, proc=proc)
    except RuntimeError as exc:
        tail = proc.log_tail()
        proc.stop()
        raise RuntimeError(f"{exc}\n{tail}") from exc
    except BaseException:
        proc.stop()
        raise
    return Target(
        name=name,
        port=port,
        process=proc,
        cpu_of="proxy",
        access_log=access_log,
        headers=headers,
    )

"""WinchConfig: the dialer's routes, auth sources and edge TLS, plus winch's `winch:` section.

```yaml
winch:
  listen: 127.0.0.1:8070      # loopback only unless allow_non_loopback (or --force-bind)
  secret_file: ~/.config/kedge/winch.secret   # optional: clients send it as the proxy password
  debug: false                # ask edges to log this client's requests at info level
```
The rest of the file is the dialer's (kedge.dialer.config_parser).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from kedge.core.config_loading import Node, existing_file, load_yaml, parse_yaml_text
from kedge.core.errors import ConfigError
from kedge.dialer.config import DialerConfig
from kedge.dialer.config_parser import parse_dialer_config

__all__ = [
    "WinchConfig",
    "is_loopback_host",
    "load_winch_config",
    "parse_winch_config_text",
    "read_secret",
]

_KEYS = (
    "listen",
    "allow_non_loopback",
    "secret_file",
    "debug",
    "connect_timeout",
    "response_header_timeout",
    "request_header_timeout",
    "max_connections",
    "same_user_only",
)


@dataclass(frozen=True, slots=True)
class WinchConfig:
    dialer: DialerConfig
    listen_host: str = "127.0.0.1"
    listen_port: int = 8070
    allow_non_loopback: bool = False
    secret_file: str | None = None
    debug: bool = False
    connect_timeout: float = 5.0  # TCP + TLS to an edge
    response_header_timeout: float = 60.0  # request sent -> response head; 0 = none
    request_header_timeout: float = 10.0  # a client's request head must arrive within this
    max_connections: int = 512  # client connections at once (hardening X10)
    # Refuse loopback connections opened by another local user (Linux: /proc/net/tcp).
    same_user_only: bool = True


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    if ":" not in host and not host[-1:].isdigit():
        return False  # a name (not an IP literal): no exception raised per request
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_winch_config(root: Node, base_dir: str | None = None) -> WinchConfig:
    dialer = parse_dialer_config(root, base_dir=base_dir)
    node = root.child("winch")
    if node.value is None:
        return WinchConfig(dialer)
    fields = node.as_mapping(_KEYS)
    host, port = "127.0.0.1", 8070
    listen = fields.get("listen")
    if listen is not None:
        host, port = listen.as_address(allow_port_zero=True)
    allow = fields.get_bool("allow_non_loopback", False)
    if not allow and not is_loopback_host(host):
        assert listen is not None
        raise listen.error(
            f"{host} is not a loopback address: winch attaches credentials to what it forwards, "
            "so anyone who can reach it acts as you",
            "listen on 127.0.0.1, or set allow_non_loopback: true (with secret_file) if you "
            "really mean to share it",
        )
    secret = fields.get("secret_file")
    return WinchConfig(
        dialer,
        listen_host=host,
        listen_port=port,
        allow_non_loopback=allow,
        secret_file=existing_file(secret, base_dir) if secret is not None else None,
        debug=fields.get_bool("debug", False),
        connect_timeout=fields.get_duration("connect_timeout", 5.0, allow_zero=False),
        response_header_timeout=fields.get_duration("response_header_timeout", 60.0),
        request_header_timeout=fields.get_duration(
            "request_header_timeout", 10.0, allow_zero=False
        ),
        max_connections=fields.get_int("max_connections", 512, minimum=1),
        same_user_only=fields.get_bool("same_user_only", True),
    )


def load_winch_config(path: str) -> WinchConfig:
    """Read and validate a winch config file; relative paths are read from its directory."""
    return parse_winch_config(load_yaml(path), os.path.dirname(os.path.abspath(path)))


def parse_winch_config_text(
    text: str, source: str = "<winch config>", *, base_dir: str | None = None
) -> WinchConfig:
    return parse_winch_config(parse_yaml_text(text, source), base_dir)


def read_secret(path: str) -> str:
    """The listener's secret: the file's first line. The file must not be readable by others
    (hardening X9), as ssh insists for its keys."""
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise ConfigError(
            path,
            "winch.secret_file",
            f"the file is readable by others (mode {mode & 0o777:o})",
            f"chmod 600 {path}",
        )
    with open(path, encoding="utf-8") as f:
        secret = f.readline().strip()
    if len(secret) < 16:
        raise ConfigError(
            path,
            "winch.secret_file",
            "the secret is shorter than 16 characters",
            "write a long random secret, e.g. `openssl rand -hex 24 > FILE`",
        )
    return secret

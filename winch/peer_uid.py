"""Which local user opened a loopback connection to winch (Linux, /proc/net/tcp{,6}).

127.0.0.1 is reachable by every user of a shared host (a bastion, a node), and winch
attaches its user's credentials (hardening X3). The kernel lists every TCP socket in
/proc/net/tcp with its owner's uid: the client's end of our connection is the line whose
local address is the peer's and whose remote address is ours. Parsing is pure
(`owner_uid`), reading is `peer_uid`; where /proc/net is missing (macOS) the check is not
possible and `peer_uid` says so with None.

Addresses in /proc/net/tcp are hex, each 32-bit word in host byte order (little-endian
here), and ports are big-endian hex: `0100007F:1F90` is 127.0.0.1:8080.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Literal

__all__ = ["Unknown", "owner_uid", "peer_uid", "proc_address"]

Address = tuple[str, int]


class Unknown(Exception):
    """The owner cannot be told (no /proc/net here)."""


def proc_address(host: str, port: int) -> str:
    """`host:port` as /proc/net/tcp{,6} writes it."""
    packed = ipaddress.ip_address(host).packed
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    # Each 32-bit word as the kernel prints it: in host byte order.
    order: Literal["little", "big"] = "little" if sys.byteorder == "little" else "big"
    hexed = "".join(int.from_bytes(w, "big").to_bytes(4, order).hex().upper() for w in words)
    return f"{hexed}:{port:04X}"


def owner_uid(table: str, client: Address, server: Address) -> int | None:
    """The uid owning the socket `client` -> `server` in a /proc/net/tcp{,6} text."""
    local, remote = proc_address(*client), proc_address(*server)
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[1] == local and fields[2] == remote:
            return int(fields[7])
    return None


def _v4_mapped(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return host


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError as exc:
        raise Unknown(f"{path}: {exc.strerror or exc}") from None


def peer_uid(client: Address, server: Address) -> int | None:
    """The uid of the process that opened `client` -> `server`; None if no such socket is
    listed (it closed meanwhile). Raises Unknown where /proc/net/tcp does not exist.

    An IPv4 client may hold a dual-stack IPv6 socket (grpcio's C core does): its line is
    then in /proc/net/tcp6, with both addresses IPv4-mapped (RFC 4291 §2.5.5.2)."""
    client = (_v4_mapped(client[0]), client[1])
    server = (_v4_mapped(server[0]), server[1])
    if ":" in client[0]:
        return owner_uid(_read("/proc/net/tcp6"), client, server)
    uid = owner_uid(_read("/proc/net/tcp"), client, server)
    if uid is None:
        mapped_client = (f"::ffff:{client[0]}", client[1])
        mapped_server = (f"::ffff:{server[0]}", server[1])
        uid = owner_uid(_read("/proc/net/tcp6"), mapped_client, mapped_server)
    return uid

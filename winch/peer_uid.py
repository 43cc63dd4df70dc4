"""Which local user opened a loopback connection to winch (Linux: sock_diag, /proc/net/tcp).

127.0.0.1 is reachable by every user of a shared host (a bastion, a node), and winch
attaches its user's credentials (hardening X3). The kernel knows the owner of the client's
end of our connection (local address = the peer's, remote address = ours):

- asked directly over netlink (NETLINK_SOCK_DIAG, an exact inet_diag lookup by the four
  addresses: ~50 µs, unprivileged, what `ss` uses);
- else from /proc/net/tcp{,6}, which lists every socket with its uid: one read of the
  whole table (~15 ms with 1,400 sockets), so it runs off the event loop.

Where neither exists (macOS) the check is not possible and `peer_uid` raises Unknown.

Addresses in /proc/net/tcp are hex, each 32-bit word in host byte order (little-endian
here), and ports are big-endian hex: `0100007F:1F90` is 127.0.0.1:8080.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from typing import Literal

__all__ = ["Unknown", "netlink_uid", "owner_uid", "peer_uid", "proc_address", "proc_uid"]

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


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
# struct inet_diag_msg after the 16-byte nlmsghdr: family, state, timer, retrans (4 bytes),
# the 48-byte inet_diag_sockid, expires, rqueue, wqueue (12 bytes), then uid and inode.
_UID_OFFSET = 16 + 4 + 48 + 12


def _packed16(host: str) -> bytes:
    raw = ipaddress.ip_address(host).packed
    return raw + b"\0" * (16 - len(raw))


def netlink_uid(client: Address, server: Address) -> int | None:
    """The owner of the socket `client` -> `server` by an exact sock_diag lookup (Linux
    `linux/inet_diag.h`); None if there is no such socket. Raises Unknown without netlink."""
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    sockid = struct.pack(">HH", client[1], server[1])  # ports are big-endian
    sockid += _packed16(client[0]) + _packed16(server[0])
    sockid += struct.pack("=III", 0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE)
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + sockid
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(header + request, (0, 0))
            reply = nl.recv(8192)
    except (OSError, AttributeError) as exc:  # AttributeError: no AF_NETLINK (macOS)
        raise Unknown(f"sock_diag: {exc}") from None
    if len(reply) < 16:
        raise Unknown("sock_diag: short reply")
    _, kind = struct.unpack_from("=IH", reply)
    if kind == _NLMSG_ERROR:
        return None  # -ENOENT: no such socket (it closed meanwhile)
    if len(reply) < _UID_OFFSET + 4:
        raise Unknown("sock_diag: short reply")
    return int(struct.unpack_from("=I", reply, _UID_OFFSET)[0])


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError as exc:
        raise Unknown(f"{path}: {exc.strerror or exc}") from None


def peer_uid(client: Address, server: Address) -> int | None:
    """The uid of the process that opened `client` -> `server`, by sock_diag (fast); None
    if there is no such socket. Raises Unknown where netlink is unavailable: then
    `proc_uid` (slow: run it off the event loop) is the way left."""
    client = (_v4_mapped(client[0]), client[1])
    server = (_v4_mapped(server[0]), server[1])
    uid = netlink_uid(client, server)
    if uid is None and ":" not in client[0]:
        # A dual-stack IPv6 client socket (grpcio's C core): IPv4-mapped addresses.
        uid = netlink_uid((f"::ffff:{client[0]}", client[1]), (f"::ffff:{server[0]}", server[1]))
    return uid


def proc_uid(client: Address, server: Address) -> int | None:
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

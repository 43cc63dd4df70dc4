"""winch.peer_uid: finding the owner of a loopback connection in /proc/net/tcp{,6} text."""

from __future__ import annotations

import os
import socket

import pytest

from winch.peer_uid import owner_uid, peer_uid, proc_address, proc_uid

HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)
V4 = HEADER + (
    # winch listening on 8070, a client of uid 1000 on port 40000, and the other direction
    "   0: 0100007F:1F86 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 11\n"
    "   1: 0100007F:9C40 0100007F:1F86 01 00000000:00000000 00:00000000 00000000  1001 0 12\n"
    "   2: 0100007F:1F86 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000 0 13\n"
    "   3: 0200007F:9C40 0100007F:1F86 01 00000000:00000000 00:00000000 00000000     0 0 14\n"
)
V6 = HEADER + (
    "   0: 00000000000000000000000001000000:9C41 00000000000000000000000001000000:1F86 01 "
    "00000000:00000000 00:00000000 00000000  4242 0 15\n"
)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("127.0.0.1", 8070, "0100007F:1F86"), ("127.0.0.2", 40000, "0200007F:9C40"),
     ("::1", 443, "00000000000000000000000001000000:01BB"),
     ("10.1.2.3", 1, "0302010A:0001"),
     ("::ffff:127.0.0.1", 80, "0000000000000000FFFF00000100007F:0050")],
)  # fmt: skip
def test_proc_address(host: str, port: int, text: str) -> None:
    assert proc_address(host, port) == text


@pytest.mark.parametrize(
    ("table", "client", "server", "uid"),
    [
        (V4, ("127.0.0.1", 40000), ("127.0.0.1", 8070), 1001),  # the client's end, not ours
        (V4, ("127.0.0.2", 40000), ("127.0.0.1", 8070), 0),  # same port, other address
        (V4, ("127.0.0.1", 40001), ("127.0.0.1", 8070), None),  # closed meanwhile
        (V4, ("127.0.0.1", 40000), ("127.0.0.1", 8071), None),  # to another server
        (V6, ("::1", 40001), ("::1", 8070), 4242),
        (HEADER, ("127.0.0.1", 40000), ("127.0.0.1", 8070), None),
        ("", ("127.0.0.1", 40000), ("127.0.0.1", 8070), None),
    ],
)
def test_owner_uid(
    table: str, client: tuple[str, int], server: tuple[str, int], uid: int | None
) -> None:
    assert owner_uid(table, client, server) == uid


def test_the_kernel_knows_the_owner_of_a_real_connection() -> None:
    """sock_diag and /proc/net/tcp agree on a real loopback connection, IPv4 and dual-stack,
    and both say None for a socket that does not exist."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        addr = server.getsockname()
        with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
            v4.connect(addr)
            v6.connect((f"::ffff:{addr[0]}", addr[1]))
            accepted = [server.accept()[0] for _ in range(2)]
            try:
                for peer in (s.getpeername() for s in accepted):
                    assert peer_uid(peer, addr) == os.getuid()
                    assert proc_uid(peer, addr) == os.getuid()
            finally:
                for s in accepted:
                    s.close()
        assert peer_uid(("127.0.0.1", 1), addr) is None
        assert proc_uid(("127.0.0.1", 1), addr) is None

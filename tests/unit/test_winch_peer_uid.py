"""winch.peer_uid: finding the owner of a loopback connection in /proc/net/tcp{,6} text."""

from __future__ import annotations

import pytest

from winch.peer_uid import owner_uid, proc_address

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

"""The documented error table in configs/README.md matches the error classes exactly."""

from __future__ import annotations

import re
from pathlib import Path

import kedge.dialer.errors  # noqa: F401  (the dialer's kinds too)
import winch.errors  # noqa: F401  (winch's kinds share the table and its header vocabulary)
from kedge.core.errors import all_error_kinds

README = Path(__file__).resolve().parents[2] / "configs" / "README.md"


def _table() -> dict[str, tuple[str, str, str]]:
    text = README.read_text()
    section = text[text.index("## Errors") :]
    rows: dict[str, tuple[str, str, str]] = {}
    for m in re.finditer(
        r"^\| `([a-z-]+)` \| (\d+)[^|]*\| (\d+) [A-Z_]+ \| (yes|no) \|", section, re.M
    ):
        rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def test_every_kind_is_documented_with_its_statuses() -> None:
    table = _table()
    kinds = all_error_kinds()
    assert set(table) == set(kinds)
    for kind, cls in kinds.items():
        status, grpc, closes = table[kind]
        assert int(status) == cls.http_status, kind
        assert int(grpc) == cls.grpc_status, kind
        assert (closes == "yes") == cls.close_connection, kind


def test_kinds_are_stable_lowercase_tokens() -> None:
    for kind in all_error_kinds():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", kind)

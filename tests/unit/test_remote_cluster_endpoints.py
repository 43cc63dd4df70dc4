"""Remote clusters as endpoints, and token files re-read on rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kedge.core.net.token_file import TokenFile
from kedge.edge.config import Address, RemoteClusterConfig
from kedge.edge.forwarding.remote import RemoteClusters


def test_remote_edges_become_labelled_weighted_endpoints(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-1\n")
    remotes = RemoteClusters(
        (
            RemoteClusterConfig("b", (Address("edge.b.test", 443),), priority=1, weight=3),
            RemoteClusterConfig(
                "c", (Address("10.1.0.1", 443), Address("10.1.0.2", 443)), token_file=str(token)
            ),
        )
    )
    assert [(e.key, e.labels, e.weight) for e in remotes.endpoints] == [
        ("edge.b.test:443", (("cluster", "b"),), 3),
        ("10.1.0.1:443", (("cluster", "c"),), 1),
        ("10.1.0.2:443", (("cluster", "c"),), 1),
    ]
    assert (remotes.priority("b"), remotes.priority("c"), remotes.priority("zzz")) == (1, 0, None)
    b, c = remotes.get("edge.b.test:443"), remotes.get("10.1.0.2:443")
    assert b is not None and c is not None and remotes.get("10.0.0.1:80") is None
    assert b.request_headers() is None
    assert c.request_headers() == [(b"proxy-authorization", b"Bearer secret-1")]
    assert b.server_name(remotes.endpoints[0]) == "edge.b.test"


def test_a_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    token = TokenFile(str(path))
    assert token.value() == "one"
    # A kubelet-style rotation: a new file renamed over the old one (new inode).
    new = tmp_path / "token.new"
    new.write_text("two\n")
    os.replace(new, path)
    assert token.value() == "two"
    token.forget()
    assert token.value() == "two"
    path.unlink()
    with pytest.raises(OSError):
        token.value()

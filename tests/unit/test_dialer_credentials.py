"""Dialer credentials: refresh scheduling, the single-flight refreshing cache, pure parsers."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import stat
from pathlib import Path

import pytest

from kedge.core.errors import CredentialUnavailable
from kedge.dialer.config import OidcSourceConfig
from kedge.dialer.credentials import (
    AuthSourceError,
    BearerToken,
    ClientCertificate,
    Credential,
    RefreshingCredential,
    refresh_deadline,
    stored_jwt_is_fresh,
    unverified_jwt_expiry,
)
from kedge.dialer.sources.files import replace_file
from kedge.dialer.sources.kube_exec import parse_exec_credential
from kedge.dialer.sources.kubeconfig import kubeconfig_paths
from kedge.dialer.sources.oauth import basic_auth
from kedge.dialer.sources.oidc import default_cache_dir, oidc_cache_path


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _jwt(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@pytest.mark.parametrize(
    ("fetched", "expires", "margin", "want"),
    [
        (0, None, 60, math.inf),  # never expires: never refreshed
        (0, 3600, 60, 2880),  # long token: 80% of its life comes before the margin
        (0, 250, 60, 190),  # margin comes first: 60 s before expiry (80% would be 200)
        (0, 100, 60, 50),  # margin over half the life: capped, used for half its life
        (0, 10, 60, 5),
        (100, 100, 60, 100),  # already expired when fetched
        (100, 50, 60, 50),  # expired before it was fetched (clock skew): due at once
    ],
)
def test_refresh_deadline(
    fetched: float, expires: float | None, margin: float, want: float
) -> None:
    assert refresh_deadline(fetched, expires, margin) == want


@pytest.mark.parametrize(
    ("token", "want"),
    [
        (_jwt({"exp": 1700000000}), 1700000000.0),
        (_jwt({"exp": 1.5}), 1.5),
        (_jwt({"sub": "x"}), None),
        (_jwt({"exp": "soon"}), None),
        (_jwt({"exp": True}), None),
        ("opaque-token", None),
        ("a.b.c", None),  # three parts but not base64 JSON
        ("a.!!!.c", None),
        (f"x.{base64.urlsafe_b64encode(b'[1]').decode()}.y", None),  # JSON, not an object
    ],
)
def test_unverified_jwt_expiry(token: str, want: float | None) -> None:
    assert unverified_jwt_expiry(token) == want


@pytest.mark.parametrize(
    ("claims", "now", "fresh"),
    [
        ({"iat": 0, "exp": 600}, 479, True),  # as if fetched at iat: due at 80% (480)
        ({"iat": 0, "exp": 600}, 480, False),
        ({"exp": 600}, 539, True),  # no iat: exp less the margin
        ({"exp": 600}, 540, False),
        ({"iat": 0}, 1, False),  # no exp: refresh to learn it
    ],
)
def test_stored_jwt_is_fresh(claims: dict[str, object], now: float, fresh: bool) -> None:
    token = _jwt(claims)
    assert stored_jwt_is_fresh(BearerToken(token, unverified_jwt_expiry(token)), now, 60) is fresh


def test_credentials_hide_secrets_in_repr() -> None:
    token = BearerToken("s3cret-token", 5.0)
    cert = ClientCertificate(b"CERT-PEM", b"KEY-PEM", None)
    assert "s3cret" not in repr(token)
    assert "PEM" not in repr(cert)
    assert token.header_value() == "Bearer s3cret-token"


def test_auth_source_error_names_the_source_and_is_a_credential_unavailable() -> None:
    err = AuthSourceError("corp", "token endpoint down\nsecond line")
    assert isinstance(err, CredentialUnavailable)
    assert err.kind == "credential-unavailable"
    assert (err.http_status, err.grpc_status) == (502, 16)
    assert err.reason == "auth source 'corp': token endpoint down second line"
    assert err.source == "corp"


class Fetcher:
    """A scripted fetch: returns or raises the queued outcomes, optionally gated."""

    def __init__(self, *outcomes: Credential | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Credential:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _cache(fetch: Fetcher, clock: FakeClock, margin: float = 60) -> RefreshingCredential:
    return RefreshingCredential("src", fetch, refresh_margin=margin, clock=clock)


async def test_caches_until_the_deadline_then_refreshes() -> None:
    clock = FakeClock(0)
    a, b = BearerToken("a", 1000), BearerToken("b", 2000)
    fetch = Fetcher(a, b)
    cache = _cache(fetch, clock)
    assert await cache.get() is a
    clock.now = 799  # deadline: 80% of 1000 s
    assert await cache.get() is a
    assert fetch.calls == 1
    clock.now = 800
    assert await cache.get() is b
    assert fetch.calls == 2


async def test_twenty_concurrent_callers_share_one_fetch() -> None:
    clock = FakeClock(0)
    token = BearerToken("t", 1000)
    fetch = Fetcher(token)
    fetch.gate = asyncio.Event()
    cache = _cache(fetch, clock)
    waiters = [asyncio.create_task(cache.get()) for _ in range(20)]
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await asyncio.gather(*waiters) == [token] * 20
    assert fetch.calls == 1


async def test_a_failure_reaches_every_waiter_then_backs_off_then_retries() -> None:
    clock = FakeClock(0)
    good = BearerToken("good", None)
    fetch = Fetcher(AuthSourceError("src", "down"), AuthSourceError("src", "down"), good)
    fetch.gate = asyncio.Event()
    cache = _cache(fetch, clock)
    waiters = [asyncio.create_task(cache.get()) for _ in range(5)]
    await asyncio.sleep(0)
    fetch.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, AuthSourceError) for r in results)
    assert fetch.calls == 1
    # Within the backoff (1 s): the same error at once, no new fetch.
    clock.now = 0.5
    with pytest.raises(AuthSourceError, match="down"):
        await cache.get()
    assert fetch.calls == 1
    clock.now = 1.0  # retried, fails again: the backoff doubles to 2 s
    with pytest.raises(AuthSourceError):
        await cache.get()
    assert fetch.calls == 2
    clock.now = 2.9
    with pytest.raises(AuthSourceError):
        await cache.get()
    assert fetch.calls == 2
    clock.now = 3.0
    assert await cache.get() is good
    assert fetch.calls == 3


async def test_an_unexpected_exception_becomes_an_auth_source_error() -> None:
    cache = _cache(Fetcher(KeyError("boom")), FakeClock())
    with pytest.raises(AuthSourceError, match="unexpected KeyError"):
        await cache.get()


async def test_a_failed_early_refresh_keeps_serving_the_unexpired_credential() -> None:
    clock = FakeClock(0)
    old = BearerToken("old", 1000)
    fetch = Fetcher(old, AuthSourceError("src", "down"), AuthSourceError("src", "down"))
    cache = _cache(fetch, clock)
    assert await cache.get() is old
    clock.now = 900  # past the deadline, before expiry
    assert await cache.get() is old
    assert fetch.calls == 2
    clock.now = 1000  # expired: the error surfaces (after the backoff, a retry)
    with pytest.raises(AuthSourceError):
        await cache.get()


async def test_invalidate_drops_the_credential() -> None:
    clock = FakeClock(0)
    a, b = BearerToken("a", None), BearerToken("b", None)
    fetch = Fetcher(a, b)
    cache = _cache(fetch, clock)
    assert await cache.get() is a
    assert await cache.get() is a
    cache.invalidate()
    assert await cache.get() is b


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    clock = FakeClock(0)
    token = BearerToken("t", None)
    fetch = Fetcher(token)
    fetch.gate = asyncio.Event()
    cache = _cache(fetch, clock)
    first = asyncio.create_task(cache.get())
    second = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await second is token
    assert first.cancelled()
    assert fetch.calls == 1


async def test_aclose_cancels_a_fetch_in_flight() -> None:
    fetch = Fetcher(BearerToken("t", None))
    fetch.gate = asyncio.Event()
    cache = _cache(fetch, FakeClock())
    waiter = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter


V1 = "client.authentication.k8s.io/v1"


@pytest.mark.parametrize(
    ("status", "want"),
    [
        ({"token": "tok"}, BearerToken("tok", None)),
        (
            {"token": "tok", "expirationTimestamp": "2030-01-02T03:04:05Z"},
            BearerToken("tok", 1893553445.0),
        ),
        (
            {"clientCertificateData": "CERT", "clientKeyData": "KEY"},
            ClientCertificate(b"CERT", b"KEY", None),
        ),
    ],
)
def test_parse_exec_credential(status: dict[str, str], want: Credential) -> None:
    out = json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": status})
    assert parse_exec_credential("k", V1, out.encode()) == want


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "other than JSON"),
        ({"apiVersion": V1, "kind": "Pod", "status": {"token": "t"}}, "not an ExecCredential"),
        ({"apiVersion": "v9", "kind": "ExecCredential", "status": {"token": "t"}}, "apiVersion"),
        ({"apiVersion": V1, "kind": "ExecCredential"}, "no status"),
        ({"apiVersion": V1, "kind": "ExecCredential", "status": {}}, "neither a token"),
        (
            {"apiVersion": V1, "kind": "ExecCredential", "status": {"clientCertificateData": "C"}},
            "neither a token",
        ),
        (
            {
                "apiVersion": V1,
                "kind": "ExecCredential",
                "status": {"token": "t", "expirationTimestamp": "tomorrow"},
            },
            "not RFC 3339",
        ),
        (
            {
                "apiVersion": V1,
                "kind": "ExecCredential",
                "status": {"token": "t", "expirationTimestamp": "2030-01-02T03:04:05"},
            },
            "no time zone",
        ),
    ],
)
def test_parse_exec_credential_refuses(doc: object, message: str) -> None:
    out = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(AuthSourceError, match=message):
        parse_exec_credential("k", V1, out.encode())


@pytest.mark.parametrize(
    ("client_id", "secret", "pair"),
    [
        ("winch", "s3cret", "winch:s3cret"),
        # RFC 6749 §2.3.1: form-encoded before Basic, so ':' in the id cannot split the pair.
        ("a:b", "p@ss word", "a%3Ab:p%40ss%20word"),
    ],
)
def test_basic_auth_form_encodes(client_id: str, secret: str, pair: str) -> None:
    assert basic_auth(client_id, secret) == "Basic " + base64.b64encode(pair.encode()).decode()


@pytest.mark.parametrize(
    ("path", "env", "want"),
    [
        ("/k/config", {"KUBECONFIG": "/a:/b"}, ["/k/config"]),
        (None, {"KUBECONFIG": "/a::/b"}, ["/a", "/b"]),
        (None, {}, [os.path.expanduser("~/.kube/config")]),
    ],
)
def test_kubeconfig_paths(path: str | None, env: dict[str, str], want: list[str]) -> None:
    assert [str(p) for p in kubeconfig_paths(path, env)] == want


def test_oidc_cache_path_is_per_name_issuer_and_client(tmp_path: Path) -> None:
    def path(name: str, issuer: str, client: str) -> Path:
        cfg = OidcSourceConfig(name=name, issuer=issuer, client_id=client, cache_dir=str(tmp_path))
        return oidc_cache_path(cfg)

    base = path("corp", "https://a.test", "winch")
    assert base.parent == tmp_path and base.name.startswith("oidc-corp-")
    assert base == path("corp", "https://a.test", "winch")
    others = {path("corp2", "https://a.test", "winch"), path("corp", "https://b.test", "winch")}
    others.add(path("corp", "https://a.test", "other"))
    assert base not in others and len(others) == 3
    assert path("../../etc/x", "i", "c").parent == tmp_path  # the name cannot escape the dir
    assert default_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/kedge")


def test_replace_file_sets_the_mode_through_a_restrictive_or_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "new" / "cache.json"
        replace_file(target, b"{}", 0o600)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
        replace_file(target, b"[]", 0o640)
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        assert target.read_bytes() == b"[]"
        assert [p.name for p in target.parent.iterdir()] == ["cache.json"]  # no temp left
    finally:
        os.umask(old)

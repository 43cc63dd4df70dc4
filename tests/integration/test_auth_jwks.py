"""The edge's JWKS handling end to end: rotation under traffic, provider outages, cold starts.

The real oidc-provider publishes the keys (restarted with rotated key sets, stopped for an
outage, started late); tokens are minted by the provider (client_credentials) and by the
test with the provider's own keys (`SigningKey.sign`, so a token can be new to the edge's
cache at any moment). The unknown-kid cooldown is counted black-box with a small JWKS
server of the test's own. Durations are short (`jwks_ttl: 1s` and the like) and every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.oidc_provider import (
    OidcClient,
    OidcHarnessError,
    OidcProvider,
    SigningKey,
    SigningKeys,
    rsa_key,
)

IDENTITY = "x-kedge-principal"
SVC = OidcClient("svc", "svc-secret", claims={"permissions": ["svc.read"]})
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def edge_yaml(issuer: str, backend: str, issuer_extra: str) -> str:
    return f"""
listeners: [{{name: http, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
backends: [{{name: web, resolver: {{static: {{endpoints: ["{backend}"]}}}}}}]
routes: [{{name: app, backend: web, auth: {{permissions: [svc.read]}}}}]
auth:
  identity_header: {IDENTITY}
  issuers:
    - {{name: op, issuer: "{issuer}", audiences: [kedge], {issuer_extra}}}
"""


@functools.cache
def _loaded(alg: str, private_jwk: str) -> jwt.PyJWK:
    # Loading an RSA private key checks it (about 50 ms): once per key, not per token.
    return jwt.PyJWK(json.loads(private_jwk), algorithm=alg)


def sign(key: SigningKey, issuer: str, sub: str = "svc", kid: str | None = None) -> str:
    """A fresh token (new to the edge's cache: random jti) signed with `key`, with `key`'s
    kid or the one given."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": "kedge",
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_hex(8),
        "permissions": ["svc.read"],
    }
    loaded = _loaded(key.alg, json.dumps(dict(key.private_jwk), sort_keys=True))
    return jwt.encode(claims, loaded, algorithm=key.alg, headers={"kid": kid or key.kid})


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


@dataclass
class Answer:
    status: int
    kind: str | None  # X-Kedge-Error-Type
    elapsed: float


async def ask(http: aiohttp.ClientSession, edge: RunningEdge, token: str) -> Answer:
    start = time.monotonic()
    headers = {"Proxy-Authorization": f"Bearer {token}"}
    async with http.get(f"{edge.url}/x", headers=headers) as resp:
        await resp.read()
        return Answer(resp.status, resp.headers.get("x-kedge-error-type"), time.monotonic() - start)


async def until(
    condition: Any, timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    """Await `condition()` (an async predicate) until it holds, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def setup(
    tmp_path: Path, keys: SigningKeys, issuer_extra: str
) -> AsyncIterator[tuple[OidcProvider, RunningEdge, RecordingBackend, aiohttp.ClientSession]]:
    async with (
        OidcProvider.start(tmp_path, clients=[SVC], keys=keys) as op,
        recording_backend() as backend,
        running_edge(edge_yaml(op.issuer, backend.address, issuer_extra)) as edge,
        aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http,
    ):
        yield op, edge, backend, http


# ---------------------------------------------------------------------------------------
# Rotation while requests flow


@dataclass
class Traffic:
    """A background loop of requests with valid tokens; records every failure."""

    op: OidcProvider
    edge: RunningEdge
    http: aiohttp.ClientSession
    signing: list[SigningKey]  # keys the provider publishes now: the test mutates it
    valid: dict[str, str] = field(default_factory=dict)  # token -> kid; must be admitted
    admitted: dict[str, int] = field(default_factory=dict)  # kid -> admissions
    failures: list[tuple[str, Answer]] = field(default_factory=list)
    provider_tokens: set[str] = field(default_factory=set)
    provider_kids: set[str] = field(default_factory=set)  # kids of admitted provider tokens
    rounds: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        for _ in range(2000):  # bounded: about 20 ms a round
            if stop.is_set():
                return
            fresh = [sign(k, self.op.issuer) for k in self.signing]
            with suppress(OidcHarnessError, aiohttp.ClientError, OSError, TimeoutError):
                # Fails while the provider restarts; the other tokens keep flowing.
                minted = await self.op.client_credentials("svc", "svc-secret")
                self.provider_tokens.add(minted)
                fresh.append(minted)
            published = {k.kid for k in self.signing}  # it may have changed meanwhile
            for token in fresh:
                if kid_of(token) in published:
                    self.valid[token] = kid_of(token)
            # Each fresh token (a cache miss) and a few older ones (cache hits).
            older = list(self.valid)[-12 : -len(fresh)] if len(self.valid) > len(fresh) else []
            for token in fresh + older[::4]:
                answer = await ask(self.http, self.edge, token)
                kid = self.valid.get(token)
                if answer.status == 200:
                    self.admitted[kid or "?"] = self.admitted.get(kid or "?", 0) + 1
                    if token in self.provider_tokens:
                        self.provider_kids.add(kid or "?")
                elif kid is not None:  # still valid after the answer came back
                    self.failures.append((kid, answer))
            self.rounds += 1
            await asyncio.sleep(0.02)

    def forget(self, kid: str) -> list[str]:
        """Stop treating `kid`'s tokens as valid; return them."""
        gone = [t for t, k in self.valid.items() if k == kid]
        for token in gone:
            del self.valid[token]
        return gone


async def test_rotation_while_requests_flow(tmp_path: Path) -> None:
    first = SigningKeys.generate(ec256=False)
    old = first.signer("RS256")
    extra = "jwks_ttl: 1s"  # unknown_kid_cooldown: the default 30s
    async with setup(tmp_path, first, extra) as (op, edge, _backend, http):
        traffic = Traffic(op, edge, http, [old])
        stop = asyncio.Event()
        task = asyncio.create_task(traffic.run(stop))
        try:

            async def admitted(kid: str, count: int) -> bool:
                assert not task.done(), task
                return traffic.admitted.get(kid, 0) >= count

            await until(lambda: admitted(old.kid, 10), 5, what="traffic with the first key")

            # Rotation 1: a new signing key first, the old one still published.
            overlap = first.rotated(keep_old=True)
            new = overlap.signer("RS256")
            await op.restart(keys=overlap)
            traffic.signing[:] = [new, old]
            # The provider signs with the new kid at once; the edge must accept it at once
            # (an unknown kid refreshes the key set), and the old kid's tokens keep working.
            await until(lambda: admitted(new.kid, 10), 5, what="traffic with the new key")
            before = traffic.admitted[old.kid]
            await until(lambda: admitted(old.kid, before + 5), 5, what="old kid after rotation")

            # Rotation 2: the old key leaves the set. Its tokens stop working once the edge
            # refreshes (jwks_ttl 1s); the new key's tokens never fail.
            traffic.signing[:] = [new]
            old_tokens = traffic.forget(old.kid)
            assert len(old_tokens) > 10
            await op.restart(keys=SigningKeys((new,)))

            async def old_refused() -> bool:
                answers = [await ask(http, edge, t) for t in old_tokens[-3:]]
                assert all(a.status in (200, 401) for a in answers), answers
                return all(a.status == 401 and a.kind == "unauthenticated" for a in answers)

            await until(old_refused, 6, interval=0.1, what="old-kid tokens refused")
            before = traffic.admitted[new.kid]
            await until(lambda: admitted(new.kid, before + 10), 5, what="traffic after rotation")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert traffic.failures == []
        # The provider's own tokens were in the mix, before and after the rotation.
        assert traffic.provider_kids == {old.kid, new.kid}
        # Every old-kid token is refused now, cached or not.
        for token in old_tokens[:3]:
            answer = await ask(http, edge, token)
            assert (answer.status, answer.kind) == (401, "unauthenticated")


# ---------------------------------------------------------------------------------------
# JWKS endpoint down


async def test_outage_serves_cached_keys_then_fails_closed_then_recovers(tmp_path: Path) -> None:
    keys = SigningKeys.generate(ec256=False)
    key = keys.signer("RS256")
    ttl, max_stale = 1.0, 1.0
    extra = f"jwks_ttl: {ttl}s, jwks_max_stale: {max_stale}s, unknown_kid_cooldown: 500ms"
    async with setup(tmp_path, keys, extra) as (op, edge, backend, http):
        provider_token = await op.client_credentials("svc", "svc-secret")
        assert (await ask(http, edge, provider_token)).status == 200
        await op.stop()
        stopped = time.monotonic()

        # Within jwks_ttl + jwks_max_stale the cached key set keeps serving: the verified
        # token and new tokens signed with the same key.
        assert (await ask(http, edge, provider_token)).status == 200
        assert (await ask(http, edge, sign(key, op.issuer))).status == 200
        # A kid the cached set does not have cannot be checked: 401, not a hang or a 503.
        unknown = await ask(http, edge, sign(rsa_key(), op.issuer))
        assert (unknown.status, unknown.kind) == (401, "unauthenticated")
        assert unknown.elapsed < 2
        assert time.monotonic() - stopped < ttl + max_stale, "the test host is too slow"
        count = len(backend.requests)
        assert count == 3

        # Past both, the issuer's tokens fail closed with 503 auth-unavailable: the token
        # verified before the outage first (no new token has touched the key set since),
        # then new ones.
        await asyncio.sleep(ttl + max_stale + 0.3 - (time.monotonic() - stopped))
        for token in (provider_token, sign(key, op.issuer), provider_token):
            answer = await ask(http, edge, token)
            assert (answer.status, answer.kind) == (503, "auth-unavailable")
            assert answer.elapsed < 2
        assert len(backend.requests) == count

        # The provider returns: tokens work again within a bounded wait.
        await op.restart()

        async def works() -> bool:
            return (await ask(http, edge, sign(key, op.issuer))).status == 200

        await until(works, 8, interval=0.1, what="tokens accepted after the outage")
        assert (await ask(http, edge, provider_token)).status == 200


# ---------------------------------------------------------------------------------------
# Edge started while the provider is down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Blackhole:
    """A port that accepts connections and never answers (a hung provider)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.append(writer)
        with suppress(ConnectionError):
            await reader.read()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._held:
                writer.close()
            await self._server.wait_closed()
            self._server = None


@pytest.mark.parametrize("down", ["refused", "hung"])
async def test_edge_started_while_provider_down(tmp_path: Path, down: str) -> None:
    keys = SigningKeys.generate(ec256=False)
    fetch_timeout = 1.0
    extra = f"fetch_timeout: {fetch_timeout}s, unknown_kid_cooldown: 1s"
    hole = Blackhole()
    try:
        port = await hole.start() if down == "hung" else free_port()
        issuer = f"http://127.0.0.1:{port}"
        token = sign(keys.signer("RS256"), issuer)
        async with (
            recording_backend() as backend,
            running_edge(edge_yaml(issuer, backend.address, extra)) as edge,
            aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http,
        ):
            for _ in range(2):
                answer = await ask(http, edge, token)
                assert (answer.status, answer.kind) == (503, "auth-unavailable")
                # At most one bounded fetch, never a hang; the retry backoff answers the
                # second at once.
                assert answer.elapsed < fetch_timeout * 1.5, answer
            assert backend.requests == []

            await hole.aclose()  # frees the port for the provider
            async with OidcProvider.start(tmp_path, clients=[SVC], keys=keys, port=port) as op:

                async def works() -> bool:
                    return (await ask(http, edge, token)).status == 200

                await until(works, 8, interval=0.1, what="tokens accepted once the provider is up")
                fresh = await op.client_credentials("svc", "svc-secret")
                assert (await ask(http, edge, fresh)).status == 200
            assert [r.header(IDENTITY) for r in backend.requests[-2:]] == ["op/svc", "op/svc"]
    finally:
        await hole.aclose()


# ---------------------------------------------------------------------------------------
# How often the edge asks for keys: counted at a JWKS server of the test's own


@dataclass
class JwksServer:
    keys: SigningKeys
    failing: bool = False  # answer 503 instead of the key set
    hits: list[float] = field(default_factory=list)  # monotonic time of each GET
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def hits_since(self, start: float) -> int:
        return sum(1 for t in self.hits if t >= start)


@asynccontextmanager
async def jwks_server(keys: SigningKeys) -> AsyncIterator[JwksServer]:
    state = JwksServer(keys)

    async def handle(request: web.Request) -> web.Response:
        state.hits.append(time.monotonic())
        if state.failing:
            return web.Response(status=503, text="down")
        return web.json_response(state.keys.public_jwks())

    app = web.Application()
    app.router.add_get("/jwks", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = int(runner.addresses[0][1])
    try:
        yield state
    finally:
        await runner.cleanup()


ISSUER = "https://idp.kedge.test"  # never contacted: the JWKS URL is pinned


@asynccontextmanager
async def pinned_edge(
    server: JwksServer, issuer_extra: str
) -> AsyncIterator[tuple[RunningEdge, RecordingBackend, aiohttp.ClientSession]]:
    extra = f'jwks_url: "{server.url}", {issuer_extra}'
    async with (
        recording_backend() as backend,
        running_edge(edge_yaml(ISSUER, backend.address, extra)) as edge,
        aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http,
    ):
        key = server.keys.keys[0]

        async def ready() -> bool:
            return (await ask(http, edge, sign(key, ISSUER))).status == 200

        await until(ready, 5, what="the edge's first key set")
        yield edge, backend, http


async def test_unknown_kid_burst_is_rate_limited(tmp_path: Path) -> None:
    keys = SigningKeys((rsa_key(),))
    key = keys.keys[0]
    cooldown = 1.0
    async with (
        jwks_server(keys) as server,
        pinned_edge(server, f"jwks_ttl: 5m, unknown_kid_cooldown: {cooldown}s") as (edge, be, http),
    ):
        start = time.monotonic()
        bursts = 0
        while time.monotonic() - start < 3.2:
            forged = [sign(key, ISSUER, kid=f"made-up-{secrets.token_hex(6)}") for _ in range(15)]
            answers = await asyncio.gather(*(ask(http, edge, t) for t in forged))
            assert {(a.status, a.kind) for a in answers} == {(401, "unauthenticated")}
            # Real tokens are not held up by the flood.
            assert (await ask(http, edge, sign(key, ISSUER))).status == 200
            bursts += 1
            await asyncio.sleep(0.05)
        window = time.monotonic() - start
        extra = server.hits_since(start)
        assert bursts >= 10
        # At most one refresh per cooldown (plus the one the window may start with), and at
        # least one: unknown kids do refresh the set.
        assert 1 <= extra <= int(window / cooldown) + 1, (extra, window)
        assert len(be.requests) == bursts + 1

        # A key the provider really added is found by the unknown-kid refresh, within the
        # cooldown.
        added = rsa_key()
        server.keys = SigningKeys((key, added))

        async def added_works() -> bool:
            return (await ask(http, edge, sign(added, ISSUER))).status == 200

        await until(added_works, cooldown + 2, interval=0.1, what="the added key accepted")


async def test_failing_jwks_endpoint_is_retried_with_backoff(tmp_path: Path) -> None:
    """While the endpoint fails, the stale set serves and the edge retries after a growing
    backoff (1 s, 2 s, ...), not on every request that finds the set past its TTL."""
    keys = SigningKeys((rsa_key(),))
    key = keys.keys[0]
    extra = "jwks_ttl: 1s, jwks_max_stale: 1h, unknown_kid_cooldown: 8s"
    async with (
        jwks_server(keys) as server,
        pinned_edge(server, extra) as (edge, _backend, http),
    ):
        server.failing = True
        cached = sign(key, ISSUER)
        assert (await ask(http, edge, cached)).status == 200
        await asyncio.sleep(1.1)  # past jwks_ttl
        start = time.monotonic()
        requests = 0
        while time.monotonic() - start < 2.5:
            # New tokens (cache misses) and a cached one: all served by the stale set.
            for token in (sign(key, ISSUER), cached):
                assert (await ask(http, edge, token)).status == 200
                requests += 1
            await asyncio.sleep(0.01)
        attempts = server.hits_since(start)
        assert requests > 100
        # Attempts at about 0 s, 1 s and 3 s of the window: never one per request.
        assert 1 <= attempts <= 3, attempts

        server.failing = False

        async def refreshed() -> bool:
            await ask(http, edge, sign(key, ISSUER))
            return server.hits_since(start) > attempts and not server.failing

        await until(refreshed, 6, interval=0.1, what="a retry after the endpoint recovered")

"""In-process cost of the auth layer: token verification (cache hit vs a signature check)
and the whole gate per request (anonymous route vs a route needing a permission).

Usage: python bench/bench_auth.py [--quick]
No sockets: the JWKS comes from a fake fetcher, so this measures only CPU on the request
path. The cached path is what a client reusing its token pays on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.auth import auth_section, mint_token, public_jwks, rsa_signing_key

from kedge.core.http.exchange import Exchange, ResponseChannel
from kedge.core.http.messages import RequestHead
from kedge.edge.auth.client_cert import CertIdentities
from kedge.edge.auth.gate import AuthGate
from kedge.edge.auth.jwks import JwksSource
from kedge.edge.auth.verifier import TokenVerifier
from kedge.edge.config_parser import parse_edge_config

ISSUER = "http://127.0.0.1:1"


class StaticFetcher:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    async def get_json(self, url: str) -> object:
        return self.document

    async def aclose(self) -> None:
        pass


def _per_call_us(run: Callable[[], Awaitable[object]], n: int) -> float:
    async def loop() -> float:
        for _ in range(min(n, 200)):  # warm-up
            await run()
        start = time.perf_counter()
        for _ in range(n):
            await run()
        return (time.perf_counter() - start) / n * 1e6

    return asyncio.run(loop())


def _exchange(token: str | None, path: str) -> Exchange:
    headers = [(b"host", b"bench.test"), (b"user-agent", b"wrk")]
    if token is not None:
        headers.append((b"proxy-authorization", b"Bearer " + token.encode()))
    head = RequestHead(
        "GET",
        path.encode(),
        "1.1",
        headers,
        scheme="http",
        host="bench.test",
        port=80,
        path=path,
        query="",
        absolute_form=False,
    )
    return Exchange(
        head,
        None,
        cast(ResponseChannel, None),
        listener="plain",
        client_ip="127.0.0.1",
        client_port=1,
        request_id=b"r",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true")
    n = 2000 if p.parse_args().quick else 20000
    key = rsa_signing_key()
    token = mint_token(key, ISSUER)
    section = auth_section(ISSUER)
    config = parse_edge_config(
        {
            "listeners": [{"name": "plain", "address": "127.0.0.1:0"}],
            "backends": [{"name": "b", "resolver": {"static": {"endpoints": ["127.0.0.1:1"]}}}],
            "routes": [
                {"name": "open", "backend": "b", "auth": {"anonymous": True}},
                {"name": "read", "backend": "b", "auth": {"permissions": ["bench.read"]}},
            ],
            "auth": section,
        },
        "<bench>",
    )
    assert config.auth is not None
    issuer = config.auth.issuers[0]

    def verifier(cache: int) -> TokenVerifier:
        return TokenVerifier(
            [JwksSource(issuer, StaticFetcher(public_jwks(key)))], cache_size=cache
        )

    cached, uncached = verifier(10000), verifier(0)
    rows = [
        (
            "verify, cached token (every request after the first)",
            _per_call_us(lambda: cached.verify(token), n),
        ),
        (
            "verify, RS256 signature checked (first use of a token)",
            _per_call_us(lambda: uncached.verify(token), max(n // 10, 200)),
        ),
    ]
    gate = AuthGate(config, cached, CertIdentities(), lambda ex, verdict, reason: None)
    anonymous, permission = config.routes[0].auth, config.routes[1].auth
    rows.append(
        (
            "gate, anonymous route",
            _per_call_us(lambda: gate.admit(_exchange(None, "/"), anonymous), n),
        )
    )
    rows.append(
        (
            "gate, route needing a permission, cached token",
            _per_call_us(lambda: gate.admit(_exchange(token, "/"), permission), n),
        )
    )
    rows.append(
        (
            "building the test exchange alone (subtract from gate rows)",
            _per_call_us(lambda: asyncio.sleep(0, _exchange(token, "/")), n),
        )
    )
    width = max(len(r[0]) for r in rows)
    for name, us in rows:
        print(f"  {name:<{width}}  {us:8.2f} us")


if __name__ == "__main__":
    main()

"""The dialer: kedge's mapping and auth as a library (HTTP clients and grpc.aio channels).

Configured from the same YAML as winch (configs/winch.yaml)::

    from kedge.dialer import Dialer, aiohttp_session, grpc_channel
    from kedge.dialer.http_httpx import KedgeTransport  # needs httpx[http2]

    dialer = Dialer.from_file("winch.yaml")
    async with aiohttp_session(dialer) as session:  # a plain aiohttp.ClientSession
        async with session.get("http://web.ns.cluster-a.internal:8080/") as resp:
            print(resp.status, await resp.text())
    async with httpx.AsyncClient(transport=KedgeTransport(dialer)) as client:
        print((await client.get("http://web.ns.cluster-a.internal:8080/")).text)
    async with grpc_channel(dialer, "greeter.ns.cluster-a.internal:50051") as channel:
        reply = await GreeterStub(channel).SayHello(HelloRequest(name="me"))
    await dialer.aclose()

`grpc_channel` (grpcio) and `KedgeTransport` (httpx) are imported on first use, so neither
package is needed by callers that do not use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kedge.dialer.config import DialerConfig
from kedge.dialer.config_parser import load_dialer_config, parse_dialer_config_text
from kedge.dialer.dialer import Dialer, DialPlan
from kedge.dialer.errors import NotMapped, RedirectRefused
from kedge.dialer.http_aiohttp import aiohttp_session

if TYPE_CHECKING:
    from kedge.dialer.grpc_aio import grpc_channel
    from kedge.dialer.http_httpx import KedgeTransport

__all__ = [
    "DialPlan",
    "Dialer",
    "DialerConfig",
    "KedgeTransport",
    "NotMapped",
    "RedirectRefused",
    "aiohttp_session",
    "grpc_channel",
    "load_dialer_config",
    "parse_dialer_config_text",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the optional dependencies load only when their helper is first used.
    if name == "grpc_channel":
        from kedge.dialer.grpc_aio import grpc_channel

        return grpc_channel
    if name == "KedgeTransport":
        from kedge.dialer.http_httpx import KedgeTransport

        return KedgeTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

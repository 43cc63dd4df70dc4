"""A tiny authoritative DNS server for tests: UDP on 127.0.0.1, records settable at runtime.

    async with DnsTestServer() as server:
        server.set_a("svc.test", ["10.0.0.1"], ttl=30)
        server.set_mode("servfail", name="svc.test", rdtype="AAAA")
        ... DnsResolverConfig(name="svc.test", port=80, nameservers=(server.address,)) ...
        assert server.count("svc.test", "A") == 1

A name with records of another type answers NOERROR with no records (NODATA); an unknown
name answers NXDOMAIN; both carry an SOA whose TTL and MINIMUM are `negative_ttl`
(RFC 2308 §3), so resolvers see a negative TTL. Modes: "answer" (default), "servfail",
"drop" (no reply at all, the client times out), per server, per name or per name and type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Literal, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from kedge.edge.config import Address

__all__ = ["DnsTestServer", "Mode"]

Mode = Literal["answer", "servfail", "drop"]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsTestServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._server.respond(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsTestServer:
    def __init__(self, host: str = "127.0.0.1", negative_ttl: int = 30) -> None:
        self.host = host
        self.negative_ttl = negative_ttl
        self.mode: Mode = "answer"
        self.queries: list[tuple[str, str]] = []  # (name without trailing dot, type), in order
        self._records: dict[tuple[dns.name.Name, str], tuple[int, tuple[str, ...]]] = {}
        self._modes: dict[tuple[dns.name.Name, str | None], Mode] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0)
        )
        self._transport = transport
        self._port = int(transport.get_extra_info("sockname")[1])

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> DnsTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> Address:
        return Address(self.host, self._port)

    # --- records and behaviour ---------------------------------------------------------------

    def set_records(self, name: str, rdtype: str, rdatas: Iterable[str], ttl: int = 60) -> None:
        """Replace the `rdtype` records of `name` (presentation form); empty removes them."""
        key = (_name(name), rdtype.upper())
        texts = tuple(rdatas)
        if texts:
            self._records[key] = (ttl, texts)
        else:
            self._records.pop(key, None)

    def set_a(self, name: str, ips: Iterable[str], ttl: int = 60) -> None:
        self.set_records(name, "A", ips, ttl)

    def set_aaaa(self, name: str, ips: Iterable[str], ttl: int = 60) -> None:
        self.set_records(name, "AAAA", ips, ttl)

    def set_srv(
        self, name: str, records: Sequence[tuple[int, int, int, str]], ttl: int = 60
    ) -> None:
        """SRV records as (priority, weight, port, target)."""
        texts = (f"{p} {w} {port} {_name(target)}" for p, w, port, target in records)
        self.set_records(name, "SRV", texts, ttl)

    def remove(self, name: str) -> None:
        """Remove every record of `name`: it then answers NXDOMAIN."""
        owner = _name(name)
        for key in [k for k in self._records if k[0] == owner]:
            del self._records[key]

    def set_mode(self, mode: Mode, name: str | None = None, rdtype: str | None = None) -> None:
        """How to answer: for every query, for `name`, or for `name` and `rdtype`."""
        if name is None:
            self.mode = mode
        else:
            self._modes[(_name(name), rdtype.upper() if rdtype else None)] = mode

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """Queries received (including dropped ones), optionally for one name and type."""
        wanted = _name(name).to_text(omit_final_dot=True) if name else None
        return sum(
            1
            for n, t in self.queries
            if (wanted is None or n == wanted) and (rdtype is None or t == rdtype.upper())
        )

    # --- answering -----------------------------------------------------------------------

    def respond(self, wire: bytes) -> bytes | None:
        """The reply to one query datagram, or None to drop it."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) != 1:
            return None
        question = query.question[0]
        qname = question.name
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((qname.to_text(omit_final_dot=True).lower(), qtype))
        mode = self._modes.get((qname, qtype)) or self._modes.get((qname, None)) or self.mode
        if mode == "drop":
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        if mode == "servfail":
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply.to_wire()
        found = self._records.get((qname, qtype))
        if found is not None:
            ttl, texts = found
            reply.answer.append(
                dns.rrset.from_text_list(qname, ttl, dns.rdataclass.IN, qtype, list(texts))
            )
            return reply.to_wire()
        if not any(owner == qname for owner, _ in self._records):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        # The zone is the name's top-level domain; its SOA gives the negative TTL.
        zone = dns.name.Name(qname.labels[-2:]) if len(qname.labels) >= 2 else dns.name.root
        soa = f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {self.negative_ttl}"
        reply.authority.append(
            dns.rrset.from_text(zone, self.negative_ttl, dns.rdataclass.IN, "SOA", soa)
        )
        return reply.to_wire()


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text.lower())

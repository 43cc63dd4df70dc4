"""SrvResolver: SRV lookup (RFC 2782), then every A and AAAA address of every target.

kEdge used only the first address of each target; here each address of each target is an
endpoint. The SRV port (or `port_override`) is the endpoint's port, the SRV weight its
weight (at least 1: balancers treat weight 0 as "never"), and the SRV priority becomes
the label ("priority", "<n>") for locality-aware balancing.

Failure policy is `PollingResolver`'s (see `kedge.edge.discovery.dns`), plus:
- a target "." (RFC 2782: the service is decidedly not available) is skipped;
- a target that does not exist (NXDOMAIN) is skipped and logged: it is an authoritative
  answer about that target, and failing the whole lookup would freeze the set for good;
- a target whose lookup fails transiently (timeout, SERVFAIL) fails the whole lookup, so
  the last set is kept rather than losing that target's endpoints.
The TTL is the smallest of the SRV answer's and the address answers' TTLs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from kedge.edge.config import Address, SrvResolverConfig
from kedge.edge.discovery.dns import (
    DnsAnswer,
    LookupResult,
    NameNotFound,
    PollingResolver,
    Sleep,
    answers_ttl,
)
from kedge.edge.discovery.model import Endpoint

__all__ = ["SrvRecord", "SrvResolver", "parse_srv"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # absolute, with the trailing dot; "." means "no service"


def parse_srv(text: str) -> SrvRecord:
    """An SRV rdata in presentation form: "priority weight port target"."""
    priority, weight, port, target = text.split()
    return SrvRecord(int(priority), int(weight), int(port), target.lower())


class SrvResolver(PollingResolver):
    def __init__(
        self,
        config: SrvResolverConfig,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            name=config.name,
            min_ttl=config.min_ttl,
            max_ttl=config.max_ttl,
            nameservers=config.nameservers,
            timeout=timeout,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        self.config = config

    async def lookup(self) -> LookupResult:
        srv = await self.query(self.config.name, "SRV")
        # Lowest priority first, then heaviest: when two records lead to the same ip:port,
        # the first one wins.
        records = sorted(
            (parse_srv(text) for text in srv.records), key=lambda r: (r.priority, -r.weight)
        )
        targets = sorted({r.target for r in records if r.target != "."})
        found = await asyncio.gather(*(self._addresses(t) for t in targets), return_exceptions=True)
        addresses: dict[str, list[DnsAnswer]] = {}
        for target, result in zip(targets, found, strict=True):
            if isinstance(result, NameNotFound):
                _log.warning("resolver for %s: SRV target %s: %s", self.name, target, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                addresses[target] = result
        endpoints: dict[str, Endpoint] = {}
        for r in records:
            port = r.port if self.config.port_override is None else self.config.port_override
            for answer in addresses.get(r.target, ()):
                for ip in answer.records:
                    e = Endpoint(
                        Address(ip, port), (("priority", str(r.priority)),), max(1, r.weight)
                    )
                    endpoints.setdefault(e.key, e)
        every_answer = [srv, *(a for answers in addresses.values() for a in answers)]
        return LookupResult.of(endpoints.values(), answers_ttl(every_answer))

    async def _addresses(self, target: str) -> list[DnsAnswer]:
        return [await self.query(target, "A"), await self.query(target, "AAAA")]

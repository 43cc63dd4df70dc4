"""DnsResolver: A/AAAA lookups re-resolved when the TTL ends, plus the polling loop SRV shares.

kEdge polled DNS every 5 s whatever the TTL, and a TTL of 0 made it query in a tight loop.
Here the next lookup happens after the answer's TTL, clamped to [min_ttl, max_ttl]
(RFC 1035 §3.2.1: the TTL is how long an answer may be cached), and never sooner than
a hard floor of `MIN_DELAY` even if the config's min_ttl is 0.

Failure policy (the `Resolver` contract: a lookup hiccup must not empty a backend):

- NXDOMAIN, SERVFAIL / REFUSED from every nameserver, a timeout, a socket error: the
  last published set is kept, `last_error` says why, and the lookup is retried after a
  jittered exponential backoff that starts at min_ttl and is capped at max_ttl.
- An authoritative empty answer (NOERROR, no records; RFC 2308 §2.2 "NODATA"):
  * before anything was published, it is a real answer and publishes an empty `Reset`,
    so the backend knows resolution finished and answers "no endpoints";
  * after a non-empty set was published, it is treated like an error: the last set is
    kept, `last_error` says so and the backoff applies. A record set that vanishes is far
    more often a DNS mishap (a half-applied zone change, a deleted record while a service
    is redeployed) than an intended scale to zero, and connection failures to stale
    endpoints are recoverable where an empty backend is an outage.
- Any other exception from a lookup is logged with its traceback and handled like a
  transient failure: a bug must not stop a backend's discovery for good.

Only a changed set is published, as one `Reset`. Each family's answer gets its own query;
if any family fails, the whole lookup fails (a partial answer would drop endpoints).
Names are looked up as absolute names: no search list (the config names the record).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from kedge.edge.config import Address, DnsResolverConfig
from kedge.edge.discovery.model import Endpoint, EndpointSet, Publish, Reset

__all__ = [
    "MIN_DELAY",
    "DnsAnswer",
    "DnsResolver",
    "LookupFailed",
    "LookupResult",
    "NameNotFound",
    "PollingResolver",
    "Sleep",
    "answers_ttl",
    "backoff_delay",
    "make_dns_resolver",
    "query",
    "refresh_delay",
]

_log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Whatever the config says, never query more often than this (guards against TTL 0 with
# min_ttl 0, the kEdge bug that hammered DNS).
MIN_DELAY = 0.05


def refresh_delay(ttl: float, min_ttl: float, max_ttl: float) -> float:
    """Seconds until the next lookup after a good answer: the TTL within [min_ttl, max_ttl]."""
    return max(MIN_DELAY, min(max(ttl, min_ttl), max_ttl))


def backoff_delay(failures: int, min_ttl: float, max_ttl: float, jitter: float) -> float:
    """Seconds until the retry after `failures` consecutive failures (1 for the first).

    Exponential from min_ttl, capped at max_ttl; `jitter` in [0, 1) spreads the retry over
    the upper half of the window ("equal jitter") so replicas do not retry in lockstep,
    without ever going below min_ttl.
    """
    base = max(min_ttl, MIN_DELAY)
    ceiling = max(min(base * 2.0 ** min(failures - 1, 32), max_ttl), base)
    low = max(base, ceiling / 2)
    return low + (ceiling - low) * jitter


class LookupFailed(Exception):
    """A transient lookup failure: keep the last set and retry later."""


class NameNotFound(LookupFailed):
    """NXDOMAIN: the name does not exist (RFC 8020: nor does anything under it)."""


@dataclass(frozen=True, slots=True)
class LookupResult:
    """One lookup's endpoints (sorted by key, unique) and how long they may be cached."""

    endpoints: tuple[Endpoint, ...]
    ttl: float

    @staticmethod
    def of(endpoints: Iterable[Endpoint], ttl: float) -> LookupResult:
        return LookupResult(EndpointSet.of(endpoints).endpoints, ttl)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The records of one query (empty for NODATA) and their TTL (the negative TTL if empty)."""

    records: tuple[str, ...]
    ttl: float


def make_dns_resolver(nameservers: Sequence[Address]) -> dns.asyncresolver.Resolver:
    """A dnspython resolver on the given nameservers (any port), or the system's if empty.

    It has no cache (dnspython's default), so every lookup sees the current records and TTLs.
    """
    if not nameservers:
        return dns.asyncresolver.Resolver()  # /etc/resolv.conf
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(a.host, a.port) for a in nameservers]
    return resolver


async def query(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str, lifetime: float
) -> DnsAnswer:
    """One query, with dnspython's exceptions translated into `LookupFailed`."""
    try:
        answer = await resolver.resolve(
            name, rdtype, raise_on_no_answer=False, lifetime=lifetime, search=False
        )
    except dns.resolver.NXDOMAIN as exc:
        raise NameNotFound(f"{name}: no such name (NXDOMAIN)") from exc
    except dns.resolver.LifetimeTimeout as exc:
        raise LookupFailed(f"{name} {rdtype}: no answer within {lifetime:g}s") from exc
    except dns.resolver.NoNameservers as exc:
        raise LookupFailed(f"{name} {rdtype}: every nameserver failed (SERVFAIL/REFUSED)") from exc
    except (dns.exception.DNSException, OSError) as exc:
        raise LookupFailed(f"{name} {rdtype}: {type(exc).__name__}: {exc}") from exc
    records = tuple(rd.to_text() for rd in answer.rrset) if answer.rrset is not None else ()
    # The smallest TTL along the CNAME chain, or the negative TTL (RFC 2308 §5) if empty.
    return DnsAnswer(records, float(answer.chaining_result.minimum_ttl))


def answers_ttl(answers: Iterable[DnsAnswer]) -> float:
    """The TTL of a lookup made of several queries.

    The smallest TTL among answers with records; only if none has records, the smallest
    negative TTL. (An IPv4-only name's AAAA NODATA must not shorten the A records' TTL.)
    """
    answers = list(answers)
    positive = [a.ttl for a in answers if a.records]
    return min(positive or [a.ttl for a in answers])


class PollingResolver(ABC):
    """The loop shared by DNS and SRV: look up, publish if changed, wait for TTL or backoff.

    Subclasses implement `lookup`, raising `LookupFailed` for transient failures.
    """

    def __init__(
        self,
        *,
        name: str,
        min_ttl: float,
        max_ttl: float,
        nameservers: Sequence[Address],
        timeout: float,
        clock: Callable[[], float],
        sleep: Sleep,
        rng: random.Random | None,
    ) -> None:
        self.name = name
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.timeout = timeout
        self._nameservers = tuple(nameservers)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._dns: dns.asyncresolver.Resolver | None = None
        self._failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None  # clock() of the last good lookup
        self.published: tuple[Endpoint, ...] | None = None  # None: nothing published yet

    @abstractmethod
    async def lookup(self) -> LookupResult: ...

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        if self._dns is None:
            try:
                self._dns = make_dns_resolver(self._nameservers)
            except (dns.exception.DNSException, OSError) as exc:
                raise LookupFailed(f"cannot configure the DNS resolver: {exc}") from exc
        return await query(self._dns, name, rdtype, self.timeout)

    async def run(self, publish: Publish) -> None:
        while True:
            await self._sleep(await self.step(publish))

    async def step(self, publish: Publish) -> float:
        """One lookup and its publication; returns the seconds to wait before the next."""
        try:
            result = await self.lookup()
        except LookupFailed as exc:
            return self._failed(str(exc))
        except Exception as exc:
            _log.exception("resolver for %s: unexpected error", self.name)
            return self._failed(f"unexpected error: {type(exc).__name__}: {exc}")
        if not result.endpoints and self.published:
            return self._failed(
                f"{self.name}: answer has no addresses; keeping the last "
                f"{len(self.published)} endpoints"
            )
        if self.last_error is not None:
            _log.info("resolver for %s: recovered", self.name)
        self._failures = 0
        self.last_error = None
        self.last_success_at = self._clock()
        if result.endpoints != self.published:
            _log.info(
                "resolver for %s: %d endpoints: %s",
                self.name,
                len(result.endpoints),
                ", ".join(e.key for e in result.endpoints),
            )
            self.published = result.endpoints
            publish(Reset(result.endpoints))
        return refresh_delay(result.ttl, self.min_ttl, self.max_ttl)

    def _failed(self, error: str) -> float:
        self._failures += 1
        self.last_error = error
        delay = backoff_delay(self._failures, self.min_ttl, self.max_ttl, self._rng.random())
        _log.warning(
            "resolver for %s: %s (failure %d, keeping %s endpoints, retry in %.2fs)",
            self.name,
            error,
            self._failures,
            "no" if self.published is None else len(self.published),
            delay,
        )
        return delay


class DnsResolver(PollingResolver):
    """A and/or AAAA records of `config.name`, each address an endpoint on `config.port`."""

    def __init__(
        self,
        config: DnsResolverConfig,
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
        answers = [await self.query(self.config.name, family) for family in self.config.families]
        endpoints = (Endpoint(Address(ip, self.config.port)) for a in answers for ip in a.records)
        return LookupResult.of(endpoints, answers_ttl(answers))

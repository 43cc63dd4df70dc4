"""DNS, SRV and static resolvers against a real UDP DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

from kedge.edge.config import (
    Address,
    DnsResolverConfig,
    SrvResolverConfig,
    StaticEndpoint,
    StaticResolverConfig,
)
from kedge.edge.discovery.dns import MIN_DELAY, DnsResolver, PollingResolver, Sleep
from kedge.edge.discovery.factory import make_resolver
from kedge.edge.discovery.model import Endpoint, Reset, Update
from kedge.edge.discovery.srv import SrvResolver
from kedge.edge.discovery.static import StaticResolver
from tests.support.dns_server import DnsTestServer

NAME = "svc.test"
SRV_NAME = "_http._tcp.svc.test"


@pytest.fixture
async def server() -> AsyncIterator[DnsTestServer]:
    async with DnsTestServer(negative_ttl=900) as s:
        yield s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    """Injected sleep: records each delay and parks the caller until `release`."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._releases: asyncio.Queue[None] = asyncio.Queue()
        self._slept = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._slept.set()
        await self._releases.get()

    def release(self) -> None:
        self._releases.put_nowait(None)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.delays) < count:
                self._slept.clear()
                await self._slept.wait()


def dns_resolver(
    server: DnsTestServer,
    *,
    families: tuple[Literal["A", "AAAA"], ...] = ("A", "AAAA"),
    min_ttl: float = 5.0,
    max_ttl: float = 300.0,
    timeout: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> DnsResolver:
    config = DnsResolverConfig(
        name=NAME,
        port=8080,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        nameservers=(server.address,),
        families=families,
    )
    return DnsResolver(config, timeout=timeout, clock=clock, sleep=sleep, rng=rng)


def srv_resolver(server: DnsTestServer, port_override: int | None = None) -> SrvResolver:
    config = SrvResolverConfig(
        name=SRV_NAME, port_override=port_override, nameservers=(server.address,)
    )
    return SrvResolver(config, rng=random.Random(1))


def keys(update: Update) -> list[str]:
    assert isinstance(update, Reset)
    return [e.key for e in update.endpoints]


# --- DNS: answers, TTL, changes ----------------------------------------------------------


async def test_a_records_become_endpoints_on_the_configured_port(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.2", "10.0.0.1"], ttl=30)
    published: list[Update] = []
    delay = await dns_resolver(server, families=("A",)).step(published.append)
    assert delay == 30
    assert published == [
        Reset((Endpoint(Address("10.0.0.1", 8080)), Endpoint(Address("10.0.0.2", 8080))))
    ]
    assert server.count(NAME, "A") == 1
    assert server.count(NAME, "AAAA") == 0


@pytest.mark.parametrize(
    ("ttl", "min_ttl", "max_ttl", "expected"),
    [
        (30, 5.0, 300.0, 30.0),  # inside the bounds: the TTL itself
        (0, 5.0, 300.0, 5.0),  # TTL 0 (kEdge's hammering case): the floor
        (2, 5.0, 300.0, 5.0),
        (86400, 5.0, 300.0, 300.0),  # long TTL: the ceiling
        (0, 0.0, 300.0, MIN_DELAY),  # a zero floor still never means a tight loop
    ],
)
async def test_next_lookup_honours_the_ttl_within_bounds(
    server: DnsTestServer, ttl: int, min_ttl: float, max_ttl: float, expected: float
) -> None:
    server.set_a(NAME, ["10.0.0.1"], ttl=ttl)
    resolver = dns_resolver(server, families=("A",), min_ttl=min_ttl, max_ttl=max_ttl)
    assert await resolver.step(lambda u: None) == expected


async def test_ipv4_only_name_is_not_refreshed_at_the_aaaa_negative_ttl(
    server: DnsTestServer,
) -> None:
    server.negative_ttl = 10
    server.set_a(NAME, ["10.0.0.1"], ttl=120)
    assert await dns_resolver(server).step(lambda u: None) == 120


async def test_aaaa_and_both_families(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"], ttl=60)
    server.set_aaaa(NAME, ["fd00::1", "fd00::2"], ttl=40)
    only_v6: list[Update] = []
    await dns_resolver(server, families=("AAAA",)).step(only_v6.append)
    assert [keys(u) for u in only_v6] == [["[fd00::1]:8080", "[fd00::2]:8080"]]
    both: list[Update] = []
    assert await dns_resolver(server).step(both.append) == 40  # the smaller TTL
    assert [keys(u) for u in both] == [["10.0.0.1:8080", "[fd00::1]:8080", "[fd00::2]:8080"]]
    assert server.count(NAME, "AAAA") == 2


async def test_only_changes_are_published(server: DnsTestServer) -> None:
    clock = FakeClock()
    server.set_a(NAME, ["10.0.0.1", "10.0.0.2"])
    resolver = dns_resolver(server, families=("A",), clock=clock)
    published: list[Update] = []
    await resolver.step(published.append)
    clock.now = 1060.0
    await resolver.step(published.append)  # same answer (order may differ): nothing new
    assert len(published) == 1
    assert resolver.last_success_at == 1060.0
    server.set_a(NAME, ["10.0.0.2", "10.0.0.3"])
    await resolver.step(published.append)
    assert [keys(u) for u in published] == [
        ["10.0.0.1:8080", "10.0.0.2:8080"],
        ["10.0.0.2:8080", "10.0.0.3:8080"],
    ]
    assert server.count(NAME, "A") == 3  # one query per lookup: no retries, no hammering


# --- DNS: failures keep the last set -----------------------------------------------------


def assert_backoff(delays: list[float], min_ttl: float, max_ttl: float) -> None:
    for n, delay in enumerate(delays, start=1):
        ceiling = min(min_ttl * 2 ** (n - 1), max_ttl)
        assert max(min_ttl, ceiling / 2) <= delay <= ceiling, (n, delay)


async def test_servfail_keeps_the_last_set_and_backs_off(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"], ttl=30)
    resolver = dns_resolver(server, families=("A",), min_ttl=5.0, max_ttl=60.0)
    published: list[Update] = []
    await resolver.step(published.append)
    server.set_mode("servfail")
    delays = [await resolver.step(published.append) for _ in range(6)]
    assert len(published) == 1
    assert resolver.published == (Endpoint(Address("10.0.0.1", 8080)),)
    assert resolver.last_error is not None and "SERVFAIL" in resolver.last_error
    assert_backoff(delays, 5.0, 60.0)
    assert delays[0] == 5.0 and max(delays) <= 60.0 and delays[-1] >= 30.0
    server.set_mode("answer")
    assert await resolver.step(published.append) == 30
    assert resolver.last_error is None
    assert len(published) == 1  # recovered with the same answer: nothing to publish


async def test_servfail_for_one_family_keeps_the_whole_set(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"])
    server.set_aaaa(NAME, ["fd00::1"])
    resolver = dns_resolver(server)
    published: list[Update] = []
    await resolver.step(published.append)
    server.set_a(NAME, ["10.0.0.9"])
    server.set_mode("servfail", name=NAME, rdtype="AAAA")
    await resolver.step(published.append)
    assert [keys(u) for u in published] == [["10.0.0.1:8080", "[fd00::1]:8080"]]
    assert resolver.last_error is not None and "AAAA" in resolver.last_error


async def test_timeout_keeps_the_last_set(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"])
    resolver = dns_resolver(server, families=("A",), timeout=0.2)
    published: list[Update] = []
    await resolver.step(published.append)
    server.set_mode("drop")
    assert await resolver.step(published.append) == 5.0
    assert len(published) == 1
    assert resolver.last_error == "svc.test A: no answer within 0.2s"


async def test_nxdomain_keeps_the_last_set(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"])
    resolver = dns_resolver(server, families=("A",))
    published: list[Update] = []
    await resolver.step(published.append)
    server.remove(NAME)
    await resolver.step(published.append)
    assert len(published) == 1
    assert resolver.last_error is not None and "NXDOMAIN" in resolver.last_error


async def test_nxdomain_before_any_answer_publishes_nothing(server: DnsTestServer) -> None:
    resolver = dns_resolver(server, families=("A",))
    published: list[Update] = []
    await resolver.step(published.append)
    assert published == []
    assert resolver.published is None


async def test_empty_answer_publishes_once_then_never_empties_a_set(
    server: DnsTestServer,
) -> None:
    server.set_aaaa(NAME, ["fd00::1"])  # the name exists, A is NODATA
    resolver = dns_resolver(server, families=("A",))
    published: list[Update] = []
    assert await resolver.step(published.append) == 300  # negative TTL 900, capped
    assert published == [Reset(())]
    await resolver.step(published.append)
    assert len(published) == 1
    server.set_a(NAME, ["10.0.0.1"])
    await resolver.step(published.append)
    server.set_a(NAME, [])
    assert await resolver.step(published.append) == 5.0  # treated as a failure: backoff
    assert [keys(u) for u in published] == [[], ["10.0.0.1:8080"]]
    assert resolver.last_error is not None and "no addresses" in resolver.last_error


# --- DNS: the run loop ---------------------------------------------------------------------


async def test_run_loop_sleeps_for_ttl_and_backoff_and_stops_when_cancelled(
    server: DnsTestServer,
) -> None:
    server.set_a(NAME, ["10.0.0.1"], ttl=42)
    sleep = FakeSleep()
    resolver = dns_resolver(server, families=("A",), sleep=sleep, rng=random.Random(7))
    published: list[Update] = []
    task = asyncio.create_task(resolver.run(published.append))
    try:
        await sleep.wait_for(1)
        assert sleep.delays == [42]
        assert [keys(u) for u in published] == [["10.0.0.1:8080"]]
        server.set_a(NAME, ["10.0.0.2"], ttl=7)
        sleep.release()
        await sleep.wait_for(2)
        assert sleep.delays == [42, 7]
        server.set_mode("servfail")
        sleep.release()
        await sleep.wait_for(3)
        sleep.release()
        await sleep.wait_for(4)
        assert_backoff(sleep.delays[2:], 5.0, 300.0)
        assert [keys(u) for u in published] == [["10.0.0.1:8080"], ["10.0.0.2:8080"]]
        assert server.count(NAME, "A") == 4
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_ttl_zero_with_real_time_respects_the_floor(server: DnsTestServer) -> None:
    server.set_a(NAME, ["10.0.0.1"], ttl=0)
    resolver = dns_resolver(server, families=("A",), min_ttl=0.1)
    task = asyncio.create_task(resolver.run(lambda u: None))
    await asyncio.sleep(0.55)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # At most one lookup per 0.1 s (kEdge's TTL-0 bug queried in a tight loop).
    assert 2 <= server.count(NAME, "A") <= 6


# --- SRV -----------------------------------------------------------------------------------


async def test_srv_targets_all_addresses_weights_and_priorities(server: DnsTestServer) -> None:
    server.set_srv(
        SRV_NAME,
        [(10, 5, 8080, "a.svc.test"), (10, 0, 8081, "b.svc.test"), (20, 3, 9090, "c.svc.test")],
        ttl=60,
    )
    server.set_a("a.svc.test", ["10.0.0.1", "10.0.0.2"], ttl=30)
    server.set_aaaa("b.svc.test", ["fd00::b"], ttl=45)
    server.set_a("c.svc.test", ["10.0.0.3"], ttl=120)
    published: list[Update] = []
    assert await srv_resolver(server).step(published.append) == 30  # min of SRV and A/AAAA
    p10, p20 = (("priority", "10"),), (("priority", "20"),)
    assert published == [
        Reset(
            (
                Endpoint(Address("10.0.0.1", 8080), p10, 5),
                Endpoint(Address("10.0.0.2", 8080), p10, 5),
                Endpoint(Address("10.0.0.3", 9090), p20, 3),
                Endpoint(Address("fd00::b", 8081), p10, 1),  # weight 0 -> 1
            )
        )
    ]


async def test_srv_port_override(server: DnsTestServer) -> None:
    server.set_srv(SRV_NAME, [(0, 1, 8080, "a.svc.test")])
    server.set_a("a.svc.test", ["10.0.0.1"])
    published: list[Update] = []
    await srv_resolver(server, port_override=443).step(published.append)
    assert [keys(u) for u in published] == [["10.0.0.1:443"]]


async def test_srv_skips_dot_and_missing_targets(server: DnsTestServer) -> None:
    server.set_srv(
        SRV_NAME, [(0, 1, 80, "."), (0, 1, 80, "gone.svc.test"), (0, 1, 80, "a.svc.test")]
    )
    server.set_a("a.svc.test", ["10.0.0.1"])
    resolver = srv_resolver(server)
    published: list[Update] = []
    await resolver.step(published.append)
    assert [keys(u) for u in published] == [["10.0.0.1:80"]]
    assert resolver.last_error is None
    assert server.count(".") == 0


async def test_srv_duplicate_address_keeps_the_best_priority(server: DnsTestServer) -> None:
    server.set_srv(SRV_NAME, [(20, 9, 80, "b.svc.test"), (10, 2, 80, "a.svc.test")])
    server.set_a("a.svc.test", ["10.0.0.1"])
    server.set_a("b.svc.test", ["10.0.0.1"])
    published: list[Update] = []
    await srv_resolver(server).step(published.append)
    assert published == [Reset((Endpoint(Address("10.0.0.1", 80), (("priority", "10"),), 2),))]


async def test_srv_target_servfail_keeps_the_last_set(server: DnsTestServer) -> None:
    server.set_srv(SRV_NAME, [(0, 1, 80, "a.svc.test"), (0, 1, 80, "b.svc.test")])
    server.set_a("a.svc.test", ["10.0.0.1"])
    server.set_a("b.svc.test", ["10.0.0.2"])
    resolver = srv_resolver(server)
    published: list[Update] = []
    await resolver.step(published.append)
    server.set_mode("servfail", name="b.svc.test")
    assert await resolver.step(published.append) == 5.0
    assert [keys(u) for u in published] == [["10.0.0.1:80", "10.0.0.2:80"]]
    assert resolver.last_error is not None and "b.svc.test" in resolver.last_error


async def test_srv_servfail_and_recovery(server: DnsTestServer) -> None:
    server.set_srv(SRV_NAME, [(0, 1, 80, "a.svc.test")], ttl=20)
    server.set_a("a.svc.test", ["10.0.0.1"], ttl=20)
    resolver = srv_resolver(server)
    published: list[Update] = []
    await resolver.step(published.append)
    server.set_mode("servfail", name=SRV_NAME)
    await resolver.step(published.append)
    assert resolver.last_error is not None
    server.set_mode("answer", name=SRV_NAME)
    server.set_a("a.svc.test", ["10.0.0.1", "10.0.0.5"], ttl=20)
    assert await resolver.step(published.append) == 20
    assert [keys(u) for u in published] == [["10.0.0.1:80"], ["10.0.0.1:80", "10.0.0.5:80"]]
    assert resolver.last_error is None


# --- static and factory --------------------------------------------------------------------


async def test_static_resolver_publishes_once_and_waits() -> None:
    config = StaticResolverConfig(
        (
            StaticEndpoint(Address("10.0.0.1", 80), (("zone", "a"),), 3),
            StaticEndpoint(Address("10.0.0.2", 80)),
        )
    )
    published: list[Update] = []
    task = asyncio.create_task(StaticResolver(config).run(published.append))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert published == [
        Reset(
            (
                Endpoint(Address("10.0.0.1", 80), (("zone", "a"),), 3),
                Endpoint(Address("10.0.0.2", 80)),
            )
        )
    ]


def test_factory_builds_the_resolver_for_each_config() -> None:
    static = make_resolver(StaticResolverConfig(()))
    dns_ = make_resolver(DnsResolverConfig(name=NAME, port=80))
    srv = make_resolver(SrvResolverConfig(name=SRV_NAME))
    assert isinstance(static, StaticResolver)
    assert isinstance(dns_, DnsResolver) and dns_.config.name == NAME
    assert isinstance(srv, SrvResolver) and srv.config.name == SRV_NAME
    assert isinstance(srv, PollingResolver)

"""Route table micro-benchmark: compile time and ns per lookup for 10, 1k and 100k routes.

Run from the repository root: `python bench/bench_route_table.py [--lookups N]`.
The mix is what a large edge config looks like: mostly exact hosts with a path rule or two
(some with a header condition), about 10% "*.suffix" wildcards and a few host-less routes.
Lookups are: an exact-host hit, a wildcard hit (two labels under a wildcard suffix) and a
miss (unknown host, which still has to check the wildcard suffixes and host-less routes).
Times include the Python loop; each figure is the best of several repeats.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import kedge  # noqa: F401
except ModuleNotFoundError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedge.edge.config import HeaderMatch, ProxyMode, RouteConfig, RouteMatch
from kedge.edge.routing.table import RouteRequest, RouteTable

SIZES = (10, 1_000, 100_000)
REPEATS = 5


def build_routes(size: int, rng: random.Random) -> list[RouteConfig]:
    routes: list[RouteConfig] = []
    hostless = max(1, size // 1000)
    for i in range(size - hostless):
        kind = rng.random()
        if kind < 0.10:
            match = RouteMatch(host=f"*.tenant{i}.example.test", paths=("/*",))
        else:
            headers = (HeaderMatch("x-canary", exact="1"),) if kind > 0.95 else ()
            paths = ("/api/*", f"/v{i % 3}/*") if kind > 0.5 else ("/api/*",)
            match = RouteMatch(
                host=f"svc{i}.ns{i % 50}.svc.cluster.internal", paths=paths, headers=headers
            )
        routes.append(RouteConfig(name=f"routes[{i}]", backend=f"backend-{i}", match=match))
    for j in range(hostless):
        match = RouteMatch(paths=(f"/_internal{j}/*",), proxy_mode=ProxyMode.REVERSE)
        routes.append(RouteConfig(name=f"hostless[{j}]", backend="internal", match=match))
    rng.shuffle(routes)
    return routes


def requests_for(routes: list[RouteConfig], rng: random.Random) -> dict[str, list[RouteRequest]]:
    exact = [
        r.match.host
        for r in routes
        if r.match.host and not r.match.host.startswith("*") and not r.match.headers
    ]
    wild = [r.match.host[2:] for r in routes if r.match.host and r.match.host.startswith("*")]
    headers = [(b"user-agent", b"bench"), (b"accept", b"*/*")]

    def make(host: str, path: str) -> RouteRequest:
        return RouteRequest(host, 443, path, ProxyMode.REVERSE, headers)

    count = 1024
    return {
        "hit": [make(rng.choice(exact), "/api/items/42") for _ in range(count)],
        "wildcard": [make(f"a.b.{rng.choice(wild)}", "/x") for _ in range(count)] if wild else [],
        "miss": [
            make(f"web{rng.randrange(10**6)}.unknown.example.test", "/nothing")
            for _ in range(count)
        ],
    }


def ns_per_lookup(
    match: Callable[[RouteRequest], object], reqs: list[RouteRequest], n: int
) -> float:
    batch = (reqs * (n // len(reqs) + 1))[:n]
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for r in batch:
            match(r)
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=200_000, help="lookups per measurement")
    args = parser.parse_args()
    rng = random.Random(7)

    print(f"{'routes':>8} {'compile ms':>11} {'hit ns':>8} {'wildcard ns':>12} {'miss ns':>8}")
    for size in SIZES:
        routes = build_routes(size, rng)
        start = time.perf_counter()
        table = RouteTable.compile(routes)
        compile_ms = (time.perf_counter() - start) * 1000
        reqs = requests_for(routes, rng)
        # Sanity: the workload does what its name says.
        assert all(table.match(r) is not None for r in reqs["hit"])
        assert all(table.match(r) is not None for r in reqs["wildcard"])
        assert all(table.match(r) is None for r in reqs["miss"])
        cells = [
            f"{ns_per_lookup(table.match, reqs[kind], args.lookups):.0f}" if reqs[kind] else "-"
            for kind in ("hit", "wildcard", "miss")
        ]
        print(f"{size:>8} {compile_ms:>11.1f} {cells[0]:>8} {cells[1]:>12} {cells[2]:>8}")


if __name__ == "__main__":
    main()

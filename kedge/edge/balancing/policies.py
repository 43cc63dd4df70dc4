"""Balancing policies: pure functions that pick one endpoint from a candidate tuple.

`round_robin` walks the candidates with a counter the caller keeps; `p2c` (power of two
choices, Mitzenmacher) samples two distinct candidates and takes the one with fewer
requests in flight, which avoids the herd behaviour of "least loaded of all". Neither
touches a clock, a socket or asyncio; the caller supplies the randomness and the load.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from random import Random

from kedge.edge.discovery.model import Endpoint

__all__ = ["p2c", "round_robin"]


def _eligible(endpoints: Sequence[Endpoint], exclude: Collection[str]) -> Sequence[Endpoint]:
    if not exclude:
        return endpoints
    return [e for e in endpoints if e.key not in exclude]


def round_robin(
    endpoints: Sequence[Endpoint], counter: int, exclude: Collection[str] = ()
) -> Endpoint | None:
    """The endpoint at position `counter` (modulo) among those not excluded."""
    candidates = _eligible(endpoints, exclude)
    if not candidates:
        return None
    return candidates[counter % len(candidates)]


def p2c(
    endpoints: Sequence[Endpoint],
    load: Callable[[str], float],
    rng: Random,
    exclude: Collection[str] = (),
) -> Endpoint | None:
    """The less loaded of two distinct random candidates (ties go to the first sample).

    Load is divided by the endpoint weight, so a weight-2 endpoint takes twice the
    in-flight requests of a weight-1 one before it looks as busy.
    """
    candidates = _eligible(endpoints, exclude)
    n = len(candidates)
    if n == 0:
        return None
    if n == 1:
        return candidates[0]
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    if j >= i:
        j += 1
    a, b = candidates[i], candidates[j]
    return b if load(b.key) / b.weight < load(a.key) / a.weight else a

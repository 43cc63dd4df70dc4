"""RetryBudget: how many retries a backend may make, as a share of its requests. Pure.

A retry storm turns a partial outage into a full one: every failing request is sent again,
doubling the load on endpoints that are already struggling. A budget (Finagle's
RetryBudget, linkerd's retry budgets) allows retries up to `percent` of the requests of
the last `window` seconds, plus a floor of `min_per_second` so a backend with little
traffic can still retry. Once spent, requests fail with their first error instead.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    __slots__ = ("_clock", "_min_per_second", "_percent", "_requests", "_retries", "_window")

    def __init__(
        self,
        percent: float = 20.0,
        min_per_second: float = 3.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._percent = percent
        self._min_per_second = min_per_second
        self._window = window
        self._clock = clock
        # One timestamp per request / retry in the window; bounded by the traffic itself.
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self._window
        for q in (self._requests, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def record_request(self) -> None:
        now = self._clock()
        requests = self._requests
        # Drop what left the window here too (amortised O(1)), or a backend that never
        # retries would keep a timestamp for every request it ever served.
        horizon = now - self._window
        while requests and requests[0] < horizon:
            requests.popleft()
        requests.append(now)

    def allowed(self) -> int:
        """Retries the window allows in all."""
        now = self._clock()
        self._expire(now)
        share = len(self._requests) * self._percent / 100.0
        return int(max(share, self._min_per_second * self._window))

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget has one left."""
        allowed = self.allowed()  # first: it drops what left the window
        if len(self._retries) >= allowed:
            return False
        self._retries.append(self._clock())
        return True

"""DeadlineSweeper: one periodic task enforces every connection's current deadline.

A timer handle per request (loop.call_later) costs more than the rest of a small request's
bookkeeping, so connections keep a plain `deadline` float (monotonic seconds, 0 = none) and
this sweeper calls `on_deadline()` on those whose time has passed. Granularity is
`interval` seconds, which is fine for timeouts measured in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["DeadlineSweeper", "HasDeadline"]


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self) -> None: ...


class DeadlineSweeper:
    def __init__(self, interval: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self._members: set[HasDeadline] = set()
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def sweep(self) -> None:
        now = self._clock()
        expired = [m for m in self._members if 0.0 < m.deadline <= now]
        for m in expired:
            m.deadline = 0.0
            m.on_deadline()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kedge-deadlines")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.sweep()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

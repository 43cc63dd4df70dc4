"""ConfigFileWatcher: notices that a config file changed, so the edge (or winch) reloads it.

Polls the file's (mtime, size, inode) stamp, which also catches the atomic rename that
Kubernetes uses to update a mounted ConfigMap. A reload records the stamp of the file it
is about to read (`mark_read`), so a SIGHUP right after a write reloads once, not twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

__all__ = ["ConfigFileWatcher", "FileStamp"]

FileStamp = tuple[int, int, int]


class ConfigFileWatcher:
    def __init__(
        self, path: str, interval: float, on_change: Callable[[], Awaitable[object]]
    ) -> None:
        self.path = path
        self.interval = interval
        self._on_change = on_change
        self._seen = self.stamp()

    def stamp(self) -> FileStamp | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # mid-replace, or removed: keep the config we have
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def mark_read(self) -> None:
        """The file is being read now: only a later change triggers another reload."""
        self._seen = self.stamp()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = self.stamp()
            if stamp is not None and stamp != self._seen:
                await self._on_change()

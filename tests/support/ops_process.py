"""Run `python -m kedge serve --config FILE` as a subprocess, the way an operator does.

The edge writes its access log and event lines (JSON) to stdout; `edge_process` waits for
the "edge started" event, reads the bound listener and admin ports from it (configs use
port 0), keeps collecting lines, and kills the process if the test leaves it running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EdgeProcess", "edge_process", "write_atomically"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class EdgeProcess:
    proc: asyncio.subprocess.Process
    config_path: str
    listeners: dict[str, int] = field(default_factory=dict)
    admin_port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    stderr: bytes = b""

    def port(self, listener: str = "http") -> int:
        return self.listeners[listener]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port()}"

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                self._new_line.set()
                return
            with suppress(ValueError):
                self.events.append(json.loads(line))
            self._new_line.set()

    async def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, start: int = 0
    ) -> dict[str, Any]:
        """The first line (from index `start`) for which `pred` holds, waiting for it."""
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for ev in self.events[seen:]:
                    if pred(ev):
                        return ev
                seen = len(self.events)
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"edge exited without the event; stderr={self.stderr!r}")
                self._new_line.clear()
                await self._new_line.wait()

    async def wait_exit(self, timeout: float) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return rc


@asynccontextmanager
async def edge_process(yaml_text: str, directory: str, *args: str) -> AsyncIterator[EdgeProcess]:
    """Start the edge on `directory`/edge.yaml with extra `kedge serve` arguments `args`."""
    path = os.path.join(directory, "edge.yaml")
    write_atomically(path, yaml_text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kedge", "serve", "--config", path, *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    edge = EdgeProcess(proc, path)
    edge._reader = asyncio.create_task(edge._read())
    stderr_task = asyncio.create_task(_drain(proc))
    try:
        started = await edge.wait_event(lambda e: e.get("message") == "edge started", 20.0)
        edge.listeners = {str(k): int(v) for k, v in started["listeners"].items()}
        edge.admin_port = int(started["admin"])
        yield edge
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        edge.stderr = await asyncio.wait_for(stderr_task, 5)
        if edge._reader is not None:
            await asyncio.wait_for(edge._reader, 5)


async def _drain(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stderr is not None
    return await proc.stderr.read()

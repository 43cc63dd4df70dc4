"""Run a real winch in the test's event loop, listening on 127.0.0.1 port 0.

`running_winch(yaml_text)` writes the YAML to a file and loads it exactly as `winch --config`
does (relative paths are read from `base_dir` when given), then yields the started app.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from winch.app import WinchApp
from winch.config import load_winch_config

__all__ = ["running_winch"]


@asynccontextmanager
async def running_winch(
    yaml_text: str,
    *,
    base_dir: str | None = None,
    open_browser: Callable[[str], None] | None = None,
    watch_interval: float = 0.0,
) -> AsyncIterator[WinchApp]:
    """`app.config_path` is the file (rewrite it, then `app.reload()`, or set
    `watch_interval` to have winch notice by itself)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(base_dir or d, f"winch-{os.urandom(4).hex()}.yaml")
        with open(path, "w") as f:
            f.write(yaml_text)
        try:
            config = load_winch_config(path)
        except BaseException:
            if base_dir is not None:
                os.unlink(path)
            raise
        app = WinchApp(
            config,
            listen=("127.0.0.1", 0),
            config_path=path,
            watch_interval=watch_interval,
            open_browser=open_browser,
        )
        await app.start()
        try:
            yield app
        finally:
            await app.aclose()
            if base_dir is not None:
                os.unlink(path)

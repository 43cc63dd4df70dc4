"""The `kedge` command: `serve` (the edge) and `check` (validate a config without serving)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import IO

from kedge import __version__
from kedge.core.errors import ConfigError
from kedge.edge.config import EdgeConfig
from kedge.edge.config_parser import embedded_demo_config, load_edge_config

__all__ = ["main"]


class _JsonFormatter(logging.Formatter):
    """Operational log lines as JSON, with the request ID when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            line["request_id"] = rid.decode() if isinstance(rid, bytes) else rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    handler.formatter.converter = __import__("time").gmtime  # type: ignore[union-attr]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kedge", description="kedge edge proxy")
    p.add_argument("--version", action="version", version=f"kedge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the edge (the embedded demo when no --config)")
    serve.add_argument("--config", help="edge YAML config file")
    serve.add_argument("--access-log", default="-", help="access log file ('-' = stdout)")
    serve.add_argument("--log-level", default="info", help="operational log level (stderr)")
    serve.add_argument(
        "--watch-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the config file for changes (0 = only SIGHUP reloads)",
    )
    check = sub.add_parser("check", help="validate a config file and exit 0 (valid) or 1")
    check.add_argument("--config", required=True, help="edge YAML config file")
    return p


def _load(path: str | None) -> EdgeConfig:
    return embedded_demo_config() if path is None else load_edge_config(path)


def _run_serve(
    config: EdgeConfig, path: str | None, access_log: IO[bytes], watch_interval: float = 1.0
) -> int:
    from kedge.edge.app import EdgeApp

    async def run() -> None:
        app = EdgeApp(
            config, config_path=path, access_log_stream=access_log, watch_interval=watch_interval
        )
        await app.serve()

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(run())
        except OSError as exc:
            print(f"kedge: cannot start: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        try:
            config = load_edge_config(args.config)
        except ConfigError as exc:
            print(f"kedge: invalid config: {exc}", file=sys.stderr)
            return 1
        print(
            f"{args.config}: OK ({len(config.listeners)} listeners, {len(config.backends)} "
            f"backends, {len(config.routes)} routes, {len(config.adhoc)} adhoc rules)"
        )
        return 0
    _setup_logging(args.log_level)
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"kedge: invalid config: {exc}", file=sys.stderr)
        return 1
    if args.access_log == "-":
        stream: IO[bytes] = sys.stdout.buffer
        return _run_serve(config, args.config, stream, args.watch_interval)
    with open(args.access_log, "ab") as f:
        return _run_serve(config, args.config, f, args.watch_interval)

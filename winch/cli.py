"""The `winch` command: run the local forward proxy, or check its config and print its PAC."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from kedge.core.errors import ConfigError, KedgeError
from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.pac import render_pac
from kedge.dialer.sources.oidc import OidcSource
from winch.app import WinchApp
from winch.config import WinchConfig, is_loopback_host, load_winch_config

__all__ = ["main"]

DEFAULT_CONFIG = "~/.config/kedge/winch.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="winch",
        description="Local forward proxy: maps internal names to their cluster's edge and "
        "attaches your credentials. Point HTTP_PROXY (or a browser's PAC URL) at it.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    p.add_argument("--listen", help="address to listen on, overriding winch.listen")
    p.add_argument(
        "--force-bind",
        action="store_true",
        help="allow a non-loopback --listen address (anyone who reaches it acts as you)",
    )
    p.add_argument("--debug", action="store_true", help="ask edges to log these requests at info")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--print-pac", action="store_true", help="print the PAC file and exit")
    p.add_argument(
        "--login",
        metavar="SOURCE",
        help="log in with the named oidc auth source now (opens a browser), then exit",
    )
    p.add_argument(
        "--watch-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the config file for changes (0: reload on SIGHUP only)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _configured(args: argparse.Namespace) -> tuple[WinchConfig, tuple[str, int]]:
    """The file's config, and the address to listen on (the file's, or --listen)."""
    config = load_winch_config(os.path.expanduser(args.config))
    if not args.listen:
        return config, (config.listen_host, config.listen_port)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not is_loopback_host(host) and not (args.force_bind or config.allow_non_loopback):
        raise ConfigError(
            "--listen",
            "",
            f"{host} is not a loopback address",
            "add --force-bind if you mean it",
        )
    return config, (host, int(port))


async def _serve(
    config: WinchConfig, listen: tuple[str, int], path: str, args: argparse.Namespace
) -> None:
    app = WinchApp(
        config,
        listen=listen,
        debug=args.debug,
        config_path=path,
        watch_interval=args.watch_interval,
    )
    await app.start()
    print(f"winch: listening on http://{app.proxy_address}", file=sys.stderr, flush=True)
    print(
        f"winch: export HTTP_PROXY=http://{app.proxy_address} HTTPS_PROXY=http://{app.proxy_address}"
        f"  (PAC: http://{app.proxy_address}/proxy.pac)",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, app.reload, "SIGHUP")
    try:
        await stop.wait()
    finally:
        await app.aclose()


async def _login(config: WinchConfig, name: str) -> int:
    if name not in config.dialer.auth_sources:
        known = ", ".join(sorted(config.dialer.auth_sources)) or "none"
        print(f"winch: no auth source {name!r} (known: {known})", file=sys.stderr)
        return 2
    sources = AuthSources(config.dialer.auth_sources, refresh_margin=config.dialer.refresh_margin)
    try:
        source = sources.get(name)
        if not isinstance(source, OidcSource):
            print(f"winch: {name!r} is not an oidc source; it needs no login", file=sys.stderr)
            return 2
        await source.login()
        print(f"winch: logged in with {name!r}; tokens cached in {source.cache_path}")
        return 0
    except KedgeError as exc:
        print(f"winch: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        await sources.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config, listen = _configured(args)
    except ConfigError as exc:
        print(f"winch: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"winch: --listen: {exc} (write HOST:PORT, e.g. 127.0.0.1:8070)", file=sys.stderr)
        return 2
    if args.check:
        print(f"winch: {args.config}: OK ({len(config.dialer.routes)} routes)")
        return 0
    if args.print_pac:
        print(render_pac(config.dialer, f"{listen[0]}:{listen[1]}"), end="")
        return 0
    if args.login:
        return asyncio.run(_login(config, args.login))
    try:
        asyncio.run(_serve(config, listen, os.path.expanduser(args.config), args))
    except OSError as exc:
        print(
            f"winch: cannot listen on {listen[0]}:{listen[1]}: "
            f"{exc.strerror or exc} (is another winch running? pick another port with --listen)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0

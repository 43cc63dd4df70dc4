"""The pipeline's shape: a Handler, Layers around it, and the one error boundary.

Each layer is `async def __call__(exchange, next)` and either awaits `next` or raises a
typed error; `compose` folds them once at start (the edge's `app.py`, winch's `app.py`).
`ErrorBoundary` is where a typed error becomes a response (through the connection's
renderer) and anything else a logged 500 with no traceback shown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol

from kedge.core.errors import ClientDisconnected, InternalError, KedgeError
from kedge.core.http.exchange import Exchange

__all__ = ["ErrorBoundary", "Handler", "Layer", "compose"]

log = logging.getLogger("kedge.pipeline")

Handler = Callable[[Exchange], Awaitable[None]]


class Layer(Protocol):
    async def __call__(self, ex: Exchange, next: Handler) -> None: ...


def compose(layers: Sequence[Layer], terminal: Handler) -> Handler:
    """Fold layers around the terminal handler: layers[0] runs first.

    `partial` binds each layer's `next` without a wrapper coroutine: calling the result
    calls the layer directly, one coroutine frame per layer per request.
    """
    handler = terminal
    for layer in reversed(layers):
        handler = partial(layer.__call__, next=handler)
    return handler


class ErrorBoundary:
    """Renders typed errors; turns anything else into a logged 500 with no traceback shown."""

    async def __call__(self, ex: Exchange, next: Handler) -> None:
        try:
            await next(ex)
        except KedgeError as exc:
            self._answer(ex, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error", extra={"request_id": ex.request_id.decode("latin-1")})
            self._answer(
                ex,
                InternalError(f"internal error (request id {ex.request_id.decode('latin-1')})"),
            )

    @staticmethod
    def _answer(ex: Exchange, error: KedgeError) -> None:
        ex.error_kind = error.kind
        if isinstance(error, ClientDisconnected):
            if not ex.head_sent:
                ex.status = error.http_status
            ex.abort()
        elif not ex.head_sent:
            ex.send_error(error)
        elif not ex.finished:
            # Headers are out: truncation (or gRPC trailers) is the only signal left.
            ex.abort(error)

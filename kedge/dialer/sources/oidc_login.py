"""The interactive OIDC login: authorization code + PKCE on a loopback redirect.

RFC 8252 (OAuth for native apps): a one-shot HTTP server on 127.0.0.1 port 0 receives the
redirect (§7.3; providers must accept any port for a loopback redirect URI), PKCE S256 binds
the code to this process (RFC 7636), `state` ties the callback to this request, `iss` (when
the provider sends it, RFC 9207) rules out a mix-up with another provider, and the ID token's
`nonce` is checked by the caller after the code exchange (OpenID Connect Core §3.1.3.7).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from kedge.dialer.credentials import AuthSourceError

__all__ = ["LoginResult", "interactive_login", "pkce_pair"]

_log = logging.getLogger(__name__)

_DONE_PAGE = (
    "<!doctype html><title>kedge login</title><p>Logged in to {source}. You can close this tab.</p>"
)
_FAILED_PAGE = "<!doctype html><title>kedge login</title><p>Login failed: {reason}.</p>"


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What the code exchange needs: the code, the exact redirect URI and the PKCE verifier."""

    code: str
    redirect_uri: str
    code_verifier: str
    nonce: str


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (64 random bytes, 86 characters: RFC 7636 §4.1 allows 43-128) and its
    S256 challenge (§4.2)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def interactive_login(
    source: str,
    *,
    authorization_endpoint: str,
    issuer: str,
    client_id: str,
    scopes: Sequence[str],
    resource: str | None,
    open_browser: Callable[[str], None],
    time_limit: float,
) -> LoginResult:
    """Open the provider's login page and wait for its redirect to our loopback server."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    outcome: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        # A stray or forged request (another local process guessing the port) must not end
        # the login: only the answer carrying our state counts (RFC 6749 §10.12).
        if not secrets.compare_digest(query.get("state", ""), state) or outcome.done():
            return _page(_FAILED_PAGE.format(reason="unexpected request"), 400)
        if "iss" in query and query["iss"].rstrip("/") != issuer.rstrip("/"):
            query = {"error": "issuer_mismatch"}
        failed = "error" in query or "code" not in query
        text = (
            _FAILED_PAGE.format(reason="see the terminal")
            if failed
            else _DONE_PAGE.format(source=_html_escape(source))
        )
        response = _page(text, 400 if failed else 200)
        await response.prepare(request)
        await response.write_eof()
        outcome.set_result(query)
        return response

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        redirect_uri = f"http://127.0.0.1:{port}/callback"
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if "offline_access" in scopes:
            # OpenID Connect Core §11: a refresh token for offline_access needs consent.
            params["prompt"] = "consent"
        if resource:
            params["resource"] = resource
        url = f"{authorization_endpoint}?{urlencode(params)}"
        _log.warning("auth source %r: log in at %s", source, url)
        try:
            open_browser(url)
        except Exception as exc:  # no browser: the logged URL still works
            _log.warning("auth source %r: cannot open a browser (%s)", source, exc)
        try:
            query = await asyncio.wait_for(outcome, time_limit)
        except TimeoutError:
            raise AuthSourceError(
                source, f"the browser login did not complete within {time_limit:g}s"
            ) from None
    finally:
        await runner.cleanup()
    if "error" in query:
        raise AuthSourceError(source, f"login refused: {_short(query['error'])}")
    if "code" not in query:
        raise AuthSourceError(source, "login callback without a code")
    return LoginResult(query["code"], redirect_uri, verifier, nonce)


def _page(text: str, status: int) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(text: str) -> str:
    return "".join(c for c in text[:80] if c.isprintable())

"""A real OpenID provider for integration tests: node's oidc-provider, driven from asyncio.

`OidcProvider.start(workdir, clients=..., accounts=..., keys=...)` writes a JSON config and a
private JWKS under `workdir`, runs `node tests/support/oidc/provider.mjs` on 127.0.0.1 and yields
once it printed `READY <issuer>`. The issuer is `http://127.0.0.1:<port>`; `restart()` keeps the
port (so the issuer and JWKS URL an edge was configured with stay valid) and may swap the keys.

Tokens (all JWTs, verified by tests/integration/test_oidc_harness.py):
- `client_credentials()`: an RFC 9068 access token (`typ: at+jwt`) with `aud` = the resource's
  audience (default `kedge`), `sub` = `client_id` = the client id, plus the client's claims.
- `login()`: the authorization code flow with PKCE (RFC 7636), login and consent scripted over
  HTTP. The ID token has `aud` = the client id and the account's claims; the access token is an
  `at+jwt` with `aud` = the resource's audience, `sub` = the account and the account's claims.
- `play_browser(url, ...)`: the same login for an authorization URL someone else built (a
  native client's loopback login, `OidcClient(native=True)`), ending at its redirect_uri.
- `grant_counts()`: successful token requests by grant_type, to count refreshes.

The node package is installed by `npm ci --prefix tests/support/oidc` (CI does it); when it is
missing the harness raises with that command rather than skipping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = [
    "INSTALL_COMMAND",
    "LOOPBACK_REDIRECT_URI",
    "REDIRECT_URI",
    "OidcAccount",
    "OidcClient",
    "OidcHarnessError",
    "OidcLoginError",
    "OidcProvider",
    "OidcResource",
    "SigningKey",
    "SigningKeys",
    "ec_key",
    "require_installed",
    "rsa_key",
]

PACKAGE_DIR = Path(__file__).resolve().parent / "oidc"
INSTALL_COMMAND = "npm ci --prefix tests/support/oidc"
# Never followed: login() reads the code from the Location header of the final redirect.
REDIRECT_URI = "http://127.0.0.1/kedge-test/callback"
# What a native client registers; its login may use any port (RFC 8252 §7.3).
LOOPBACK_REDIRECT_URI = "http://127.0.0.1/callback"
_TIMEOUT = aiohttp.ClientTimeout(total=10)


class OidcHarnessError(RuntimeError):
    """The provider could not be started or answered something unexpected."""


class OidcLoginError(OidcHarnessError):
    """The scripted login was refused (bad credentials or an authorization error)."""


@dataclass(frozen=True)
class SigningKey:
    """One private signing key as a JWK, with the `kid` and `alg` its tokens carry."""

    kid: str
    alg: str
    private_jwk: Mapping[str, Any]

    @property
    def public_jwk(self) -> dict[str, Any]:
        private_members = {"d", "p", "q", "dp", "dq", "qi"}
        return {k: v for k, v in self.private_jwk.items() if k not in private_members}

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """A JWT signed with this key (for hostile-token tables: right key, wrong claims)."""
        key = jwt.PyJWK(dict(self.private_jwk), algorithm=self.alg)
        return jwt.encode(
            dict(claims), key, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


def _jwk(kid: str, alg: str, jwk: dict[str, Any]) -> SigningKey:
    # PyJWT adds key_ops ["sign"]; a published key with that would be unusable for "verify".
    jwk.pop("key_ops", None)
    jwk.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid=kid, alg=alg, private_jwk=jwk)


def rsa_key(kid: str | None = None, bits: int = 2048) -> SigningKey:
    """A fresh RS256 key; the kid defaults to a random `rsa-<hex>`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    return _jwk(kid or f"rsa-{secrets.token_hex(4)}", "RS256", jwk)


def ec_key(kid: str | None = None) -> SigningKey:
    """A fresh ES256 (P-256) key; the kid defaults to a random `ec-<hex>`."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    return _jwk(kid or f"ec-{secrets.token_hex(4)}", "ES256", jwk)


@dataclass(frozen=True)
class SigningKeys:
    """The provider's key set. For each alg the first key signs; all are published."""

    keys: tuple[SigningKey, ...]

    @classmethod
    def generate(cls, *, ec256: bool = True) -> SigningKeys:
        return cls((rsa_key(), ec_key()) if ec256 else (rsa_key(),))

    def signer(self, alg: str) -> SigningKey:
        return next(k for k in self.keys if k.alg == alg)

    def rotated(self, *, keep_old: bool = True) -> SigningKeys:
        """Fresh keys of the same algs first (they sign); the old ones after, if kept."""
        fresh = tuple(rsa_key() if alg == "RS256" else ec_key() for alg in self._algs())
        return SigningKeys(fresh + self.keys if keep_old else fresh)

    def private_jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.private_jwk) for k in self.keys]}

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    def _algs(self) -> list[str]:
        return list(dict.fromkeys(k.alg for k in self.keys))


@dataclass(frozen=True)
class OidcClient:
    """A registered client. Without a secret it is public (login only, PKCE, no secret)."""

    client_id: str
    secret: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    login: bool = False
    id_token_alg: str = "RS256"
    # A native app (RFC 8252): any port on a loopback redirect URI (LOOPBACK_REDIRECT_URI)
    # is accepted (§7.3), and the refresh_token grant is allowed (login with offline_access).
    native: bool = False

    def metadata(self) -> dict[str, Any]:
        grants = ["client_credentials"] if self.secret else []
        if self.login or self.native:
            grants.append("authorization_code")
        if self.native:
            grants.append("refresh_token")
        redirects = [REDIRECT_URI] if self.login or self.native else []
        if self.native:
            redirects.append(LOOPBACK_REDIRECT_URI)
        meta: dict[str, Any] = {
            "client_id": self.client_id,
            "grant_types": grants,
            "response_types": ["code"] if self.login or self.native else [],
            "redirect_uris": redirects,
            "id_token_signed_response_alg": self.id_token_alg,
        }
        if self.native:
            meta["application_type"] = "native"
        if self.secret:
            meta["client_secret"] = self.secret
        else:
            meta["token_endpoint_auth_method"] = "none"
        return meta


@dataclass(frozen=True)
class OidcAccount:
    """A user for the scripted login; `claims` go in its ID and access tokens."""

    username: str
    password: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    sub: str | None = None


@dataclass(frozen=True)
class OidcResource:
    """An RFC 8707 resource indicator whose access tokens are JWTs for `audience`."""

    indicator: str = "urn:kedge"
    audience: str = "kedge"
    alg: str = "RS256"
    scope: str = "kedge"
    ttl: int = 600


def require_installed(package_dir: Path = PACKAGE_DIR) -> None:
    """Raise (never skip: CI installs it) when node or the npm package is missing."""
    if shutil.which("node") is None:
        raise OidcHarnessError("node is not on PATH: the OIDC tests need Node.js 20+")
    if not (package_dir / "node_modules" / "oidc-provider" / "package.json").is_file():
        raise OidcHarnessError(
            f"oidc-provider is not installed in {package_dir}: run `{INSTALL_COMMAND}`"
        )


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _basic_auth(client_id: str, secret: str) -> str:
    # RFC 6749 section 2.3.1: id and secret are form-urlencoded before Basic encoding.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class OidcProvider:
    """A running oidc-provider process; create it with `OidcProvider.start(...)`."""

    def __init__(self, workdir: Path, config: dict[str, Any], keys: SigningKeys) -> None:
        # Own subdirectory: a test may run two providers in one tmp_path.
        self._workdir = workdir / f"oidc-provider-{secrets.token_hex(4)}"
        self._workdir.mkdir(parents=True)
        self._config = config
        self.keys = keys
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._starts = 0

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        # What discovery advertises (oidc-provider's default route); the tests check they agree.
        return f"{self.issuer}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        workdir: Path,
        *,
        clients: Sequence[OidcClient] = (),
        accounts: Sequence[OidcAccount] = (),
        keys: SigningKeys | None = None,
        resources: Sequence[OidcResource] = (OidcResource(),),
        default_resource: str | None = "urn:kedge",
        id_token_ttl: int = 600,
        port: int = 0,
        timeout: float = 15.0,
    ) -> AsyncIterator[OidcProvider]:
        """Run the provider until the block exits; `port=0` picks a free port."""
        require_installed()
        config = {
            "clients": [{"metadata": c.metadata(), "claims": dict(c.claims)} for c in clients],
            "accounts": [
                {
                    "username": a.username,
                    "password": a.password,
                    "sub": a.sub or a.username,
                    "claims": dict(a.claims),
                }
                for a in accounts
            ],
            "resources": [vars(r).copy() for r in resources],
            "default_resource": default_resource,
            "id_token_ttl": id_token_ttl,
        }
        op = cls(workdir, config, keys or SigningKeys.generate())
        op.port = port
        try:
            await op._spawn(timeout)
            yield op
        finally:
            await op.stop()

    async def restart(self, keys: SigningKeys | None = None, timeout: float = 15.0) -> None:
        """Stop and start again on the same port, optionally with a new key set."""
        await self.stop()
        if keys is not None:
            self.keys = keys
        await self._spawn(timeout)

    async def stop(self) -> None:
        """Terminate the process (the JWKS endpoint is down until `restart()`)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _spawn(self, timeout: float) -> None:
        self._starts += 1
        jwks_file = self._workdir / "jwks.json"
        jwks_file.write_text(json.dumps(self.keys.private_jwks()))
        config_file = self._workdir / "config.json"
        config_file.write_text(
            json.dumps({**self._config, "port": self.port, "jwks_file": str(jwks_file)})
        )
        log_file = self._workdir / f"run-{self._starts}.log"
        with log_file.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(PACKAGE_DIR / "provider.mjs"),
                str(config_file),
                stdin=asyncio.subprocess.PIPE,  # EOF tells node its parent died
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        self._proc = proc
        assert proc.stdout is not None
        line = b""
        with suppress(TimeoutError):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] != "READY":
            await self.stop()
            raise OidcHarnessError(
                f"oidc-provider did not print READY (waited up to {timeout}s, "
                f"exit code {proc.returncode}); its log {log_file}:\n"
                + log_file.read_text(errors="replace")
            )
        self.port = int(words[1].rsplit(":", 1)[1])

    async def discovery(self) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
            return await _get_json(http, f"{self.issuer}/.well-known/openid-configuration")

    async def jwks(self) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
            return await _get_json(http, self.jwks_uri)

    async def client_credentials(
        self,
        client_id: str,
        secret: str,
        *,
        resource: str | None = None,
        scope: str | None = None,
    ) -> str:
        """An access token (a JWT) by the client_credentials grant (RFC 6749 section 4.4)."""
        form = {"grant_type": "client_credentials"}
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
            body = await self._token_request(http, form, client_id, secret)
        return str(body["access_token"])

    async def login(
        self,
        client_id: str,
        username: str,
        password: str,
        *,
        secret: str | None = None,
        scope: str = "openid kedge",
        resource: str | None = None,
    ) -> dict[str, Any]:
        """Authorization code flow with PKCE; returns the token response (id_token, ...)."""
        verifier, challenge = _pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        params = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if resource:
            params["resource"] = resource
        if "offline_access" in scope.split():
            params["prompt"] = "consent"  # OpenID Connect Core §11: needed for a refresh token
        # The interaction cookies are set for 127.0.0.1, which aiohttp's jar refuses by default.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=_TIMEOUT, cookie_jar=jar) as http:
            callback = await self._authorize(
                http, f"{self.issuer}/auth?{urlencode(params)}", username, password
            )
            query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
            if "error" in query:
                raise OidcLoginError(f"authorization failed: {query}")
            if query.get("state") != state or query.get("iss") != self.issuer:
                raise OidcHarnessError(f"callback with wrong state or iss: {query}")
            form = {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            }
            if secret is None:
                form["client_id"] = client_id
            body = await self._token_request(http, form, client_id, secret)
        # OpenID Connect Core 3.1.3.7: the ID token echoes the request's nonce.
        id_token = body.get("id_token")
        if id_token and jwt.decode(id_token, options={"verify_signature": False})["nonce"] != nonce:
            raise OidcHarnessError("ID token nonce does not match the request")
        return body

    async def play_browser(self, url: str, username: str, password: str) -> str:
        """Be the user's browser for a login URL that someone else built (winch's login): log
        in and consent, follow the provider's redirect to the request's redirect_uri (a loopback
        server), and return the text of the page that server answers."""
        redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=_TIMEOUT, cookie_jar=jar) as http:
            callback = await self._authorize(http, url, username, password, redirect_uri)
            async with http.get(callback, allow_redirects=False) as resp:
                return await resp.text()

    async def grant_counts(self) -> dict[str, int]:
        """Successful token requests so far, by grant_type (since the last (re)start)."""
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
            return await _get_json(http, f"{self.issuer}/kedge-test/grants")

    async def _authorize(
        self,
        http: aiohttp.ClientSession,
        url: str,
        username: str,
        password: str,
        redirect_uri: str = REDIRECT_URI,
    ) -> str:
        """Follow /auth redirects, completing login and consent; return the callback URL."""
        for _ in range(10):
            location = await _redirect(http, "GET", url)
            if location.startswith(redirect_uri):
                return location
            if not urlsplit(location).path.startswith("/interaction/"):
                url = location
                continue
            prompt = (await _get_json(http, location))["prompt"]
            form = {"username": username, "password": password} if prompt == "login" else {}
            url = await _redirect(http, "POST", f"{location}/{prompt}", form)
        raise OidcHarnessError("login did not reach the redirect_uri within 10 redirects")

    async def _token_request(
        self, http: aiohttp.ClientSession, form: dict[str, str], client_id: str, secret: str | None
    ) -> dict[str, Any]:
        headers = {"Authorization": _basic_auth(client_id, secret)} if secret is not None else {}
        return await _get_json(http, self.token_endpoint, form, headers)


async def _redirect(
    http: aiohttp.ClientSession, method: str, url: str, form: Mapping[str, str] | None = None
) -> str:
    async with http.request(method, url, data=form, allow_redirects=False) as resp:
        if resp.status == 401:
            raise OidcLoginError(f"login refused: {await resp.text()}")
        if resp.status not in (302, 303) or "Location" not in resp.headers:
            raise OidcHarnessError(f"{method} {url}: {resp.status} {await resp.text()}")
        return urljoin(url, resp.headers["Location"])


async def _get_json(
    http: aiohttp.ClientSession,
    url: str,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """GET (or POST when given a form) and decode a 200 JSON answer."""
    method = "GET" if form is None else "POST"
    async with http.request(method, url, data=form, headers=headers) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        if resp.status != 200:
            raise OidcHarnessError(f"{method} {url}: {resp.status} {body}")
        return body

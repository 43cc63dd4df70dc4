"""The dialer's auth sources against real files, real plugins and a real OpenID provider.

Time moves through an injected clock (real time plus an offset), never by sleeping: the
provider's tokens live 600 s and a source refreshes at 80% of that, so an offset of 500 s
makes every token due for refresh.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
import trustme
import yaml

from kedge.dialer.auth_sources import AuthSources
from kedge.dialer.config import (
    AuthSourceConfig,
    ClientCredentialsSourceConfig,
    KubeconfigSourceConfig,
    OidcSourceConfig,
    StaticTokenSourceConfig,
    TokenFileSourceConfig,
    TokenKind,
)
from kedge.dialer.credentials import AuthSourceError, BearerToken, ClientCertificate
from kedge.dialer.sources.kubeconfig import KubeconfigSource
from kedge.dialer.sources.oidc import OidcSource
from tests.support.oidc_provider import OidcAccount, OidcClient, OidcProvider

MARGIN = 60.0
DUE = 500.0  # clock offset that makes a fresh 600 s token due for refresh


class OffsetClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _sources(
    configs: dict[str, AuthSourceConfig],
    clock: OffsetClock | None = None,
    open_browser: Callable[[str], None] | None = None,
) -> AuthSources:
    return AuthSources(
        configs, refresh_margin=MARGIN, open_browser=open_browser, clock=clock or OffsetClock()
    )


async def _bearer(sources: AuthSources, name: str) -> BearerToken:
    cred = await sources.get(name).credential()
    assert isinstance(cred, BearerToken)
    return cred


# --- static and token file -------------------------------------------------------------------


async def test_static_token_and_unknown_name() -> None:
    sources = _sources({"s": StaticTokenSourceConfig("s", "tok-1")})
    try:
        assert await _bearer(sources, "s") == BearerToken("tok-1", None)
        with pytest.raises(AuthSourceError, match=r"'nope': no such auth source \(configured: s\)"):
            sources.get("nope")
    finally:
        await sources.aclose()


async def test_token_file_follows_a_kubelet_style_symlink_swap(tmp_path: Path) -> None:
    def publish(version: str, token: str) -> None:
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(token + "\n")
        (tmp_path / "..data_tmp").symlink_to(version)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # atomic, as the kubelet does

    publish("..v1", "first")
    (tmp_path / "token").symlink_to("..data/token")
    sources = _sources({"f": TokenFileSourceConfig("f", str(tmp_path / "token"))})
    try:
        assert (await _bearer(sources, "f")).value == "first"
        publish("..v2", "second")
        assert (await _bearer(sources, "f")).value == "second"
        (tmp_path / "..v2" / "token").write_text("")
        sources.get("f").invalidate()
        with pytest.raises(AuthSourceError, match="is empty"):
            await sources.get("f").credential()
    finally:
        await sources.aclose()


# --- kubeconfig ------------------------------------------------------------------------------


def _kubeconfig(path: Path, users: list[dict[str, Any]], mode: int = 0o600) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": users}
    path.write_text(yaml.safe_dump(doc))
    path.chmod(mode)
    return path


def _kube(path: Path, user: str) -> dict[str, AuthSourceConfig]:
    return {"k": KubeconfigSourceConfig("k", user=user, path=str(path))}


async def test_kubeconfig_token_token_file_and_missing_user(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    path = _kubeconfig(
        tmp_path / "config",
        [
            {"name": "alice", "user": {"token": "alice-token"}},
            {"name": "bob", "user": {"tokenFile": "tok"}},  # relative to the kubeconfig
        ],
    )
    for user, want in (("alice", "alice-token"), ("bob", "from-file")):
        sources = _sources(_kube(path, user))
        try:
            assert (await _bearer(sources, "k")).value == want
        finally:
            await sources.aclose()
    sources = _sources(_kube(path, "carol"))
    try:
        with pytest.raises(AuthSourceError) as info:
            await sources.get("k").credential()
        assert f"no user 'carol' in {path} (users: alice, bob)" in info.value.reason
    finally:
        await sources.aclose()


async def test_kubeconfig_user_from_the_kubeconfig_env_list(tmp_path: Path) -> None:
    a = _kubeconfig(tmp_path / "a", [{"name": "x", "user": {"token": "from-a"}}])
    b = _kubeconfig(tmp_path / "b", [{"name": "y", "user": {"token": "from-b"}}])
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}{os.pathsep}{a}{os.pathsep}{b}"}
    source = KubeconfigSource(
        KubeconfigSourceConfig("k", user="y"), refresh_margin=MARGIN, environ=env
    )
    try:
        assert await source.credential() == BearerToken("from-b", None)
    finally:
        await source.aclose()


async def test_kubeconfig_client_certificate_from_data_and_files(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("alice")
    cert_pem = leaf.cert_chain_pems[0].bytes()
    key_pem = leaf.private_key_pem.bytes()
    (tmp_path / "alice.crt").write_bytes(cert_pem)
    (tmp_path / "alice.key").write_bytes(key_pem)
    path = _kubeconfig(
        tmp_path / "config",
        [
            {
                "name": "data",
                "user": {
                    "client-certificate-data": base64.b64encode(cert_pem).decode(),
                    "client-key-data": base64.b64encode(key_pem).decode(),
                },
            },
            {
                "name": "files",
                "user": {"client-certificate": "alice.crt", "client-key": "alice.key"},
            },
        ],
    )
    for user in ("data", "files"):
        sources = _sources(_kube(path, user))
        try:
            cred = await sources.get("k").credential()
            assert isinstance(cred, ClientCertificate)
            assert (cred.cert_pem, cred.key_pem) == (cert_pem, key_pem)
            # Expires with the certificate (trustme issues them for years).
            assert cred.expires_at is not None and cred.expires_at > time.time() + 86400
        finally:
            await sources.aclose()


PLUGIN = """
import json, os, sys, time
from datetime import datetime, timezone
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
if info["spec"]["interactive"] or info["kind"] != "ExecCredential":
    sys.exit("bad KUBERNETES_EXEC_INFO")
if os.environ.get("PLUGIN_FAIL"):
    print("plugin: the cloud said no", file=sys.stderr)
    sys.exit(3)
counter = os.path.join(os.path.dirname(__file__), "runs")
runs = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(runs))
expiry = datetime.fromtimestamp(time.time() + 600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
status = {"expirationTimestamp": expiry}
if sys.argv[1] == "cert":
    status.update(clientCertificateData="CERT", clientKeyData="KEY")
else:
    status["token"] = f"{sys.argv[1]}-{os.environ['PLUGIN_GREETING']}-{runs}"
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def _exec_user(name: str, mode: str, api: str, **env: str) -> dict[str, Any]:
    return {
        "name": name,
        "user": {
            "exec": {
                "apiVersion": f"client.authentication.k8s.io/{api}",
                # Relative with a separator: resolved against the kubeconfig's directory.
                "command": "plugin/run",
                "args": [mode],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "interactiveMode": "Never",
            }
        },
    }


async def test_kubeconfig_exec_plugin_is_rerun_when_its_credential_expires(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "plugin.py").write_text(PLUGIN)
    run = tmp_path / "plugin" / "run"
    run.write_text(f'#!/bin/sh\nexec {sys.executable} "$(dirname "$0")/plugin.py" "$@"\n')
    run.chmod(0o755)
    path = _kubeconfig(
        tmp_path / "config",
        [
            _exec_user("v1", "tok", "v1", PLUGIN_GREETING="hi"),
            _exec_user("beta", "cert", "v1beta1", PLUGIN_GREETING="hi"),
            _exec_user("broken", "tok", "v1", PLUGIN_GREETING="hi", PLUGIN_FAIL="1"),
        ],
    )
    clock = OffsetClock()
    sources = _sources(_kube(path, "v1"), clock)
    try:
        first = await _bearer(sources, "k")
        assert first.value == "tok-hi-1"
        assert first.expires_at is not None and abs(first.expires_at - (time.time() + 600)) < 5
        assert (await _bearer(sources, "k")).value == "tok-hi-1"  # cached: not run again
        clock.offset = DUE
        assert (await _bearer(sources, "k")).value == "tok-hi-2"
    finally:
        await sources.aclose()
    sources = _sources(_kube(path, "beta"))
    try:
        cert = await sources.get("k").credential()
        assert isinstance(cert, ClientCertificate)
        assert (cert.cert_pem, cert.key_pem) == (b"CERT", b"KEY") and cert.expires_at
    finally:
        await sources.aclose()
    sources = _sources(_kube(path, "broken"))
    try:
        with pytest.raises(AuthSourceError, match="status 3: plugin: the cloud said no"):
            await sources.get("k").credential()
    finally:
        await sources.aclose()


# --- the OpenID provider ---------------------------------------------------------------------

ALICE = OidcAccount("alice", "wonderland", claims={"groups": ["dev"]})


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[OidcProvider]:
    clients = [
        OidcClient("winch", native=True),
        OidcClient("svc", secret="svc-secret", claims={"role": "ci"}),
    ]
    async with OidcProvider.start(tmp_path, clients=clients, accounts=[ALICE]) as op:
        yield op


class Browser:
    """Plays the user: each `open_browser(url)` logs in as alice in a background task."""

    def __init__(self, provider: OidcProvider) -> None:
        self.provider = provider
        self.urls: list[str] = []
        self.tasks: list[asyncio.Task[str]] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)
        page = self.provider.play_browser(url, ALICE.username, ALICE.password)
        self.tasks.append(asyncio.get_running_loop().create_task(page))

    async def pages(self) -> list[str]:
        return list(await asyncio.gather(*self.tasks))


def _oidc(provider: OidcProvider, cache: Path, **kw: Any) -> dict[str, AuthSourceConfig]:
    cfg = OidcSourceConfig(
        "corp", issuer=provider.issuer, client_id="winch", cache_dir=str(cache), **kw
    )
    return {"corp": cfg}


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_oidc_login_caches_0600_and_a_new_process_reuses_it(
    provider: OidcProvider, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    browser = Browser(provider)
    sources = _sources(_oidc(provider, cache), open_browser=browser)
    try:
        token = await _bearer(sources, "corp")
    finally:
        await sources.aclose()
    assert ["close this tab" in page for page in await browser.pages()] == [True]
    claims = _claims(token.value)
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("alice", "winch", provider.issuer)
    assert token.expires_at == claims["exp"]
    url = browser.urls[0]
    assert "code_challenge_method=S256" in url and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in url
    [cache_file] = cache.iterdir()
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    stored = json.loads(cache_file.read_text())
    assert stored["refresh_token"] and stored["id_token"] == token.value

    def no_browser(url: str) -> None:
        raise AssertionError("a second login was started")

    again = _sources(_oidc(provider, cache), open_browser=no_browser)
    try:
        assert await _bearer(again, "corp") == token
    finally:
        await again.aclose()
    assert await provider.grant_counts() == {"authorization_code": 1}


async def test_oidc_refreshes_once_under_twenty_callers_and_rotates(
    provider: OidcProvider, tmp_path: Path
) -> None:
    cache, clock = tmp_path / "cache", OffsetClock()
    browser = Browser(provider)
    sources = _sources(_oidc(provider, cache), clock, open_browser=browser)
    try:
        first = await _bearer(sources, "corp")
        [cache_file] = cache.iterdir()
        refresh_1 = json.loads(cache_file.read_text())["refresh_token"]
        clock.offset = DUE
        tokens = await asyncio.gather(*(_bearer(sources, "corp") for _ in range(20)))
        assert len({t.value for t in tokens}) == 1
        # (The new ID token may equal the old one byte for byte within the same second.)
        assert _claims(tokens[0].value)["sub"] == "alice" and first.value
        assert await provider.grant_counts() == {"authorization_code": 1, "refresh_token": 1}
        # A public client's refresh token rotates (RFC 9700 §4.14.2); the new one is stored.
        refresh_2 = json.loads(cache_file.read_text())["refresh_token"]
        assert refresh_2 != refresh_1
        assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    finally:
        await sources.aclose()
    assert len(browser.urls) == 1


async def test_oidc_refused_refresh_token_logs_in_again_or_fails_without_login(
    provider: OidcProvider, tmp_path: Path
) -> None:
    cache, clock = tmp_path / "cache", OffsetClock()
    browser = Browser(provider)
    sources = _sources(_oidc(provider, cache), clock, open_browser=browser)
    try:
        await _bearer(sources, "corp")
    finally:
        await sources.aclose()
    # The provider forgets every grant on restart: the cached refresh token is now invalid.
    await provider.restart()
    clock.offset = DUE
    strict = _sources(_oidc(provider, cache, login=False), clock, open_browser=browser)
    try:
        with pytest.raises(AuthSourceError, match="run `winch login corp`") as info:
            await strict.get("corp").credential()
        [cache_file] = cache.iterdir()
        assert "refresh_token" not in json.loads(cache_file.read_text())  # dropped, not retried
        assert json.loads(cache_file.read_text())["id_token"] not in info.value.reason
    finally:
        await strict.aclose()
    assert len(browser.urls) == 1

    # With login allowed: no refresh token left, so a login; then the edge refuses the token
    # and the refresh token is refused too (provider restarted): another login.
    sources = _sources(_oidc(provider, cache), clock, open_browser=browser)
    try:
        await _bearer(sources, "corp")
        assert len(browser.urls) == 2
        await provider.restart()
        source = sources.get("corp")
        source.invalidate()  # the edge said 401
        token = await _bearer(sources, "corp")
    finally:
        await sources.aclose()
    assert len(browser.urls) == 3
    assert _claims(token.value)["sub"] == "alice"
    assert await provider.grant_counts() == {"authorization_code": 1}


async def test_oidc_access_token_for_a_resource(provider: OidcProvider, tmp_path: Path) -> None:
    browser = Browser(provider)
    configs = _oidc(provider, tmp_path / "cache", use=TokenKind.ACCESS_TOKEN, resource="urn:kedge")
    sources = _sources(configs, open_browser=browser)
    try:
        token = await _bearer(sources, "corp")
    finally:
        await sources.aclose()
    claims = _claims(token.value)
    assert (claims["aud"], claims["sub"], claims["groups"]) == ("kedge", "alice", ["dev"])
    assert jwt.get_unverified_header(token.value)["typ"] == "at+jwt"


async def test_lazy_start_a_broken_source_does_not_break_the_others(tmp_path: Path) -> None:
    configs: dict[str, AuthSourceConfig] = {
        "bad-issuer": OidcSourceConfig(
            "bad-issuer", issuer="http://127.0.0.1:9", client_id="x", cache_dir=str(tmp_path)
        ),
        "bad-kube": KubeconfigSourceConfig("bad-kube", user="u", path=str(tmp_path / "none")),
        "good": StaticTokenSourceConfig("good", "fine"),
    }
    sources = _sources(configs)  # builds nothing yet
    try:
        with pytest.raises(AuthSourceError, match=r"'bad-issuer': .*unreachable"):
            await sources.get("bad-issuer").credential()
        with pytest.raises(AuthSourceError, match=r"'bad-kube': kubeconfig .* does not exist"):
            await sources.get("bad-kube").credential()
        assert (await _bearer(sources, "good")).value == "fine"
    finally:
        await sources.aclose()


async def test_kubeconfig_oidc_auth_provider_refreshes_and_writes_back(
    provider: OidcProvider, tmp_path: Path
) -> None:
    answer = await provider.login(
        "winch", ALICE.username, ALICE.password, scope="openid offline_access"
    )
    path = _kubeconfig(
        tmp_path / "config",
        [
            {"name": "other", "user": {"token": "keep-me"}},
            {
                "name": "alice",
                "user": {
                    "auth-provider": {
                        "name": "oidc",
                        "config": {
                            "idp-issuer-url": provider.issuer,
                            "client-id": "winch",
                            "id-token": answer["id_token"],
                            "refresh-token": answer["refresh_token"],
                        },
                    }
                },
            },
        ],
        mode=0o640,
    )
    clock = OffsetClock()
    sources = _sources(_kube(path, "alice"), clock)
    try:
        assert (await _bearer(sources, "k")).value == answer["id_token"]  # still fresh
        assert await provider.grant_counts() == {"authorization_code": 1}
        clock.offset = DUE
        fresh = await _bearer(sources, "k")
    finally:
        await sources.aclose()
    assert _claims(fresh.value)["sub"] == "alice"
    assert await provider.grant_counts() == {"authorization_code": 1, "refresh_token": 1}
    doc = yaml.safe_load(path.read_text())
    written = doc["users"][1]["user"]["auth-provider"]["config"]
    assert written["id-token"] == fresh.value
    assert written["refresh-token"] not in ("", answer["refresh_token"])  # rotated, stored
    assert doc["users"][0] == {"name": "other", "user": {"token": "keep-me"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


async def test_client_credentials(provider: OidcProvider, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("svc-secret\n")
    clock = OffsetClock()
    cfg = ClientCredentialsSourceConfig(
        "svc",
        issuer=provider.issuer,
        client_id="svc",
        client_secret_file=str(secret),
        scopes=("kedge",),
        resource="urn:kedge",
    )
    sources = _sources({"svc": cfg}, clock)
    try:
        token = await _bearer(sources, "svc")
        claims = _claims(token.value)
        assert (claims["aud"], claims["client_id"], claims["role"]) == ("kedge", "svc", "ci")
        assert claims["scope"] == "kedge"
        assert token.expires_at == claims["exp"]
        assert await _bearer(sources, "svc") is token
        clock.offset = DUE
        assert (await _bearer(sources, "svc")).value != token.value
        assert await provider.grant_counts() == {"client_credentials": 2}
    finally:
        await sources.aclose()
    secret.write_text("wrong-secret")
    sources = _sources({"svc": cfg})
    try:
        with pytest.raises(AuthSourceError, match="HTTP 401 invalid_client") as info:
            await sources.get("svc").credential()
        assert "wrong-secret" not in str(info.value)
    finally:
        await sources.aclose()


async def test_forced_login_replaces_the_cache(provider: OidcProvider, tmp_path: Path) -> None:
    browser = Browser(provider)
    sources = _sources(_oidc(provider, tmp_path / "cache"), open_browser=browser)
    try:
        first = await _bearer(sources, "corp")
        source = sources.get("corp")
        assert isinstance(source, OidcSource)
        second = await source.login()  # `winch login corp`
        assert second != first
        assert await _bearer(sources, "corp") == second
    finally:
        await sources.aclose()
    assert len(browser.urls) == 2


async def test_login_ignores_a_forged_callback_and_times_out_without_one(
    provider: OidcProvider, tmp_path: Path
) -> None:
    async def forge_then_login(url: str) -> str:
        redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{redirect}?code=stolen&state=guess") as resp,
        ):
            assert resp.status == 400
        return await provider.play_browser(url, ALICE.username, ALICE.password)

    tasks: list[asyncio.Task[str]] = []
    sources = _sources(
        _oidc(provider, tmp_path / "a"),
        open_browser=lambda url: tasks.append(asyncio.create_task(forge_then_login(url))),
    )
    try:
        token = await _bearer(sources, "corp")  # the forged callback did not end the login
        assert _claims(token.value)["sub"] == "alice"
        assert "close this tab" in await tasks[0]
    finally:
        await sources.aclose()

    idle = _sources(_oidc(provider, tmp_path / "b", login_timeout=0.3), open_browser=lambda u: None)
    try:
        with pytest.raises(AuthSourceError, match=r"did not complete within 0\.3s"):
            await idle.get("corp").credential()
    finally:
        await idle.aclose()

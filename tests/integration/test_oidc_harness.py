"""The real OpenID provider harness issues verifiable JWTs with the configured claims and keys."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.support.oidc_provider import (
    INSTALL_COMMAND,
    OidcAccount,
    OidcClient,
    OidcHarnessError,
    OidcLoginError,
    OidcProvider,
    OidcResource,
    SigningKeys,
    require_installed,
)

SERVICE = OidcClient(
    "svc",
    "svc-secret",
    claims={"permissions": ["svc.read", "svc.write"], "groups": ["ops"], "kedge": {"perms": ["a"]}},
)
CLI = OidcClient("kedge-cli", login=True)  # public: PKCE and no secret
WEB = OidcClient("kedge-web", "web-secret", login=True, id_token_alg="ES256")
ALICE = OidcAccount(
    "alice",
    "correct horse",
    claims={"permissions": ["svc.read"], "groups": ["dev"], "kedge": {"perms": ["b"]}},
)
RESOURCES = (
    OidcResource("urn:kedge", "kedge", "RS256", ttl=300),
    OidcResource("urn:kedge:es256", "kedge", "ES256", ttl=120),
    OidcResource("urn:other", "other-api", "RS256"),
)


async def verify(op: OidcProvider, token: str, audience: str) -> dict[str, Any]:
    """Verify like a relying party: keys from the jwks_uri that discovery advertises."""
    discovery = await op.discovery()
    assert discovery["issuer"] == op.issuer
    assert discovery["jwks_uri"] == op.jwks_uri
    jwks = jwt.PyJWKSet.from_dict(await op.jwks())
    header = jwt.get_unverified_header(token)
    key = next((k for k in jwks.keys if k.key_id == header["kid"]), None)
    if key is None:
        raise LookupError(f"kid {header['kid']} is not in the provider's JWKS")
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=op.issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    return claims


async def test_client_credentials_yields_jwt_access_tokens(tmp_path: Path) -> None:
    keys = SigningKeys.generate()
    async with OidcProvider.start(
        tmp_path, clients=[SERVICE], keys=keys, resources=RESOURCES
    ) as op:
        # (resource requested, expected alg, kid, audience, lifetime)
        cases = [
            (None, "RS256", keys.signer("RS256").kid, "kedge", 300),
            ("urn:kedge:es256", "ES256", keys.signer("ES256").kid, "kedge", 120),
            ("urn:other", "RS256", keys.signer("RS256").kid, "other-api", 600),
        ]
        for resource, alg, kid, audience, lifetime in cases:
            token = await op.client_credentials("svc", "svc-secret", resource=resource)
            assert jwt.get_unverified_header(token) == {"alg": alg, "kid": kid, "typ": "at+jwt"}
            claims = await verify(op, token, audience)
            assert claims["sub"] == claims["client_id"] == "svc"
            assert claims["permissions"] == ["svc.read", "svc.write"]
            assert claims["groups"] == ["ops"]
            assert claims["kedge"] == {"perms": ["a"]}
            assert claims["exp"] - claims["iat"] == lifetime

        # SigningKey.sign forges tokens with the provider's own key (for hostile-token tables).
        now = int(time.time())
        forged = keys.signer("ES256").sign(
            {"iss": op.issuer, "aud": "kedge", "sub": "x", "iat": now, "exp": now + 60}
        )
        assert jwt.get_unverified_header(forged)["kid"] == keys.signer("ES256").kid
        assert (await verify(op, forged, "kedge"))["sub"] == "x"

        with pytest.raises(OidcHarnessError, match="invalid_client"):
            await op.client_credentials("svc", "wrong-secret")
        with pytest.raises(OidcHarnessError, match="invalid_target"):
            await op.client_credentials("svc", "svc-secret", resource="urn:unknown")


async def test_login_yields_id_and_access_tokens_with_account_claims(tmp_path: Path) -> None:
    keys = SigningKeys.generate()
    async with OidcProvider.start(
        tmp_path, clients=[CLI, WEB], accounts=[ALICE], keys=keys, resources=RESOURCES
    ) as op:
        for client, secret, id_alg in [(CLI, None, "RS256"), (WEB, "web-secret", "ES256")]:
            tokens = await op.login(client.client_id, "alice", "correct horse", secret=secret)
            assert tokens["token_type"] == "Bearer"

            assert jwt.get_unverified_header(tokens["id_token"])["kid"] == keys.signer(id_alg).kid
            id_claims = await verify(op, tokens["id_token"], client.client_id)
            assert id_claims["sub"] == "alice"
            assert id_claims["permissions"] == ["svc.read"]
            assert id_claims["groups"] == ["dev"]
            assert id_claims["kedge"] == {"perms": ["b"]}

            assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
            at_claims = await verify(op, tokens["access_token"], "kedge")
            assert at_claims["sub"] == "alice"
            assert at_claims["client_id"] == client.client_id
            assert at_claims["permissions"] == ["svc.read"]
            assert at_claims["groups"] == ["dev"]

        with pytest.raises(OidcLoginError):
            await op.login("kedge-cli", "alice", "wrong password")
        with pytest.raises(OidcLoginError):
            await op.login("kedge-cli", "mallory", "correct horse")


async def test_restart_with_rotated_keys_serves_the_new_kid(tmp_path: Path) -> None:
    old = SigningKeys.generate(ec256=False)
    async with OidcProvider.start(tmp_path, clients=[SERVICE], keys=old) as op:
        issuer = op.issuer
        old_kid = old.signer("RS256").kid
        token = await op.client_credentials("svc", "svc-secret")
        assert jwt.get_unverified_header(token)["kid"] == old_kid

        overlap = old.rotated(keep_old=True)
        new_kid = overlap.signer("RS256").kid
        await op.restart(keys=overlap)
        assert op.issuer == issuer
        assert [k["kid"] for k in (await op.jwks())["keys"]] == [new_kid, old_kid]
        fresh = await op.client_credentials("svc", "svc-secret")
        assert jwt.get_unverified_header(fresh)["kid"] == new_kid
        # A token signed before the rotation still verifies while the old key is published.
        assert (await verify(op, token, "kedge"))["sub"] == "svc"

        await op.restart(keys=overlap.rotated(keep_old=False))
        assert old_kid not in [k["kid"] for k in (await op.jwks())["keys"]]
        with pytest.raises(LookupError):
            await verify(op, token, "kedge")

        await op.stop()
        with pytest.raises(OSError):
            await op.jwks()


async def test_startup_failure_raises_with_the_provider_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OidcHarnessError, match="EADDRINUSE"):
            async with OidcProvider.start(tmp_path, clients=[SERVICE], port=port):
                pass


def test_missing_install_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(OidcHarnessError) as excinfo:
        require_installed(tmp_path)
    assert INSTALL_COMMAND in str(excinfo.value)

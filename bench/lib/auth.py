"""The auth bench's pieces: a signing key, a JWT for the load, and a loopback JWKS server.

The token is RS256 (the common provider default) with a 2048-bit key, an hour of life and
the permission the bench route requires; the JWKS is served once over plain http on
127.0.0.1 (allowed for loopback), so the edge fetches it at start and then verifies from
its cache.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["BENCH_PERMISSION", "JwksServer", "auth_section", "mint_token", "rsa_signing_key"]

BENCH_PERMISSION = "bench.read"
_KID = "bench-1"
_AUDIENCE = "kedge-bench"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rsa_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwks(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": _KID, "use": "sig", "alg": "RS256"}
    return {"keys": [{**jwk, "n": _uint(numbers.n), "e": _uint(numbers.e)}]}


def mint_token(key: rsa.RSAPrivateKey, issuer: str, *, subject: str = "bench") -> str:
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": _KID}
    claims = {
        "iss": issuer,
        "aud": _AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 3600,
        "permissions": [BENCH_PERMISSION],
    }
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


class JwksServer:
    """GET anything -> the JWKS, on 127.0.0.1 (a thread of the harness, on the load CPU)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        body = json.dumps(public_jwks(key)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def auth_section(issuer: str) -> dict[str, Any]:
    """The `auth:` section of the authenticated kedge target."""
    return {
        "issuers": [
            {
                "name": "bench",
                "issuer": issuer,
                "audiences": [_AUDIENCE],
                "jwks_url": issuer + "/jwks",
            }
        ],
        "identity_header": "x-kedge-principal",
    }

"""kubeconfig `exec` credential plugins (client.authentication.k8s.io v1 and v1beta1).

The plugin runs with the kubeconfig's `args` and `env` on top of ours, `KUBERNETES_EXEC_INFO`
describing the request (never interactive: winch has no terminal), no stdin, and a timeout.
It prints an ExecCredential whose status holds a token or a client certificate and key, and
optionally `expirationTimestamp` (RFC 3339): the credential is cached until then, as
client-go does, and the plugin runs again when it is due.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from kedge.dialer.credentials import AuthSourceError, BearerToken, ClientCertificate, Credential

__all__ = ["EXEC_API_VERSIONS", "parse_exec_credential", "run_exec_plugin"]

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_MAX_OUTPUT = 1 << 20
_STDERR_IN_ERROR = 300


def parse_exec_credential(source: str, api_version: str, stdout: bytes) -> Credential:
    """The credential in a plugin's output; AuthSourceError for anything malformed."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise AuthSourceError(source, "the exec plugin printed something other than JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise AuthSourceError(source, "the exec plugin's output is not an ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise AuthSourceError(
            source,
            f"the exec plugin answered apiVersion {doc.get('apiVersion')!r}, not {api_version}",
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise AuthSourceError(source, "the exec plugin's ExecCredential has no status")
    expires_at = _expiry(source, status.get("expirationTimestamp"))
    token = status.get("token")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if isinstance(token, str) and token:
        return BearerToken(token, expires_at)
    if isinstance(cert, str) and cert and isinstance(key, str) and key:
        return ClientCertificate(cert.encode(), key.encode(), expires_at)
    raise AuthSourceError(
        source, "the exec plugin returned neither a token nor clientCertificateData+clientKeyData"
    )


def _expiry(source: str, value: object) -> float | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise AuthSourceError(
            source, f"the exec plugin's expirationTimestamp {str(value)[:40]!r} is not RFC 3339"
        ) from None
    if when.tzinfo is None:
        raise AuthSourceError(source, "the exec plugin's expirationTimestamp has no time zone")
    return when.timestamp()


async def run_exec_plugin(
    source: str,
    spec: Mapping[str, Any],
    *,
    base_dir: Path,
    environ: Mapping[str, str],
    time_limit: float,
) -> Credential:
    """Run the kubeconfig user's `exec` block and parse what it prints."""
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise AuthSourceError(
            source, f"exec apiVersion {api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}"
        )
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise AuthSourceError(source, "the exec block has no command")
    if spec.get("interactiveMode") == "Always":
        raise AuthSourceError(
            source, "the exec plugin needs a terminal (interactiveMode: Always); winch has none"
        )
    # client-go: a relative path with a separator is relative to the kubeconfig's directory.
    if os.sep in command and not os.path.isabs(command):
        command = str(base_dir / command)
    args = [str(a) for a in spec.get("args") or ()]
    env = dict(environ)
    for entry in spec.get("env") or ():
        if isinstance(entry, dict) and "name" in entry:
            env[str(entry["name"])] = str(entry.get("value", ""))
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            command,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        hint = spec.get("installHint")
        extra = f"; {' '.join(str(hint).split())}" if hint else ""
        raise AuthSourceError(
            source, f"cannot run exec plugin {command}: {exc.strerror}{extra}"
        ) from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AuthSourceError(
            source, f"exec plugin {command} did not finish within {time_limit:g}s"
        ) from None
    if proc.returncode != 0:
        tail = " ".join(stderr.decode(errors="replace").split())[-_STDERR_IN_ERROR:]
        raise AuthSourceError(
            source, f"exec plugin {command} exited with status {proc.returncode}: {tail}"
        )
    if len(stdout) > _MAX_OUTPUT:
        raise AuthSourceError(source, f"exec plugin {command} printed over {_MAX_OUTPUT} bytes")
    return parse_exec_credential(source, str(api_version), stdout)

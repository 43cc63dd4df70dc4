"""A kubeconfig whose user is an exec credential plugin (as EKS, GKE and OIDC helpers use).

The plugin prints an ExecCredential with the token in a file the test controls; the edge
must run it through kubernetes_asyncio, and run it again after the API answers 401 (the
token was rotated and the old one revoked), without losing the endpoints meanwhile.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import yaml

from tests.integration.test_k8s_resolver import (
    NS,
    TIMEOUT,
    PodNet,
    api_slice,
    edge_yaml,
    eventually,
    kube_yaml,
    pod_ips,
    pods_reached,
)
from tests.support.edge import running_edge
from tests.support.fake_kube import FakeKube, Port, endpoint
from tests.support.fake_kube import service as kube_service

PLUGIN = """
import json, pathlib, sys
token = pathlib.Path(sys.argv[1]).read_text().strip()
with open(sys.argv[2], "a") as runs:
    runs.write(token + "\\n")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": token},
}))
"""


def exec_kubeconfig(kube: FakeKube, tmp: Path, token_file: Path, runs: Path) -> Path:
    """The fake's kubeconfig with its user replaced by the plugin."""
    path = kube.write_kubeconfig(tmp / "kubeconfig")
    config = yaml.safe_load(path.read_text())
    plugin = tmp / "plugin.py"
    plugin.write_text(PLUGIN)
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), str(token_file), str(runs)],
            "interactiveMode": "Never",
        }
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_an_exec_plugin_token_is_used_and_refreshed_after_a_401(tmp_path: Path) -> None:
    token_file, runs = tmp_path / "token", tmp_path / "runs"
    token_file.write_text("plugin-token-1")
    async with (
        FakeKube(bookmark_interval=0.2) as kube,
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
    ):
        pods = PodNet()
        try:
            kube.tokens = {"plugin-token-1": "plugin-user"}
            kube.apply(kube_service("api", NS, ports=[Port("http", 80, "http")]))
            port = await pods.start(pod_ips(2, 2))
            kube.apply(api_slice("api-a", port, endpoint("127.0.0.2")))
            config = exec_kubeconfig(kube, tmp_path, token_file, runs)
            backends = {"api": "api.apps:http"}
            async with running_edge(edge_yaml(kube_yaml(config), backends)) as edge:
                assert await pods_reached(session, edge, "api.test", 3) == {f"127.0.0.2:{port}"}
                assert runs.read_text().split() == ["plugin-token-1"]
                # Rotate: the provider issues a new token and revokes the old one; the next
                # watch request gets 401, and the edge must run the plugin again.
                token_file.write_text("plugin-token-2")
                kube.tokens = {"plugin-token-2": "plugin-user"}
                kube.apply(api_slice("api-b", port, endpoint("127.0.0.3")))
                kube.disconnect_watches()
                await eventually(
                    lambda: "plugin-token-2" in runs.read_text().split(), "the plugin ran again"
                )
                want = {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}
                for _ in range(100):
                    if await pods_reached(session, edge, "api.test", 6) == want:
                        break
                else:
                    raise AssertionError("the change after the rotation never arrived")
        finally:
            await pods.aclose()
    users = [r.user for r in kube.requests if r.resource == "endpointslices"]
    # The request with the revoked token was refused (no user), every other one was the
    # plugin's; the warning logged in between is the 401.
    assert set(users) == {"plugin-user", None} and users.count(None) >= 1

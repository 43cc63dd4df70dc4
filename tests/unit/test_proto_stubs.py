"""The checked-in gRPC stubs under proto/e2e match what proto/generate.sh produces now."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ["hello_pb2.py", "hello_pb2.pyi", "hello_pb2_grpc.py"]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    # The same script a developer runs, with this interpreter's grpcio-tools.
    subprocess.run(
        ["bash", str(ROOT / "proto" / "generate.sh"), str(out)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    return out / "proto" / "e2e"


@pytest.mark.parametrize("name", STUBS)
def test_checked_in_stub_is_current(regenerated: Path, name: str) -> None:
    fresh = (regenerated / name).read_bytes()
    checked_in = (ROOT / "proto" / "e2e" / name).read_bytes()
    assert checked_in == fresh, f"proto/e2e/{name} is stale: run proto/generate.sh"


def test_grpc_stub_imports_messages_through_the_package_path() -> None:
    # Generating with -I. from the repository root is what makes this a package import.
    source = (ROOT / "proto" / "e2e" / "hello_pb2_grpc.py").read_text()
    assert "from proto.e2e import hello_pb2 as" in source


def test_stubs_describe_both_services() -> None:
    from proto.e2e import hello_pb2

    services = hello_pb2.DESCRIPTOR.services_by_name
    assert sorted(services) == ["Greeter", "Other"]
    greeter = services["Greeter"].methods_by_name
    kinds = {
        name: (method.client_streaming, method.server_streaming) for name, method in greeter.items()
    }
    assert kinds == {
        "SayHello": (False, False),
        "ServerStream": (False, True),
        "ClientStream": (True, False),
        "Bidi": (True, True),
    }
    assert list(services["Other"].methods_by_name) == ["Ping"]

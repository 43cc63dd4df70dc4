"""Hot reload: SIGHUP and file changes swap the route table; bad files keep the old config.

Two recording backends answer with their names ("a" or "b"); the two configs route the same
host to a backend named `app` whose only endpoint is one or the other (and whose balancer
differs, so every reload builds a new Backend and retires the old one while requests use it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from tests.support.backend import (
    RecordedRequest,
    RecordingBackend,
    recording_backend,
    simple_response,
)
from tests.support.edge import RunningEdge, running_edge
from tests.support.ops_client import KeepAliveClient, admin_get, curl, metric_value
from tests.support.ops_process import EdgeProcess, edge_process, write_atomically


def config(endpoint: str, balancer: str = "round_robin") -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: app
    balancer: {balancer}
    resolver:
      static:
        endpoints: ["{endpoint}"]
routes:
  - name: app
    backend: app
    match:
      host: app.test
"""


def _named(name: str) -> Callable[[RecordedRequest, asyncio.StreamWriter], Awaitable[None]]:
    async def respond(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
        w.write(simple_response(200, name.encode()))

    return respond


def cfg_a(a: RecordingBackend) -> str:
    return config(a.address, "round_robin")


def cfg_b(b: RecordingBackend) -> str:
    return config(b.address, "p2c")


# Bad files: (id, text, what the logged error must name besides the file).
BAD_FILES = [
    ("yaml-error", "listeners:\n  - name: http\nroutes: [\n", ["line ", "YAML", "fix: "]),
    (
        "unknown-key",
        "x",  # replaced below: the good config with a misspelt key
        ["routes[0].matchh", "unknown key", "fix: did you mean 'match'"],
    ),
    (
        "missing-backend",
        "x",
        ["routes[0].backend", "unknown backend 'nope'", "fix: "],
    ),
]


def bad_text(kind: str, good: str) -> str:
    if kind == "unknown-key":
        return good.replace("    match:", "    matchh:")
    if kind == "missing-backend":
        return good.replace("backend: app", "backend: nope")
    return dict((k, t) for k, t, _ in BAD_FILES)[kind]


async def which(url: str) -> bytes:
    res = await curl("-H", "Host: app.test", f"{url}/")
    assert res.status == 200, (res.status, res.body)
    return res.body


async def metrics(admin_port: int) -> str:
    status, body = await admin_get(admin_port, "/metrics")
    assert status == 200
    return body.decode()


async def wait_generation(edge: RunningEdge, generation: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while edge.app.state.generation != generation:
            await asyncio.sleep(0.01)


def events(edge: RunningEdge, message: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(x) for x in edge.log_lines()]
    return [x for x in lines if str(x.get("message", "")).startswith(message)]


@pytest.fixture
async def backends() -> AsyncIterator[tuple[RecordingBackend, RecordingBackend]]:
    async with recording_backend(_named("a")) as a, recording_backend(_named("b")) as b:
        yield a, b


async def test_file_change_swaps_the_route_table(
    backends: tuple[RecordingBackend, RecordingBackend],
) -> None:
    a, b = backends
    async with running_edge(cfg_a(a), watch_interval=0.02) as edge:
        assert await which(edge.url) == b"a"
        edge.write_config(cfg_b(b))
        await wait_generation(edge, 2)
        assert await which(edge.url) == b"b"
        assert len(a.requests) == 1 and len(b.requests) == 1
        text = await metrics(edge.app.admin.bound_port)  # type: ignore[union-attr]
        assert metric_value(text, "kedge_config_generation") == 2
        assert metric_value(text, "kedge_config_reloads_total", result="success") == 1
        assert (metric_value(text, "kedge_config_reloads_total", result="failure") or 0) == 0
        (ev,) = events(edge, "config reloaded")
        assert ev["generation"] == 2 and ev["reason"] == "file changed"


@pytest.mark.parametrize(("kind", "text", "names"), BAD_FILES, ids=[k for k, _, _ in BAD_FILES])
async def test_bad_file_keeps_the_old_config(
    backends: tuple[RecordingBackend, RecordingBackend], kind: str, text: str, names: list[str]
) -> None:
    a, b = backends
    async with running_edge(cfg_a(a), watch_interval=0.02) as edge:
        admin = edge.app.admin.bound_port  # type: ignore[union-attr]
        edge.write_config(bad_text(kind, cfg_b(b)))
        async with asyncio.timeout(5):
            while not events(edge, "config reload failed"):
                await asyncio.sleep(0.01)
        (ev,) = events(edge, "config reload failed")
        error = str(ev["error"])
        assert error.startswith(edge.config_path + ": "), error
        for part in names:
            assert part in error, (part, error)
        assert edge.app.state.generation == 1
        assert await which(edge.url) == b"a"
        text_m = await metrics(admin)
        assert metric_value(text_m, "kedge_config_reloads_total", result="failure") == 1
        assert metric_value(text_m, "kedge_config_generation") == 1
        # A good file afterwards is picked up: the failure did not stop the watcher.
        edge.write_config(cfg_b(b))
        await wait_generation(edge, 2)
        assert await which(edge.url) == b"b"


async def wait_reloaded(edge: EdgeProcess, generation: int, start: int) -> dict[str, Any]:
    return await edge.wait_event(
        lambda e: e.get("message") == "config reloaded" and e.get("generation") == generation,
        start=start,
    )


async def test_sighup_reloads_a_subprocess_edge(
    backends: tuple[RecordingBackend, RecordingBackend],
) -> None:
    a, b = backends
    with tempfile.TemporaryDirectory() as d:
        async with edge_process(cfg_a(a), d, "--watch-interval", "0") as edge:
            assert await which(edge.url) == b"a"
            # With file watching off, a new file alone changes nothing...
            write_atomically(edge.config_path, cfg_b(b))
            assert await which(edge.url) == b"a"
            # ...until SIGHUP.
            mark = len(edge.events)
            edge.send(signal.SIGHUP)
            ev = await wait_reloaded(edge, 2, mark)
            assert ev["reason"] == "SIGHUP"
            assert await which(edge.url) == b"b"
            # A bad file on SIGHUP: logged with file, key path and fix; the old config stays.
            write_atomically(edge.config_path, bad_text("missing-backend", cfg_a(a)))
            mark = len(edge.events)
            edge.send(signal.SIGHUP)
            failed = await edge.wait_event(
                lambda e: str(e.get("message")).startswith("config reload failed"), start=mark
            )
            assert f"{edge.config_path}: routes[0].backend: unknown backend 'nope'" in str(
                failed["error"]
            )
            assert "(fix: " in str(failed["error"])
            assert await which(edge.url) == b"b"
            text = await metrics(edge.admin_port)
            assert metric_value(text, "kedge_config_reloads_total", result="failure") == 1
            assert metric_value(text, "kedge_config_reloads_total", result="success") == 1
            assert metric_value(text, "kedge_config_generation") == 2
            edge.send(signal.SIGTERM)
            assert await edge.wait_exit(10) == 0


@pytest.mark.slow
async def test_twenty_reloads_under_load_fail_no_request(
    backends: tuple[RecordingBackend, RecordingBackend],
) -> None:
    a, b = backends
    configs = [cfg_a(a), cfg_b(b)]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()

    with tempfile.TemporaryDirectory() as d:
        async with edge_process(configs[0], d, "--watch-interval", "0") as edge:
            port = edge.port()

            async def worker() -> None:
                client = KeepAliveClient("127.0.0.1", port)
                try:
                    while not stop.is_set():
                        try:
                            res = await client.request("GET", "/load", {"Host": "app.test"})
                        except Exception as exc:  # every failure is counted, none is retried
                            failures.append(repr(exc))
                            await client.close()
                            client.closed_by_server = True
                            continue
                        if res.status != 200:
                            failures.append(f"{res.status} {res.body!r}")
                        outcomes[res.body.decode("latin-1")] += 1
                finally:
                    await client.close()

            async def wait_for_traffic(n: int) -> None:
                target = outcomes.total() + n
                async with asyncio.timeout(10):
                    while outcomes.total() < target and not failures:
                        await asyncio.sleep(0.002)

            workers = [asyncio.create_task(worker()) for _ in range(8)]
            try:
                await wait_for_traffic(50)
                for i in range(20):
                    write_atomically(edge.config_path, configs[(i + 1) % 2])
                    mark = len(edge.events)
                    edge.send(signal.SIGHUP)
                    await wait_reloaded(edge, i + 2, mark)
                    await wait_for_traffic(16)  # requests on the new table before the next swap
                # After the last reload (config a) every new request goes to a.
                before = outcomes["b"]
                await wait_for_traffic(50)
            finally:
                stop.set()
                await asyncio.gather(*workers)
            assert failures == [], failures[:5]
            assert outcomes["a"] > 0 and outcomes["b"] > 0
            # At most one in-flight request per connection can still finish on b.
            assert outcomes["b"] - before <= 8
            assert set(outcomes) == {"a", "b"}
            text = await metrics(edge.admin_port)
            assert metric_value(text, "kedge_config_generation") == 21
            assert metric_value(text, "kedge_config_reloads_total", result="success") == 20
            assert (metric_value(text, "kedge_config_reloads_total", result="failure") or 0) == 0
            assert (
                metric_value(text, "kedge_requests_total",
                             listener="http", route="app", backend="app", code="200")
                == outcomes.total()
            )  # fmt: skip
            edge.send(signal.SIGTERM)
            assert await edge.wait_exit(10) == 0


async def test_unloadable_backend_ca_keeps_the_old_config(
    backends: tuple[RecordingBackend, RecordingBackend],
) -> None:
    """A file that parses but cannot be built (a CA file with no certificate in it)."""
    a, b = backends
    async with running_edge(cfg_a(a), watch_interval=0.02) as edge:
        ca = os.path.join(os.path.dirname(edge.config_path), "garbage-ca.pem")
        with open(ca, "w") as f:
            f.write("not a certificate\n")
        bad = cfg_b(b).replace("    balancer:", f"    tls: {{ca_file: {ca}}}\n    balancer:")
        edge.write_config(bad)
        async with asyncio.timeout(5):
            while not events(edge, "config reload failed"):
                await asyncio.sleep(0.01)
        (ev,) = events(edge, "config reload failed")
        assert str(ev["error"]).startswith(edge.config_path), ev
        assert edge.app.state.generation == 1
        assert await which(edge.url) == b"a"
        # The watcher survived the failure: a good file is still picked up.
        edge.write_config(cfg_b(b))
        await wait_generation(edge, 2)
        assert await which(edge.url) == b"b"


async def test_sighup_after_a_write_reloads_once(
    backends: tuple[RecordingBackend, RecordingBackend],
) -> None:
    """The file watcher must not reload again a file a SIGHUP reload already read."""
    a, b = backends
    async with running_edge(cfg_a(a), watch_interval=0.02) as edge:
        edge.write_config(cfg_b(b))
        assert await edge.app.reload("SIGHUP")  # no await before it: the watcher saw nothing
        # Nothing signals "the watcher looked and did nothing"; ten watch intervals will do.
        await asyncio.sleep(0.2)
        assert edge.app.state.generation == 2
        assert [e["reason"] for e in events(edge, "config reloaded")] == ["SIGHUP"]
        assert await which(edge.url) == b"b"

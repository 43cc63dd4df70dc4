"""The Helm chart (deploy/helm/kedge), checked offline: rendered by deploy/render.py, validated
against the Kubernetes JSON schemas, and checked for what the edge needs in a cluster (spread,
probes, drain timing, least-privilege RBAC, a config kedge accepts, hot reload)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy import render
from deploy.helmlite import Engine, TemplateError, go_print, to_yaml
from kedge.core.config_watch import ConfigFileWatcher
from kedge.edge.config_parser import load_edge_config

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "kubernetes" / "kedge.yaml"
# The chart's floor (the native preStop sleep action) and recent releases.
KUBE_VERSIONS = ("1.30", "1.34", "1.37")

OVERRIDE_VALUES = """
replicaCount: 3
rbac:
  namespaces: [apps, payments]
service:
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [192.0.2.0/24]
  annotations:
    example.test/lb: internal
preStop:
  exec: true
  sleepSeconds: 10
terminationGracePeriodSeconds: 60
podAnnotations:
  example.test/team: edge
extraArgs: [--log-level, debug]
extraVolumes:
  - name: tls
    secret:
      secretName: kedge-tls
extraVolumeMounts:
  - name: tls
    mountPath: /etc/kedge-tls
    readOnly: true
podDisruptionBudget:
  minAvailable: 2
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: dedicated
    operator: Equal
    value: edge
    effect: NoSchedule
config:
  demo_backend: null
  listeners:
    - name: http
      address: "0.0.0.0:8080"
    - name: grpc
      address: "[::]:9090"
  timeouts:
    drain: 40s
  backends:
    - name: app
      resolver:
        dns:
          name: app.apps.svc.cluster.internal
          port: 8080
  routes:
    - name: app
      backend: app
      match:
        host: app.example.test
"""


def _render(values: str | None = None) -> render.Rendered:
    extra = [render.load_values(values)] if values else []
    return render.render_chart(values=extra)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return _render().documents()


@pytest.fixture(scope="module")
def override_docs() -> list[dict[str, Any]]:
    return _render(OVERRIDE_VALUES).documents()


# --- the committed manifests and the schemas ----------------------------------------------------


def test_committed_manifests_equal_a_fresh_render() -> None:
    fresh = _render().text()
    assert COMMITTED.read_text() == fresh, (
        "deploy/kubernetes/kedge.yaml is stale; regenerate it with "
        "python deploy/render.py > deploy/kubernetes/kedge.yaml"
    )


def test_render_cli_prints_the_manifests_and_notes(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("replicaCount: 4\n")
    script = str(ROOT / "deploy" / "render.py")
    out = subprocess.run(
        [sys.executable, script, "--values", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert _one(list(yaml.safe_load_all(out.stdout)), "Deployment")["spec"]["replicas"] == 4
    notes = subprocess.run(
        [sys.executable, script, "--notes"], capture_output=True, text=True, timeout=60
    )
    assert "kubectl --namespace kedge get service kedge" in notes.stdout
    assert "curl -H 'Host: demo.local' http://$EDGE:80/hello" in notes.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [None, OVERRIDE_VALUES], ids=["defaults", "override"])
def test_every_document_validates_against_the_kubernetes_schemas(
    values: str | None, version: str
) -> None:
    docs = _render(values).documents()
    assert len(docs) >= 8
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misspelt_field(default_docs: list[dict[str, Any]]) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(_one(default_docs, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_documents_come_in_helms_install_order(default_docs: list[dict[str, Any]]) -> None:
    kinds = [d["kind"] for d in default_docs]
    assert kinds == [
        "PodDisruptionBudget",
        "ServiceAccount",
        "ConfigMap",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Service",
        "Deployment",
    ]
    namespaced = [d for d in default_docs if not d["kind"].startswith("Cluster")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"kedge"}


# --- the Deployment -----------------------------------------------------------------------------


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(_one(docs, "Deployment")["spec"]["template"])


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _pod(docs)["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_replicas_and_rollout_keep_the_edge_up(
    default_docs: list[dict[str, Any]], override_docs: list[dict[str, Any]]
) -> None:
    spec = _one(default_docs, "Deployment")["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _one(override_docs, "Deployment")["spec"]["replicas"] == 3


def test_pods_spread_over_zones_and_hosts(default_docs: list[dict[str, Any]]) -> None:
    pod = _pod(default_docs)
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for c in constraints:
        assert c["maxSkew"] == 1
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
        selector = c["labelSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert selector == _one(default_docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_probes_hit_readyz_and_livez_on_the_admin_port(default_docs: list[dict[str, Any]]) -> None:
    c = _container(default_docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9901}


def test_container_runs_non_root_with_a_read_only_root(default_docs: list[dict[str, Any]]) -> None:
    pod_sc = _pod(default_docs)["spec"]["securityContext"]
    sc = _container(default_docs)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == sc["runAsUser"] == 10001  # the Dockerfile's kedge user
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_resources_have_requests_and_limits(default_docs: list[dict[str, Any]]) -> None:
    resources = _container(default_docs)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def _config_of(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(_one(docs, "ConfigMap")["data"]["edge.yaml"])
    return path


@pytest.mark.parametrize("which", ["defaults", "override"])
def test_termination_grace_outlasts_prestop_plus_drain(
    which: str,
    default_docs: list[dict[str, Any]],
    override_docs: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    docs = default_docs if which == "defaults" else override_docs
    pod = _pod(docs)["spec"]
    pre_stop = _container(docs)["lifecycle"]["preStop"]
    sleep = (
        pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else int(pre_stop["exec"]["command"][1])
    )
    assert 1 <= sleep <= 15
    drain = load_edge_config(str(_config_of(docs, tmp_path))).timeouts.drain
    assert pod["terminationGracePeriodSeconds"] > sleep + drain


def test_prestop_can_use_an_exec_sleep(override_docs: list[dict[str, Any]]) -> None:
    assert _container(override_docs)["lifecycle"]["preStop"] == {
        "exec": {"command": ["sleep", "10"]}
    }


def test_config_directory_is_mounted_whole_from_the_configmap(
    default_docs: list[dict[str, Any]],
) -> None:
    c = _container(default_docs)
    assert c["args"][:3] == ["serve", "--config", "/etc/kedge/edge.yaml"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/kedge"
    assert all("subPath" not in m and "subPathExpr" not in m for m in c["volumeMounts"])
    volumes = {v["name"]: v for v in _pod(default_docs)["spec"]["volumes"]}
    configmap = _one(default_docs, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert list(configmap["data"]) == ["edge.yaml"]
    # Hot reload replaces restarts: no checksum annotation that would roll the pods.
    assert "annotations" not in _pod(default_docs)["metadata"]


# --- the edge config ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, OVERRIDE_VALUES], ids=["defaults", "override"])
def test_configmap_holds_a_config_kedge_check_accepts(values: str | None, tmp_path: Path) -> None:
    path = _config_of(_render(values).documents(), tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "kedge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    config = load_edge_config(str(path))
    assert config.admin.address.host == "0.0.0.0"


def test_configmap_config_is_the_values_config(override_docs: list[dict[str, Any]]) -> None:
    data = yaml.safe_load(_one(override_docs, "ConfigMap")["data"]["edge.yaml"])
    values = render.coalesce(
        render.load_values((render.CHART_DIR / "values.yaml").read_text()),
        render.load_values(OVERRIDE_VALUES),
    )
    assert data == values["config"]
    assert "demo_backend" not in data  # a null in the override deletes the default


def test_ports_follow_the_listeners(override_docs: list[dict[str, Any]]) -> None:
    c = _container(override_docs)
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("http", 8080),
        ("grpc", 9090),
        ("admin", 9901),
    ]
    service = next(
        s for s in _by_kind(override_docs, "Service") if s["spec"]["type"] != "ClusterIP"
    )
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 80, "http"),
        ("grpc", 9090, "grpc"),
    ]
    assert service["spec"]["externalTrafficPolicy"] == "Local"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("config:\n  admin: null\n", "config.admin.address must be set"),
        ("config:\n  admin:\n    address: 127.0.0.1:9901\n", "is loopback"),
        ("config:\n  listeners:\n  - address: 0.0.0.0:80\n", "listeners[0].name is required"),
        ("config:\n  listeners:\n  - {name: Web_1, address: 0.0.0.0:80}\n", "port name"),
        ("config:\n  listeners:\n  - {name: admin, address: 0.0.0.0:80}\n", 'not be "admin"'),
        ("config:\n  listeners:\n  - {name: web, address: 127.0.0.1:80}\n", "is loopback"),
    ],
)
def test_unusable_configs_fail_the_render(values: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        _render(values)


# --- Services, RBAC, PDB, ServiceAccount --------------------------------------------------------


def test_edge_service_is_a_load_balancer_and_admin_stays_internal(
    default_docs: list[dict[str, Any]],
) -> None:
    services = {s["metadata"]["name"]: s for s in _by_kind(default_docs, "Service")}
    edge, admin = services["kedge"], services["kedge-admin"]
    assert edge["spec"]["type"] == "LoadBalancer"
    assert [p["targetPort"] for p in edge["spec"]["ports"]] == ["http"]
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [
        {"name": "admin", "port": 9901, "targetPort": "admin", "protocol": "TCP"}
    ]
    assert admin["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9901",
        "prometheus.io/path": "/metrics",
    }
    pod_labels = _pod(default_docs)["metadata"]["labels"]
    for s in services.values():
        assert s["spec"]["selector"].items() <= pod_labels.items()


_RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"]},
    {"apiGroups": [""], "resources": ["services"]},
]


def _assert_read_only_rules(rules: list[dict[str, Any]]) -> None:
    assert [{k: r[k] for k in ("apiGroups", "resources")} for r in rules] == _RULES
    for r in rules:
        assert set(r) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no URLs
        assert sorted(r["verbs"]) == ["get", "list", "watch"]


def test_cluster_rbac_is_read_only_on_endpointslices_and_services(
    default_docs: list[dict[str, Any]],
) -> None:
    role = _one(default_docs, "ClusterRole")
    _assert_read_only_rules(role["rules"])
    binding = _one(default_docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = _one(default_docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kedge"}
    ]
    assert _pod(default_docs)["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_namespaced_rbac_grants_a_role_per_namespace(override_docs: list[dict[str, Any]]) -> None:
    assert not _by_kind(override_docs, "ClusterRole")
    assert not _by_kind(override_docs, "ClusterRoleBinding")
    roles = _by_kind(override_docs, "Role")
    bindings = _by_kind(override_docs, "RoleBinding")
    assert [r["metadata"]["namespace"] for r in roles] == ["apps", "payments"]
    assert [b["metadata"]["namespace"] for b in bindings] == ["apps", "payments"]
    for role in roles:
        _assert_read_only_rules(role["rules"])
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "kedge", "namespace": "kedge"}]


def test_pod_disruption_budget_keeps_an_edge_up(
    default_docs: list[dict[str, Any]], override_docs: list[dict[str, Any]]
) -> None:
    pdb = _one(default_docs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert (
        pdb["selector"]["matchLabels"].items() <= _pod(default_docs)["metadata"]["labels"].items()
    )
    pdb = _one(override_docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb


def test_release_name_and_overrides_shape_the_names() -> None:
    docs = render.render_chart(release_name="edge-east", namespace="ingress").documents()
    assert _one(docs, "Deployment")["metadata"]["name"] == "edge-east-kedge"
    assert _one(docs, "ClusterRoleBinding")["subjects"][0]["namespace"] == "ingress"
    off = "serviceAccount: {create: false}\nrbac: {create: false}\nadminService: {enabled: false}\n"
    kinds = [d["kind"] for d in _render(off).documents()]
    assert kinds == ["PodDisruptionBudget", "ConfigMap", "Service", "Deployment"]
    assert _pod(_render(off).documents())["spec"]["serviceAccountName"] == "default"


# --- hot reload through a ConfigMap volume -------------------------------------------------------


def _kubelet_write(config_dir: Path, stamp: str, text: str) -> None:
    """Publish files the way kubelet's AtomicWriter does: a new timestamped directory, a
    `..data` symlink swapped by rename, and user-visible names that link through `..data`."""
    new = config_dir / f"..{stamp}"
    new.mkdir()
    (new / "edge.yaml").write_text(text)
    old = os.readlink(config_dir / "..data") if (config_dir / "..data").is_symlink() else None
    tmp = config_dir / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, config_dir / "..data")
    if not (config_dir / "edge.yaml").is_symlink():
        (config_dir / "edge.yaml").symlink_to("..data/edge.yaml")
    if old is not None:
        shutil.rmtree(config_dir / old)


async def test_watcher_sees_a_configmap_symlink_swap(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "edge-minimal.yaml").read_text()
    _kubelet_write(tmp_path, "2025_01_01_00_00_00.000000001", text)
    path = str(tmp_path / "edge.yaml")
    changed = asyncio.Event()

    async def on_change() -> None:
        changed.set()

    watcher = ConfigFileWatcher(path, 0.01, on_change)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.05)
        assert not changed.is_set()
        # Same size, same mtime: only the swap itself (a new inode behind the link) differs.
        new_text = text.replace("app.example.test", "web.example.test")
        old_stat = os.stat(path)
        _kubelet_write(tmp_path, "2025_01_01_00_01_00.000000002", new_text)
        os.utime(path, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))
        assert os.stat(path).st_size == old_stat.st_size
        await asyncio.wait_for(changed.wait(), timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    config = load_edge_config(path)
    assert config.routes[0].match.host == "web.example.test"


# --- the renderer's Go template semantics (so `helm template` would print the same) -------------


def _tpl(src: str, data: Any = None, defines: str = "") -> str:
    engine = Engine()
    if defines:
        engine.add("helpers", defines)
    engine.add("t", src)
    return engine.render("t", data if data is not None else {})


@pytest.mark.parametrize(
    ("src", "data", "want"),
    [
        ("a  {{- 1 -}}  b", {}, "a1b"),
        ("a {{-3}} b", {}, "a -3 b"),  # no space after '-': a negative number, no trim
        ("x\n  {{- /* gone */ -}}\n  y", {}, "xy"),
        (
            "{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}",
            {"m": {"b": 2, "a": 1}},
            "a=1;b=2;",
        ),
        ("{{ range .l }}[{{ . }}]{{ else }}none{{ end }}", {"l": []}, "none"),
        ("{{ range $i, $x := .l }}{{ $i }}{{ $x }}{{ end }}", {"l": ["a", "b"]}, "0a1b"),
        ("{{ with .x }}{{ .y }}{{ else }}no{{ end }}", {"x": {"y": "yes"}}, "yes"),
        ("{{ with .x }}{{ .y }}{{ else }}no{{ end }}", {"x": {}}, "no"),
        ("[{{ .missing }}]", {}, "[]"),
        ('{{ "" | default "d" }} {{ 0 | default 5 }} {{ false | default true }}', {}, "d 5 true"),
        ('{{ .s | default "d" }}', {"s": "set"}, "set"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
        ("{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}", {"b": 1}, "B"),
        ('{{ or "" "x" }} {{ or 0 "" }} {{ "p" | or .missing }} {{ not "" }}', {}, "x  p true"),
        ('{{ eq .s "a" }} {{ eq .s "b" }} {{ eq .s "b" "a" }}', {"s": "a"}, "true false true"),
        ('{{ printf "%s-%s" "abc" "de" | trunc 4 | trimSuffix "-" }}', {}, "abc"),
        ('{{ "a\\"b" | quote }} {{ 8080 | quote }}', {}, '"a\\"b" "8080"'),
        ('{{ "a.b+c" | replace "+" "_" }} {{ contains "b" "abc" }}', {}, "a.b_c true"),
        ('{{ regexReplaceAll ".*:" "[::]:8443" "" }}', {}, "8443"),
        ('{{ regexMatch "^127\\\\." "127.0.0.1:80" }}', {}, "true"),
        (
            '{{ dig "a" "b" "none" .m }} {{ dig "a" "x" "none" .m }}',
            {"m": {"a": {"b": 1}}},
            "1 none",
        ),
        (
            "{{ (index .l 1).name }} {{ index .m .k }}",
            {"l": [{}, {"name": "n"}], "m": {}, "k": "z"},
            "n ",
        ),
        (
            "{{ .n }} {{ .big }} {{ .f }} {{ .tiny }}",
            {"n": 10001, "big": 1000000, "f": 0.5, "tiny": 0.000015},
            "10001 1e+06 0.5 1.5e-05",
        ),
        ("{{ .l }} {{ .m }}", {"l": [1, "a"], "m": {"k": True}}, "[1 a] map[k:true]"),
    ],
)
def test_go_template_semantics(src: str, data: Any, want: str) -> None:
    assert _tpl(src, data) == want


def test_include_and_nindent_compose() -> None:
    defines = '{{- define "pair" -}}\na: {{ .x }}\nb: 2\n{{- end }}'
    assert (
        _tpl('top:{{ include "pair" . | nindent 2 }}', {"x": 1}, defines) == "top:\n  a: 1\n  b: 2"
    )
    assert _tpl('{{ include "pair" . | indent 1 }}', {"x": 1}, defines) == " a: 1\n b: 2"


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("{{ .a.b }}", "nil pointer evaluating interface {}.b"),
        ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", "undefined variable: \\$y"),
        ('{{ eq "a" 1 }}', "incompatible types"),
        ("{{ nosuchfunc 1 }}", 'function "nosuchfunc" not defined'),
        ('{{ include "nope" . }}', 'no template "nope"'),
        ('{{ required "need it" .a }}', "need it"),
        ('{{ fail "stop" }}', "stop"),
        ("{{ if true }}open", "never ended"),
        ("{{ end }}", "unexpected {{end}}"),
        ('{{ printf "%x" 1 }}', "outside the subset"),
    ],
)
def test_go_template_errors(src: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        _tpl(src, {})


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ({"b": [1, {"c": "x", "a": None}], "a": {}}, "a: {}\nb:\n- 1\n- a: null\n  c: x"),
        ({"l": [[1, 2], []]}, "l:\n- - 1\n  - 2\n- []"),
        ({"a10": 1, "a9": 2, "B": 3}, "B: 3\na9: 2\na10: 1"),  # go-yaml's natural key order
        (
            {"s": "true", "p": "8080", "z": "null", "e": "", "v": "yes", "f": "1.5", "y": "n"},
            'e: ""\nf: "1.5"\np: "8080"\ns: "true"\nv: "yes"\n"y": "n"\nz: "null"',
        ),
        (
            {"h": "*.example.test", "k": "a: b", "d": "- x", "c": "x #c", "t": " lead"},
            "c: 'x #c'\nd: '- x'\nh: '*.example.test'\nk: 'a: b'\nt: ' lead'",
        ),
        (
            {"a": "0.0.0.0:8080", "b": "--log-level", "c": "it's", "d": "1:30"},
            'a: 0.0.0.0:8080\nb: --log-level\nc: it\'s\nd: "1:30"',
        ),
        (
            {"m": "x\ny", "l": "x\n", "o": " x\ny\n\n"},
            "l: |\n  x\nm: |-\n  x\n  y\no: |2+\n   x\n  y\n",
        ),
        ({"t": "a\tb", "u": "x \ny"}, 't: "a\\tb"\nu: "x \\ny"'),
        ({"d": "2001-12-14", "m": "<<", "r": ["x\n"]}, 'd: "2001-12-14"\nm: "<<"\nr:\n- |\n  x'),
        ({"i": 3, "f": 2.0, "g": 0.25, "b": False}, "b: false\nf: 2\ng: 0.25\ni: 3"),
    ],
)
def test_to_yaml_prints_like_helm(value: Any, want: str) -> None:
    assert to_yaml(value) == want
    # Helm trims toYaml's final newline; a template line break restores it.
    assert yaml.safe_load(to_yaml(value) + "\n") == value


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(st.sampled_from("ab0:-#*&!?|>'\"% \n\t.,[]{}@`~yesnotrul"), max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(st.sampled_from("ab:0 -#_"), min_size=1, max_size=4), inner, max_size=3
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_to_yaml_reads_back_as_the_same_value(value: Any) -> None:
    assert yaml.safe_load(to_yaml(value) + "\n") == value


def test_go_print_formats_like_fmt() -> None:
    assert [go_print(v) for v in (None, True, 2, 123456, 1234567, 1e-05, 0.1)] == [
        "<no value>",
        "true",
        "2",
        "123456",
        "1.234567e+06",
        "1e-05",
        "0.1",
    ]

"""Render the kedge Helm chart without helm, as `helm template` would print it.

    python deploy/render.py [--values extra.yaml]... [--release-name kedge] [--namespace kedge]
    python deploy/render.py --notes        # the NOTES.txt helm prints after an install

`deploy/kubernetes/kedge.yaml` is this script's output with the chart's default values
(`tests/unit/test_helm_chart.py` checks it is up to date). The templates are real Helm
templates, rendered by `helmlite/` (a Go text/template engine for the subset they use);
this file does Helm's part: values files merged over the chart's values.yaml (maps merge
key by key, lists and scalars replace, a null deletes the key), `.Release` and `.Chart`,
files rendered in path order, split into documents and sorted by kind in Helm's install
order, each printed after `---` and a `# Source:` line.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if __package__:
    from .helmlite import Engine, Struct, TemplateError, go_print
else:  # run as a script: python deploy/render.py (its directory is on sys.path)
    from helmlite import Engine, Struct, TemplateError, go_print  # type: ignore[no-redef,import-not-found,unused-ignore]

__all__ = [
    "CHART_DIR",
    "Manifest",
    "Rendered",
    "TemplateError",
    "coalesce",
    "load_values",
    "main",
    "render_chart",
]

CHART_DIR = Path(__file__).resolve().parent / "helm" / "kedge"

# Helm's releaseutil.InstallOrder: kinds earlier in the list are printed (and installed) first;
# unknown kinds go last, by kind name; documents of one kind keep their file and file order.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService",
]  # fmt: skip

# Helm splits a rendered file into documents with this expression (releaseutil.SplitManifests).
_DOC_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")


class _GoYamlLoader(yaml.SafeLoader):
    """YAML as Helm reads values: like PyYAML's safe loader, but timestamps stay strings."""


_GoYamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _as_json(v: Any) -> Any:
    """Helm converts values to JSON-like data: map keys become strings."""
    if isinstance(v, dict):
        return {(k if isinstance(k, str) else go_print(k)): _as_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_as_json(x) for x in v]
    return v


def load_values(text: str) -> dict[str, Any]:
    data = yaml.load(text, Loader=_GoYamlLoader)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TemplateError("values must be a YAML mapping")
    return dict(_as_json(data))


def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the defaults (returns a new map)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Manifest:
    source: str  # e.g. kedge/templates/deployment.yaml
    kind: str
    content: str  # the document, stripped, without the separator


@dataclass(frozen=True)
class Rendered:
    manifests: list[Manifest]
    notes: str

    def text(self) -> str:
        """What `helm template` prints."""
        return "".join(f"---\n# Source: {m.source}\n{m.content}\n" for m in self.manifests)

    def documents(self) -> list[dict[str, Any]]:
        return [yaml.safe_load(m.content) for m in self.manifests]


def _chart_meta(chart_dir: Path) -> Struct:
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    fields = {
        "Name": "name", "Version": "version", "AppVersion": "appVersion",
        "Description": "description", "Type": "type", "APIVersion": "apiVersion",
        "KubeVersion": "kubeVersion", "Home": "home", "Icon": "icon", "Sources": "sources",
        "Keywords": "keywords", "Maintainers": "maintainers", "Annotations": "annotations",
    }  # fmt: skip
    return Struct({go: meta.get(key) for go, key in fields.items()})


def render_chart(
    chart_dir: Path = CHART_DIR,
    values: list[dict[str, Any]] | None = None,
    release_name: str = "kedge",
    namespace: str = "kedge",
) -> Rendered:
    """Render every template with the chart's values.yaml and then `values`, in order."""
    chart = _chart_meta(chart_dir)
    merged = load_values((chart_dir / "values.yaml").read_text())
    for extra in values or []:
        merged = coalesce(merged, extra)
    release = Struct(
        Name=release_name,
        Namespace=namespace,
        Service="Helm",
        IsInstall=True,
        IsUpgrade=False,
        Revision=1,
    )
    data = {"Values": merged, "Chart": chart, "Release": release}
    engine = Engine()
    templates_dir = chart_dir / "templates"
    names: dict[str, Path] = {}
    for path in sorted(templates_dir.rglob("*")):
        if path.is_file():
            name = f"{chart['Name']}/{path.relative_to(chart_dir).as_posix()}"
            engine.add(name, path.read_text())
            names[name] = path
    manifests: list[Manifest] = []
    notes = ""
    for name in sorted(names):
        base = names[name].name
        if base.startswith("_"):
            continue  # partials: only their defines count
        out = engine.render(name, data)
        if base == "NOTES.txt":
            notes = out
            continue
        if not out.strip():
            continue
        for doc in _DOC_SEPARATOR.split(out.strip()):
            doc = doc.strip()
            if not doc:
                continue
            try:
                head = yaml.safe_load(doc)
            except yaml.YAMLError as exc:
                raise TemplateError(f"YAML parse error on {name}: {exc}") from None
            if head is None:
                continue  # only comments
            if not isinstance(head, dict):
                raise TemplateError(f"{name}: a document is not a mapping")
            manifests.append(Manifest(name, str(head.get("kind", "")), doc))
    order = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    unknown = len(order)
    manifests.sort(key=lambda m: (order.get(m.kind, unknown), "" if m.kind in order else m.kind))
    return Rendered(manifests, notes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--values", "-f", action="append", default=[], help="values file (repeatable)")
    p.add_argument("--release-name", default="kedge")
    p.add_argument("--namespace", "-n", default="kedge")
    p.add_argument("--chart", type=Path, default=CHART_DIR)
    p.add_argument("--notes", action="store_true", help="print the rendered NOTES.txt instead")
    args = p.parse_args(argv)
    try:
        extra = [load_values(Path(f).read_text()) for f in args.values]
        rendered = render_chart(args.chart, extra, args.release_name, args.namespace)
    except (TemplateError, OSError, yaml.YAMLError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(rendered.notes if args.notes else rendered.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

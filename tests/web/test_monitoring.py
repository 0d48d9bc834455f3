"""monitoring/ (Prometheus config, alert rules, Grafana dashboard) and docker/: they parse, promtool accepts them,
the alerts fire when they should, and every metric they name is one the hub exposes (hub/metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.metrics import METRIC_NAMES
from support import ROOT

MON = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool")
# PromQL words that look like metric names but are functions, keywords, label names or Prometheus's own series
_NOT_METRICS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "irate",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "histogram_quantile",
    "time",
    "hour",
    "day_of_week",
    "le",
    "channel",
    "destination",
    "outcome",
    "endpoint",
    "operation",
    "job",
    "instance",
    "up",
    "bool",
    "group_left",
    "group_right",
    "vector",
    "label_values",
    "humanizeDuration",
}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {w for w in words if w not in _NOT_METRICS and not w.startswith("__") and "_" in w}


def known(name: str) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in METRIC_NAMES or base in METRIC_NAMES


def alert_rules() -> list[dict]:
    data = yaml.safe_load((MON / "alerts.yml").read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def test_alert_rules_cover_what_operations_needs_and_name_only_real_metrics():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "HubQueueBackingUp",
        "HubOldestMessageTooOld",
        "HubDeadLetters",
        "HubDeliveryErrorRate",
        "HubRejectRate",
        "HubChannelSilent",
        "HubMllpPeerDisconnected",
        "HubSftpPollStale",
        "HubStoreErrors",
        "HubDown",
    } <= names
    for r in rules:
        assert r["labels"]["severity"] in ("info", "warning", "critical") and r["annotations"]["summary"]
        used = metric_names(r["expr"])
        assert used or "up{" in r["expr"], r["alert"]  # HubDown reads Prometheus's own `up`
        assert all(known(m) for m in used), (r["alert"], used - {m for m in used if known(m)})


def test_promtool_accepts_the_rules_and_the_alert_unit_tests_pass():
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (tests/peers.sh installs it); the rules were checked structurally")
    out = subprocess.run(
        [PROMTOOL, "check", "rules", str(MON / "alerts.yml")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=MON, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_the_prometheus_config_scrapes_the_hub_with_a_token(tmp_path):
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    job = cfg["scrape_configs"][0]
    assert job["job_name"] == "hub" and job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert cfg["rule_files"] == ["alerts.yml"]
    if PROMTOOL is None:
        return
    # promtool wants the token file to exist: check a copy that points at a temporary one
    token = tmp_path / "hub.token"
    token.write_text("hub_synthetic\n")
    job["authorization"]["credentials_file"] = str(token)
    shutil.copy(MON / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_grafana_dashboard_uses_hub_metrics():
    dash = json.loads((MON / "grafana" / "dashboards" / "hub.json").read_text())
    assert dash["uid"] == "hub-overview" and dash["templating"]["list"][0]["name"] == "channel"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert all(known(m) for m in used), used - {m for m in used if known(m)}
    for wanted in (
        "hub_messages_received_total",
        "hub_queue_depth",
        "hub_queue_oldest_age_seconds",
        "hub_dead_letters",
        "hub_deliveries_total",
        "hub_ingest_seconds_bucket",
        "hub_delivery_latency_seconds_bucket",
        "hub_mllp_connections",
        "hub_sftp_last_poll_success_timestamp_seconds",
        "hub_store_errors_total",
    ):
        assert wanted in used, wanted
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for f in (MON / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1


def test_docker_runs_the_hub_as_a_non_root_user_beside_postgres_prometheus_and_grafana():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"hub", "postgres", "prometheus", "grafana"}
    assert services["hub"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert "postgresql+psycopg://" in services["hub"]["environment"]["HUB_STORE_URL"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing published beyond the host itself
    # no default password anywhere: each must come from the environment
    text = (ROOT / "docker" / "compose.yaml").read_text()
    assert "${HUB_ADMIN_PASSWORD:?" in text and "${POSTGRES_PASSWORD:?" in text and "${GRAFANA_ADMIN_PASSWORD:?" in text
    for mount in services["prometheus"]["volumes"] + services["grafana"]["volumes"]:
        src = mount.split(":")[0]
        if src.startswith(".."):
            rel = Path(src[3:])
            assert rel.name == "hub.token" or (ROOT / rel).exists(), mount


def test_the_container_listens_on_all_interfaces_and_reads_the_store_url(monkeypatch):
    from hub.spec import load_config

    assert "HUB_WEB_LISTEN=0.0.0.0:8080" in (ROOT / "docker" / "Dockerfile").read_text()
    monkeypatch.setenv("HUB_WEB_LISTEN", "0.0.0.0:8080")
    monkeypatch.setenv("HUB_STORE_URL", "postgresql+psycopg://hub@postgres:5432/hub")
    cfg = load_config(ROOT / "config")
    assert cfg.hub.web.listen == "0.0.0.0:8080" and cfg.store_url() == "postgresql+psycopg://hub@postgres:5432/hub"
    monkeypatch.delenv("HUB_WEB_LISTEN")
    monkeypatch.delenv("HUB_STORE_URL")
    cfg = load_config(ROOT / "config")
    assert cfg.hub.web.listen == "127.0.0.1:8080" and cfg.store_url().startswith("sqlite:///")

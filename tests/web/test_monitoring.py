"""monitoring/ (Prometheus config, alert rules, Alertmanager, Grafana dashboard) and docker/: they parse, promtool
and amtool accept them, the alerts fire when they should — at their thresholds with two nodes sharing a store, too —
every metric they name is one the hub exposes (hub/metrics.py), and the real alertmanager delivers an alert to a
webhook and by email with the shipped routes."""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from hub.metrics import METRIC_NAMES
from support import ROOT, WebhookReceiver, need_peer

MON = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")  # Debian's name
#: Gauges read from the shared store: every node reports the same value, so they are aggregated with max, never sum.
STORE_WIDE = ("hub_queue_depth", "hub_queue_retrying", "hub_dead_letters", "hub_queue_oldest_age_seconds")
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


def store_wide_sums(expr: str) -> list[str]:
    """The store-wide gauges in ``expr`` that are not directly under ``max(`` or ``max by (…) (``."""
    bad = []
    for name in STORE_WIDE:
        for m in re.finditer(rf"\b{name}\b", expr):
            before = expr[: m.start()]
            if not re.search(r"\bmax\s*(by\s*\([^)]*\)\s*)?\(\s*$", before):
                bad.append(name)
    return bad


def test_store_wide_gauges_are_taken_with_max_so_that_n_nodes_count_once():
    assert store_wide_sums("sum by (channel, destination) (hub_queue_depth) > 500") == ["hub_queue_depth"]
    assert store_wide_sums('max by (channel, destination) (hub_queue_depth{channel=~"$channel"})') == []
    exprs = [r["expr"] for r in alert_rules()]
    dash = json.loads((MON / "grafana" / "dashboards" / "hub.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert any("hub_queue_depth" in e for e in exprs)
    for e in exprs:
        assert store_wide_sums(e) == [], e
    # the metrics module says which metric is which
    import hub.metrics

    doc = hub.metrics.__doc__ or ""
    assert "store-wide" in doc and "per node" in doc and all(n in doc for n in STORE_WIDE)


def test_promtool_accepts_the_rules_and_the_alert_unit_tests_pass():
    need_peer(PROMTOOL is not None, "promtool is not installed (tests/peers.sh installs it)")
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
    targets = [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]  # the compose service
    need_peer(PROMTOOL is not None, "promtool is not installed (tests/peers.sh installs it)")
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
    assert set(services) == {"hub", "postgres", "prometheus", "alertmanager", "grafana"}
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    assert services["hub"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert "postgresql+psycopg://" in services["hub"]["environment"]["HUB_STORE_URL"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing published beyond the host itself
    # no default password anywhere: each must come from the environment
    text = (ROOT / "docker" / "compose.yaml").read_text()
    assert "${HUB_ADMIN_PASSWORD:?" in text and "${POSTGRES_PASSWORD:?" in text and "${GRAFANA_ADMIN_PASSWORD:?" in text
    secrets = {"hub.token", "smtp.password", "webhook.token"}  # written by the operator, never checked in
    for svc in ("prometheus", "alertmanager", "grafana"):
        for mount in services[svc]["volumes"]:
            src = mount.split(":")[0]
            if src.startswith(".."):
                rel = Path(src[3:])
                assert rel.name in secrets or (ROOT / rel).exists(), mount
    # what alertmanager.yml reads from files is mounted where it looks
    am = (MON / "alertmanager.yml").read_text()
    for path in set(re.findall(r"/etc/alertmanager/[\w.]+", am)):
        assert any(m.split(":")[1] == path for m in services["alertmanager"]["volumes"]), path


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


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_amtool_accepts_the_alertmanager_config_and_routes_each_severity_to_its_receivers():
    cfg = yaml.safe_load((MON / "alertmanager.yml").read_text())
    assert cfg["route"]["group_by"] == ["alertname", "channel"]
    names = {r["name"] for r in cfg["receivers"]}
    assert any(r.get("email_configs") for r in cfg["receivers"]) and any(
        r.get("webhook_configs") for r in cfg["receivers"]
    )
    severities = {r["labels"]["severity"] for r in alert_rules()}
    need_peer(AMTOOL is not None, "amtool is not installed (tests/peers.sh installs prometheus-alertmanager)")
    out = amtool("check-config", str(MON / "alertmanager.yml"))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    cases = {
        ("alertname=HubQueueBackingUp", "severity=warning", "channel=adt", "destination=ehr"): "integration-team",
        ("alertname=HubDeadLetters", "severity=warning", "channel=lab"): "integration-team",
        ("alertname=HubStoreErrors", "severity=critical"): "on-call",
        ("alertname=HubDown", "severity=critical", "instance=hub-2:8080"): "on-call",
        ("alertname=HubChannelPaused", "severity=info", "channel=roster"): "team-chat",
    }
    assert {c[1].split("=")[1] for c in cases} == severities  # every severity the rules use is routed on purpose
    for labels, receiver in cases.items():
        assert receiver in names
        out = amtool("config", "routes", "test", f"--config.file={MON / 'alertmanager.yml'}", *labels)
        assert out.returncode == 0 and out.stdout.strip() == receiver, (labels, out.stdout + out.stderr)


# ---------------------------------------------------------------- the real alertmanager, a webhook and an SMTP server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_the_real_alertmanager_sends_an_alert_to_the_webhook_and_by_email_with_the_shipped_routes(tmp_path):
    need_peer(
        ALERTMANAGER is not None, "alertmanager is not installed (tests/peers.sh installs prometheus-alertmanager)"
    )
    from aiosmtpd.controller import Controller

    class Mailbox:
        def __init__(self) -> None:
            self.mails: list[bytes] = []

        async def handle_DATA(self, server, session, envelope):
            self.mails.append(envelope.content)
            return "250 OK"

    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hooks = WebhookReceiver()
    proc = None
    try:
        # the shipped config, with its receivers pointed at the test's servers and the first message sent at once
        cfg = yaml.safe_load((MON / "alertmanager.yml").read_text())
        (tmp_path / "webhook.token").write_text("synthetic-token\n")
        cfg["global"].update(smtp_smarthost=f"127.0.0.1:{smtp.port}", smtp_require_tls=False)
        for key in ("smtp_auth_username", "smtp_auth_password_file"):
            cfg["global"].pop(key)
        cfg["route"].update(group_wait="0s", group_interval="1s")
        for r in cfg["receivers"]:
            for w in r.get("webhook_configs", []):
                w["url"] = f"{hooks.base_url}/{r['name']}"
                w["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "webhook.token")
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(cfg))
        port = free_port()
        proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # one alertmanager: no gossip port
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "alertmanager.log", "wb"),  # noqa: SIM115 (closed with the process)
            env={**os.environ, "HOME": str(tmp_path)},
        )
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return proc is not None and proc.poll() is not None  # exited: fail below with its log

        wait_for(ready, 30, "alertmanager to start")
        assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
        now = datetime.now(UTC).isoformat()
        alert = {
            "labels": {"alertname": "HubQueueBackingUp", "severity": "warning", "channel": "adt", "destination": "ehr"},
            "annotations": {"summary": "adt/ehr: 600 deliveries waiting"},
            "startsAt": now,
        }
        r = httpx.post(f"{base}/api/v2/alerts", json=[alert], timeout=10)
        assert r.status_code == 200, r.text
        wait_for(lambda: hooks.received and box.mails, 30, "the webhook and the email")
        (path,), ((headers, body),) = hooks.paths, hooks.received
        assert path == "/integration-team" and headers["Authorization"] == "Bearer synthetic-token"
        assert isinstance(body, dict) and body["status"] == "firing"
        assert body["groupLabels"] == {"alertname": "HubQueueBackingUp", "channel": "adt"}
        assert body["alerts"][0]["labels"]["destination"] == "ehr"
        mail = email.message_from_bytes(box.mails[0])
        assert mail["To"] == "integration-team@clinic.example" and "HubQueueBackingUp" in mail["Subject"]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        hooks.close()
        smtp.stop()

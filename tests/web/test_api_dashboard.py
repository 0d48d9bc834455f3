"""The dashboard's API (issue 17) against a running engine and the web app, on SQLite and PostgreSQL: charts from
the rollups, the overview, the hub's own alerts, a channel's files, message roll-ups, replay dry runs, exports."""

from __future__ import annotations

import asyncio

import pytest
from websupport import ADT, OTHER, ROLES, Hub, hl7, until

from hub.engine import Engine
from hub.spec import load_config
from support import write_config

HUB_YAML = """
store: {{url: '{url}'}}
web: {{listen: '127.0.0.1:18080'}}
"""


async def start(folder, url: str) -> Hub:
    from hub.web.app import create_app

    cfg = load_config(write_config(folder / "config", HUB_YAML.format(url=url), {"adt": ADT, "other": OTHER}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    app = create_app(eng)
    auth = app.state.hub.auth
    hub = Hub(eng, app, auth)
    for role in ROLES:
        await asyncio.to_thread(auth.add_user, role, role, None)
        hub.tokens[role] = await asyncio.to_thread(auth.create_token, role)
    return hub


@pytest.fixture
async def hub(tmp_path, store_url):
    h = await start(tmp_path, store_url)
    yield h
    await h.close()


async def five(hub: Hub) -> list[int]:
    """Five ADT messages: 'ehr' sends all five, 'flaky' fails the first one for good (dead) and sends four."""
    ids = [await hub.push(hl7(f"CTRL{i}", f"MRN{i}")) for i in range(5)]
    store = hub.engine.store
    await until(lambda: all(sorted(store.delivery_states(i)) in (["sent", "sent"], ["dead", "sent"]) for i in ids))
    assert sorted(store.delivery_states(ids[0])) == ["dead", "sent"]
    return ids


def total(series: list[list[int]]) -> int:
    return sum(n for _, n in series)


# ------------------------------------------------------------------------------------------------ charts, overview
async def test_charts_sum_what_happened(hub):
    await five(hub)
    await hub.engine.sample_queues()
    c = hub.client("viewer")
    r = await c.get("/api/charts", params={"channel": "adt", "destination": "flaky", "range": "1h"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["range"] == "1h" and body["step"] == 60 and body["to"] - body["from"] == 3600
    s = body["series"]
    assert len(s["received"]) == 60 and all(len(p) == 2 for p in s["received"])
    assert (total(s["received"]), total(s["sent"]), total(s["errors"])) == (5, 4, 1)
    assert s["received"][0][0] == body["from"] and s["received"][-1][0] == body["to"] - 60
    assert body["latency_ms"]["count"] == 4 and body["latency_ms"]["p50"] is not None
    assert set(body["latency_ms"]) == {"p50", "p90", "p99", "count"}
    assert total(s["queue"]) == 0  # everything was sent or dead when sampled

    whole = (await c.get("/api/charts", params={"channel": "adt"})).json()
    assert (total(whole["series"]["received"]), total(whole["series"]["sent"])) == (5, 9)
    assert total(whole["series"]["errors"]) == 1 and whole["latency_ms"]["count"] == 9
    for rng, step, points in (("24h", 900, 96), ("7d", 7200, 84)):
        b = (await c.get("/api/charts", params={"channel": "adt", "range": rng})).json()
        assert b["step"] == step and len(b["series"]["sent"]) == points and total(b["series"]["sent"]) == 9
        assert len(b["series"]["queue"]) == points
    assert (await c.get("/api/charts", params={"channel": "adt", "range": "2d"})).status_code == 422
    assert (await hub.client().get("/api/charts", params={"channel": "adt"})).status_code == 401


async def test_queue_series_is_the_last_sample_of_a_step(hub):
    # a queue that waits: the store accepts for a destination without a worker
    from hub.store import NewDelivery, NewMessage

    store = hub.engine.store
    store.accept([NewMessage("ghost", b"x", "raw", deliveries=[NewDelivery("nowhere")]) for _ in range(3)])
    assert await hub.engine.sample_queues() >= 1
    body = (await hub.client("viewer").get("/api/charts", params={"channel": "ghost"})).json()
    assert body["series"]["queue"][-1][1] == 3 and total(body["series"]["received"]) == 3


async def test_overview(hub):
    await five(hub)
    c = hub.client("viewer")
    r = await c.get("/api/overview")
    assert r.status_code == 200, r.text
    by = {x["channel"]: x for x in r.json()}
    adt = by["adt"]
    assert set(adt) >= {"channel", "state", "health", "spark", "queued", "oldest_waiting_s", "dead", "peer"}
    assert adt["state"] == "running" and adt["health"] == "error" and adt["dead"] == 1
    assert len(adt["spark"]["in"]) == 60 and sum(adt["spark"]["in"]) == 5 and sum(adt["spark"]["out"]) == 9
    dests = {d["destination"]: d for d in adt["destinations"]}
    assert dests["flaky"]["dead"] == 1 and dests["flaky"]["sent"] == 4 and dests["ehr"]["sent"] == 5
    assert set(dests["ehr"]) == {"destination", "queued", "retry", "dead", "sent", "oldest_waiting_s", "peer"}
    assert by["other"]["health"] == "ok" and by["other"]["spark"]["in"] == [0] * 60


# ------------------------------------------------------------------------------------------------ alerts
async def test_dead_letter_alert_fires_and_resolves_after_replay(hub):
    ids = await five(hub)
    ev = hub.engine.evaluator
    assert ev is not None
    await ev.evaluate()
    c = hub.client("viewer")
    body = (await c.get("/api/alerts")).json()
    firing = [a for a in body["firing"] if a["rule"] == "dead_letter"]
    assert len(firing) == 1
    a = firing[0]
    assert a["channel"] == "adt" and a["destination"] == "flaky" and a["severity"] == "warning"
    assert a["messages"] == {"channel": "adt", "status": "dead", "destination": "flaky"} and a["since"] > 0
    assert "1 dead" in a["summary"]
    await ev.evaluate()  # still firing: not recorded twice
    assert len([x for x in (await c.get("/api/alerts")).json()["firing"] if x["rule"] == "dead_letter"]) == 1

    op = hub.client("operator")
    assert (await op.post(f"/api/messages/{ids[0]}/replay", json={})).status_code == 200
    await until(lambda: sorted(hub.engine.store.delivery_states(ids[0])) == ["sent", "sent"])
    await ev.evaluate()
    body = (await c.get("/api/alerts")).json()
    assert not [x for x in body["firing"] if x["rule"] == "dead_letter"]
    (rec,) = [x for x in body["recent"] if x["rule"] == "dead_letter"]
    assert rec["id"] == a["id"] and rec["resolved_at"] >= rec["since"]


async def test_paused_channel_alert(hub):
    await hub.engine.pause("other", by="admin")
    await hub.engine.evaluator.evaluate()
    body = (await hub.client("viewer").get("/api/alerts")).json()
    (a,) = [x for x in body["firing"] if x["rule"] == "channel_stopped"]
    assert a["channel"] == "other" and a["destination"] is None and a["severity"] == "info"
    await hub.engine.resume("other")
    await hub.engine.evaluator.evaluate()
    body = (await hub.client("viewer").get("/api/alerts")).json()
    assert not body["firing"] and body["recent"][0]["rule"] == "channel_stopped"


# ------------------------------------------------------------------------------------------------ channel view
def test_redact_yaml():
    from hub.web.api import redact_yaml

    text = (
        "source: {type: sftp, password: hunter2, user: bob}\n"
        "  password: 'literal pw'\n"
        "  token: ${API_TOKEN}\n"
        "  client_secret: abc # why\n"
        "  token_url: https://auth.example/token\n"
        "  key: |\n"
        "  secret:\n"
    )
    out = redact_yaml(text)
    assert "hunter2" not in out and "literal pw" not in out and "abc" not in out
    assert "password: ***, user: bob" in out and "${API_TOKEN}" in out and "client_secret: ***" in out
    assert "token_url: https://auth.example/token" in out and "secret:\n" in out


async def test_channel_config_view(hub, tmp_path):
    folder = tmp_path / "config" / "channels"
    (folder / "adt_test.yaml").write_text("cases: []\n")
    c = hub.client("analyst")
    r = await c.get("/api/channels/adt/config")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["file"].endswith("channels/adt.yaml") and body["yaml"] == (folder / "adt.yaml").read_text()
    assert body["test_file"].endswith("adt_test.yaml") and body["test_yaml"] == "cases: []\n"
    assert body["problems"] == [] and body["last_reload"] is None
    other = (await c.get("/api/channels/other/config")).json()
    assert other["test_file"] is None and other["test_yaml"] is None

    # a literal secret and a mistake, written to disk: shown redacted, with the check's finding, reload refused
    (folder / "adt.yaml").write_text((folder / "adt.yaml").read_text() + "password: hunter2\n")
    body = (await c.get("/api/channels/adt/config")).json()
    assert "hunter2" not in body["yaml"] and "password: ***" in body["yaml"]
    assert body["problems"] and all(p["file"].endswith("adt.yaml") and p["line"] >= 1 for p in body["problems"])
    assert (await hub.client("admin").post("/api/config/reload")).status_code == 422
    body = (await c.get("/api/channels/adt/config")).json()
    assert body["last_reload"]["by"] == "admin" and body["last_reload"]["ok"] is False
    assert not (await c.get("/api/channels/other/config")).json()["problems"]

    for role, code in (("viewer", 403), ("operator", 403), ("admin", 200)):
        assert (await hub.client(role).get("/api/channels/adt/config")).status_code == code
    assert (await c.get("/api/channels/nope/config")).status_code == 404

    (folder / "adt.yaml").write_text((folder / "adt.yaml").read_text().replace("password: hunter2\n", ""))
    assert (await c.post("/api/config/reload")).status_code == 200
    last = (await c.get("/api/channels/adt/config")).json()["last_reload"]
    assert last["by"] == "analyst" and last["ok"] is True and last["at"] > 0


# ------------------------------------------------------------------------------------------------ message roll-up
async def test_message_rollup_and_next_attempt(hub):
    import time

    from hub.store import Mark, NewDelivery, NewMessage

    ids = await five(hub)
    store = hub.engine.store
    (q1, q2) = [
        a.message_id
        for a in store.accept([NewMessage("ghost", b"x", "raw", deliveries=[NewDelivery("nowhere")]) for _ in range(2)])
    ]
    rejected = store.accept([NewMessage("ghost", b"bad", "raw", status="rejected")])[0].message_id
    (claimed,) = await store.claim("ghost", "nowhere", limit=1, ordered=True)
    later = time.time() + 300
    await store.mark([Mark(claimed.id, "retry", 1, error="down", next_at=later)])
    c = hub.client("viewer")
    items = {m["id"]: m for m in (await c.get("/api/messages", params={"limit": 500})).json()["items"]}
    assert items[ids[0]]["rollup"] == "dead" and all(items[i]["rollup"] == "sent" for i in ids[1:])
    assert items[q1]["rollup"] == "retrying" and items[q2]["rollup"] == "queued"
    assert items[rejected]["rollup"] == "rejected"

    one = (await c.get(f"/api/messages/{q1}")).json()
    assert one["deliveries"][0]["next_attempt_at"] == pytest.approx(later)
    assert (await c.get(f"/api/messages/{q2}")).json()["deliveries"][0]["next_attempt_at"] is not None
    assert all(d["next_attempt_at"] is None for d in (await c.get(f"/api/messages/{ids[1]}")).json()["deliveries"])

    dead = (await c.get("/api/messages", params={"rollup": "dead"})).json()["items"]
    assert [m["id"] for m in dead] == [ids[0]]
    assert (await c.get("/api/messages", params={"rollup": "queued"})).status_code == 422


# ------------------------------------------------------------------------------------------------ replay plans
async def rejected_one(hub: Hub) -> int:
    mid = await hub.push(b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260310||ADT^A04|R1||2.5.1\rPID|1||MRN7^^^CLINIC^MR\r")
    assert hub.engine.store.get_message(mid)["status"] == "rejected"  # MSH-11 is missing
    return mid


async def test_replay_dry_run_says_what_it_would_do(hub):
    ids = await five(hub)
    bad = await rejected_one(hub)
    op = hub.client("operator")
    flaky_dead = next(d for d in hub.engine.store.get_message(ids[0])["deliveries"] if d["destination"] == "flaky")

    r = await op.post("/api/replay", json={"message_ids": [ids[0], ids[1], bad], "dry_run": True})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "would_queue": [
            {"message_id": ids[0], "delivery_id": flaky_dead["id"], "destination": "flaky", "status": "dead"}
        ],
        "would_reprocess": [bad],
    }
    r = await op.post("/api/replay", json={"message_ids": [ids[1]], "include_sent": True, "dry_run": True})
    assert sorted(x["destination"] for x in r.json()["would_queue"]) == ["ehr", "flaky"]
    assert {x["status"] for x in r.json()["would_queue"]} == {"sent"}
    one = (await op.post(f"/api/messages/{ids[0]}/replay", json={"dry_run": True})).json()
    assert [x["destination"] for x in one["would_queue"]] == ["flaky"] and one["would_reprocess"] == []
    one = (await op.post(f"/api/messages/{bad}/replay", json={"dry_run": True})).json()
    assert one == {"would_queue": [], "would_reprocess": [bad]}
    assert hub.engine.store.delivery_states(ids[0]) in (["sent", "dead"], ["dead", "sent"])  # nothing was done
    audit = (await hub.client("admin").get("/api/audit", params={"action": "replay_many"})).json()["items"]
    assert audit == []
    assert (
        await hub.client("viewer").post("/api/replay", json={"message_ids": [1], "dry_run": True})
    ).status_code == 403


async def test_replay_only_unsent_by_default_and_reprocess(hub):
    ids = await five(hub)
    bad = await rejected_one(hub)
    op = hub.client("operator")
    ehr = hub.engine.destinations[("adt", "ehr")]
    before = len(ehr.sent)
    r = await op.post("/api/replay", json={"message_ids": [ids[0], ids[1], bad], "include_sent": False})
    assert r.json() == {"queued": 1, "messages": 3, "reprocessed": [bad]}
    await until(lambda: sorted(hub.engine.store.delivery_states(ids[0])) == ["sent", "sent"])
    assert len(ehr.sent) == before  # nothing already sent went again
    assert hub.engine.store.get_message(bad)["status"] == "rejected"  # reprocessed: still rejected (nothing fixed)

    r = await op.post(f"/api/messages/{ids[1]}/replay", json={})
    assert r.json()["queued"] == 0  # every delivery is sent: nothing to do without include_sent
    r = await op.post(f"/api/messages/{ids[1]}/replay", json={"include_sent": True, "destination": "ehr"})
    assert r.json()["queued"] == 1
    await until(lambda: len(ehr.sent) == before + 1)
    audit = (await hub.client("admin").get("/api/audit", params={"action": "replay"})).json()["items"]
    assert audit[0]["detail"] == {"destination": "ehr", "queued": 1, "include_sent": True}
    many = (await hub.client("admin").get("/api/audit", params={"action": "replay_many"})).json()["items"]
    assert many[0]["detail"]["reprocessed"] == [bad] and many[0]["detail"]["include_sent"] is False


# ------------------------------------------------------------------------------------------------ exports
async def test_export_csv(hub):
    import csv
    import io

    ids = await five(hub)
    c = hub.client("viewer")
    r = await c.get("/api/messages/export.csv", params={"channel": "adt"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["id"]) for x in rows] == ids[::-1]
    assert rows[-1]["rollup"] == "dead" and rows[0]["rollup"] == "sent" and rows[0]["control_id"] == "CTRL4"
    assert rows[-1]["deliveries"] == "dead=1 sent=1" and "MRN" not in r.text and "DOE" not in r.text
    dead = list(csv.DictReader(io.StringIO((await c.get("/api/messages/export.csv?rollup=dead")).text)))
    assert [int(x["id"]) for x in dead] == [ids[0]]
    empty = await c.get("/api/messages/export.csv", params={"channel": "nope"})
    assert empty.status_code == 200 and empty.text.strip() == ",".join(
        ["id", "received_at", "channel", "status", "rollup", "message_type", "control_id", "sending_app"]
        + ["sending_facility", "error_code", "size", "deliveries"]
    )
    assert (await c.get("/api/messages/export.csv", params={"patient_id": "MRN1"})).status_code == 403
    assert (await c.get("/api/messages/export.csv", params={"status": "bogus"})).status_code == 422


async def test_export_csv_pages(hub, monkeypatch):
    import hub.web.api as api

    ids = await five(hub)
    real = api._pages
    monkeypatch.setattr(api, "_pages", lambda h, q, most, page=500: real(h, q, 3, page=2))  # 2 per page, 3 at most
    r = await hub.client("viewer").get("/api/messages/export.csv")
    assert [int(line.split(",")[0]) for line in r.text.splitlines()[1:]] == ids[::-1][:3]


async def test_export_zip(hub):
    import io
    import zipfile

    ids = await five(hub)
    assert (await hub.client("viewer").get("/api/messages/export.zip")).status_code == 403
    assert (await hub.client("analyst").get("/api/messages/export.zip")).status_code == 403
    op = hub.client("operator")
    r = await op.get("/api/messages/export.zip", params={"channel": "adt", "since": "1h"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = zf.namelist()
    assert names == [f"{i}_CTRL{n}.hl7" for n, i in reversed(list(enumerate(ids)))]
    assert zf.read(names[-1]) == hub.engine.store.get_message(ids[0])["raw"]
    audit = (await hub.client("admin").get("/api/audit", params={"action": "export_zip"})).json()["items"]
    assert audit[0]["username"] == "operator" and audit[0]["channel"] == "adt"
    r = await op.get("/api/messages/export.zip", params={"channel": "nope"})
    assert r.status_code == 200 and zipfile.ZipFile(io.BytesIO(r.content)).namelist() == []


# ------------------------------------------------------------------------------------------------ rendering
async def test_x12_elements_are_named_from_the_implementation_guide(hub):
    from test_api import X12

    mid = await hub.push(X12, "other")
    body = (await hub.client("operator").get(f"/api/messages/{mid}")).json()
    segs = body["structure"]["segments"]
    names = {(s["loop"].split(" ")[0], e["id"]): s["element_names"].get(e["id"]) for s in segs for e in s["elements"]}
    assert names[("2010AA", "NM103")] == "Billing Provider Last or Organizational Name"
    assert names[("1000A", "NM103")] == "Submitter Last or Organization Name"
    assert names[("2300", "CLM01")] == "Patient Control Number"
    assert names[("2300", "CLM05")] == "Health Care Service Location Information"  # a composite
    assert names[("Interchange", "ISA06")] == "Interchange Sender ID"
    assert names[("Functional", "GS01")] == "Functional Identifier Code"
    assert all(e["id"] in s["element_names"] for s in segs for e in s["elements"])


def test_x12_names_fall_back_and_are_cached():
    from hub.web.render import _map_file, render_x12, x12_element_names

    assert _map_file("00501", "HP", "005010X221A1") == "835.5010.X221.A1.xml"
    assert _map_file("00501", "HC", "005010X222A2") == "837.5010.X222.A1.xml"  # another addendum: the A1 guide
    assert _map_file("00501", "ZZ", "005010X999") is None
    assert x12_element_names("837.5010.X222.A1.xml") is x12_element_names("837.5010.X222.A1.xml")
    assert x12_element_names("no-such-map.xml") == {}
    ack = (
        b"ISA*00*          *00*          *ZZ*RECEIVER       *ZZ*SUBMITTER      *260101*1200*^*00501*000000002*0*P*:~"
        b"GS*FA*RECEIVER*SUBMITTER*20260101*1200*2*X*005010X231A1~ST*999*0001*005010X231A1~AK1*HC*1*005010X222A2~"
        b"AK9*A*1*1*1~SE*4*0001~GE*1*2~IEA*1*000000002~"
    )
    r = render_x12(ack)
    assert r is not None
    ak1 = next(s for s in r["segments"] if s["id"] == "AK1")
    assert ak1["element_names"]["AK101"] == "Functional Identifier Code"


async def test_fhir_is_a_tree_in_document_order(hub):
    from test_api import FHIR

    mid = await hub.push(FHIR, "other")
    st = (await hub.client("operator").get(f"/api/messages/{mid}")).json()["structure"]
    assert st["kind"] == "fhir" and st["pretty"].startswith('{\n  "resourceType": "Bundle"')
    tree = st["tree"]
    assert tree["type"] == "object" and tree["resourceType"] == "Bundle" and tree["path"] == "$"
    assert [c["key"] for c in tree["children"]] == ["resourceType", "type", "entry"]
    entry = tree["children"][2]
    assert entry["type"] == "array" and entry["size"] == 1
    patient = entry["children"][0]["children"][0]
    assert patient["resourceType"] == "Patient" and patient["path"] == "$.entry[0].resource"
    assert patient["children"][1] == {"key": "id", "path": "$.entry[0].resource.id", "type": "string", "value": "p1"}


# ------------------------------------------------------------------------------------------------ access control
NEW_ENDPOINTS = [
    ("GET", "/api/charts?channel=adt", None, "view"),
    ("GET", "/api/overview", None, "view"),
    ("GET", "/api/alerts", None, "view"),
    ("GET", "/api/channels/adt/config", None, "channels"),
    ("GET", "/api/messages/export.csv", None, "view"),
    ("GET", "/api/messages/export.zip", None, "content"),
    ("POST", "/api/replay", {"message_ids": [1], "dry_run": True}, "replay"),
    ("POST", "/api/messages/1/replay", {"dry_run": True}, "replay"),
]
PERMS = {
    "viewer": {"view"},
    "operator": {"view", "content", "replay"},
    "analyst": {"view", "channels"},
    "admin": {"view", "content", "replay", "channels"},
}


async def test_new_endpoints_by_role(hub):
    await hub.push(hl7("C1", "MRN1"))
    for method, path, body, perm in NEW_ENDPOINTS:
        assert (await hub.client().request(method, path, json=body)).status_code == 401, path
        for role in ROLES:
            r = await hub.client(role).request(method, path, json=body)
            assert r.status_code == (200 if perm in PERMS[role] else 403), (role, path, r.text)


async def test_retention_run_prunes_old_rollups(hub):
    import time

    from hub.store import NewDelivery, NewMessage

    store = hub.engine.store
    old = time.time() - 9 * 86400
    store.accept([NewMessage("ghost", b"x", "raw", received_at=old, deliveries=[NewDelivery("nowhere")])])
    store.sample_queues(old)
    store.fold_counters()
    assert store.rollup_sums(old - 120, old + 120, 60, channel="ghost")
    await hub.engine.prune()
    assert store.rollup_sums(old - 120, old + 120, 60, channel="ghost") == {}
    assert store.queue_samples(old - 120, old + 120) == {}

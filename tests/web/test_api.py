"""The JSON API against a running engine (memory sources), through httpx's ASGI transport: every endpoint, every
role."""

from __future__ import annotations

import asyncio
import time

import pytest
from websupport import PASSWORD, ROLES, hl7, start_hub, until

X12 = (
    b"ISA*00*          *00*          *ZZ*SUBMITTER      *ZZ*RECEIVER       *260101*1200*^*00501*000000001*0*P*:~"
    b"GS*HC*SUBMITTER*RECEIVER*20260101*1200*1*X*005010X222A2~ST*837*0001*005010X222A2~"
    b"NM1*41*2*EXAMPLE CLINIC*****46*12345~HL*1**20*1~NM1*85*2*EXAMPLE CLINIC*****XX*1234567893~"
    b"CLM*PATIENT1*100***11:B:1*Y*A*Y*Y~LX*1~SV1*HC:99213*100*UN*1***1~SE*9*0001~GE*1*1~IEA*1*000000001~"
)
FHIR = b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"p1"}}]}'


@pytest.fixture
async def hub(tmp_path):
    h = await start_hub(tmp_path)
    yield h
    await h.close()


async def seeded(hub):
    """Three ADT messages (the first one's 'flaky' delivery goes dead), an X12 claim and a FHIR bundle."""
    ids = [await hub.push(hl7(f"CTRL{i}", f"MRN{i}", name=f"DOE{i}^JANE")) for i in range(3)]
    x12 = await hub.push(X12, "other")
    fhir = await hub.push(FHIR, "other")
    ehr = hub.engine.destinations[("adt", "ehr")]
    await until(lambda: len(ehr.sent) == 3 and hub.engine.store.delivery_states(ids[0]) == ["sent", "dead"])
    await until(lambda: hub.engine.store.delivery_states(fhir) == ["sent"])
    return ids, x12, fhir


# ------------------------------------------------------------------------------------------- access control
# (method, path, json body, permission needed); {id} is a stored message id
ENDPOINTS = [
    ("GET", "/api/me", None, None),
    ("GET", "/api/openapi.json", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/metrics", None, "view"),
    ("GET", "/api/channels", None, "view"),
    ("GET", "/api/channels/adt", None, "view"),
    ("GET", "/api/channels/adt/stats", None, "view"),
    ("GET", "/api/destinations", None, "view"),
    ("GET", "/api/dead-letters", None, "view"),
    ("GET", "/api/messages", None, "view"),
    ("GET", "/api/messages/{id}", None, "view"),
    ("GET", "/api/messages/{id}/raw", None, "content"),
    ("POST", "/api/messages/{id}/replay", {}, "replay"),
    ("POST", "/api/replay", {"channel": "adt"}, "replay"),
    ("POST", "/api/channels/other/pause", None, "channels"),
    ("POST", "/api/channels/other/resume", None, "channels"),
    ("POST", "/api/channels/other/disable", None, "channels"),
    ("POST", "/api/channels/other/enable", None, "channels"),
    ("POST", "/api/config/check", None, "channels"),
    ("POST", "/api/config/reload", None, "channels"),
    ("GET", "/api/users", None, "users"),
    ("POST", "/api/users", {"name": "newbie-{role}", "role": "viewer"}, "users"),
    ("PATCH", "/api/users/viewer", {"role": "viewer"}, "users"),
    ("GET", "/api/users/viewer/tokens", None, "users"),
    ("POST", "/api/users/viewer/tokens", {"label": "x"}, "users"),
    ("DELETE", "/api/tokens/999999", None, "users"),
    ("GET", "/api/audit", None, "audit"),
]
PERMS = {
    "viewer": {"view"},
    "operator": {"view", "content", "replay"},
    "analyst": {"view", "channels"},
    "admin": {"view", "content", "replay", "channels", "users", "audit"},
}


async def test_every_endpoint_needs_a_login_except_healthz(hub):
    mid = await hub.push(hl7("C1", "MRN1"))
    anon = hub.client()
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    for method, path, body, _ in ENDPOINTS:
        r = await anon.request(method, path.format(id=mid, role="anon"), json=body)
        assert r.status_code == 401, (method, path, r.status_code)
    bad = hub.client()
    bad.headers["Authorization"] = "Bearer hub_not-a-real-token"
    assert (await bad.get("/api/channels")).status_code == 401
    # pages send the browser to the login page; the login page itself and its assets are public
    for page in ("/", "/messages", f"/messages/{mid}", "/dead-letters", "/audit", "/users"):
        r = await anon.get(page)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), page
    assert (await anon.get("/login")).status_code == 200
    assert (await anon.get("/static/app.js")).status_code == 200
    # no CDN: the pages load only their own assets
    html = (await anon.get("/login")).text + (await hub.client("viewer").get("/")).text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_may_do_exactly_what_its_permissions_allow(hub, role):
    mid = await hub.push(hl7("C1", "MRN1"))
    c = hub.client(role)
    for method, path, body, perm in ENDPOINTS:
        if isinstance(body, dict):
            body = {k: v.format(role=role) if isinstance(v, str) else v for k, v in body.items()}
        r = await c.request(method, path.format(id=mid), json=body)
        if perm is None or perm in PERMS[role]:
            assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code)


# ------------------------------------------------------------------------------------------- sessions
async def test_login_sets_a_session_cookie_and_changes_need_the_csrf_token(tmp_path):
    hub = await start_hub(tmp_path, passwords=True)
    try:
        c = hub.client()
        assert (
            await c.post("/api/login", json={"username": "operator", "password": "wrong-password-x"})
        ).status_code == 401
        r = await c.post("/api/login", json={"username": "operator", "password": PASSWORD})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = r.json()["csrf"]
        me = (await c.get("/api/me")).json()
        assert (
            me["name"] == "operator"
            and me["via"] == "session"
            and me["csrf"] == csrf
            and "content" in me["permissions"]
        )
        mid = await hub.push(hl7("C9", "MRN9"))
        assert (await c.post(f"/api/messages/{mid}/replay", json={})).status_code == 403  # no CSRF header
        assert (
            await c.post(f"/api/messages/{mid}/replay", json={}, headers={"X-CSRF-Token": "forged"})
        ).status_code == 403
        assert (await c.post(f"/api/messages/{mid}/replay", json={}, headers={"X-CSRF-Token": csrf})).status_code == 200
        assert (await c.get("/")).status_code == 200  # the dashboard page with a session
        assert (await c.post("/api/logout", headers={"X-CSRF-Token": csrf})).status_code == 200
        c.cookies.clear()
        c.cookies.set("hub_session", r.cookies["hub_session"])  # the old cookie is dead on the server too
        assert (await c.get("/api/me")).status_code == 401
        audit = (await hub.client("admin").get("/api/audit", params={"user": "operator"})).json()["items"]
        assert {"login", "login_failed"} <= {a["action"] for a in audit}
    finally:
        await hub.close()


async def test_repeated_failed_logins_are_throttled(tmp_path):
    hub = await start_hub(tmp_path, passwords=True)
    try:
        c = hub.client()
        for _ in range(5):
            assert (
                await c.post("/api/login", json={"username": "admin", "password": "not-the-password"})
            ).status_code == 401
        r = await c.post("/api/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 429
    finally:
        await hub.close()


async def test_a_disabled_user_or_revoked_token_is_refused(hub):
    admin = hub.client("admin")
    viewer = hub.client("viewer")
    assert (await viewer.get("/api/channels")).status_code == 200
    assert (await admin.patch("/api/users/viewer", json={"disabled": True})).status_code == 200
    assert (await viewer.get("/api/channels")).status_code == 401
    await admin.patch("/api/users/viewer", json={"disabled": False})
    tokens = (await admin.get("/api/users/viewer/tokens")).json()
    assert tokens and "token" not in tokens[0] and "token_hash" not in tokens[0]
    assert (await admin.delete(f"/api/tokens/{tokens[0]['id']}")).status_code == 200
    assert (await viewer.get("/api/channels")).status_code == 401


# ------------------------------------------------------------------------------------------- channels
async def test_channels_show_counts_rates_queues_and_oldest_age(hub):
    _ids, _, _ = await seeded(hub)
    await hub.push(b"not hl7 at all")  # rejected
    chans = {c["name"]: c for c in (await hub.client("viewer").get("/api/channels")).json()}
    adt = chans["adt"]
    assert adt["state"] == "running" and adt["source"] == "memory"
    assert (adt["received"], adt["accepted"], adt["rejected"]) == (4, 3, 1)
    assert adt["last_hour"]["received"] == 4 and adt["last_hour"]["per_minute"] == round(4 / 60, 2)
    dests = {d["name"]: d for d in adt["destinations"]}
    assert dests["ehr"]["sent"] == 3 and dests["flaky"]["dead"] == 1 and dests["flaky"]["sent"] == 2
    assert dests["ehr"]["oldest_queued_age"] is None
    assert "last_error" not in dests["flaky"]  # error texts are for roles that see content
    op = {c["name"]: c for c in (await hub.client("operator").get("/api/channels")).json()}
    assert "config" not in op["adt"]
    one = (await hub.client("analyst").get("/api/channels/adt")).json()
    assert one["config"]["destinations"]["flaky"]["fail"] == "permanent" and one["file"].endswith("adt.yaml")
    assert (await hub.client("viewer").get("/api/channels/nope")).status_code == 404
    stats = (await hub.client("viewer").get("/api/channels/adt/stats", params={"window": "15m"})).json()
    assert stats["received"] == 4 and stats["window_seconds"] == 900 and stats["destinations"]["ehr"]["sent"] == 3
    assert (await hub.client("viewer").get("/api/channels/adt/stats", params={"window": "soon"})).status_code == 422
    dl = (await hub.client("viewer").get("/api/destinations")).json()
    assert {(d["channel"], d["name"]) for d in dl} == {("adt", "ehr"), ("adt", "flaky"), ("other", "out")}


async def test_an_oldest_queued_age_appears_while_a_delivery_waits(hub):
    worker = hub.engine.workers[("other", "out")]
    await worker.stop()
    mid = await hub.push(b"waiting", "other")
    hub.app.state.hub.invalidate()
    await asyncio.sleep(1.1)
    out = next(d for d in (await hub.client("viewer").get("/api/destinations")).json() if d["name"] == "out")
    assert out["queued"] == 1 and out["oldest_queued_age"] >= 1.0
    assert hub.engine.store.delivery_states(mid) == ["queued"]


def test_secret_settings_are_hidden_from_the_channel_view():
    from hub.web.api import _redact

    cfg = {
        "source": {"type": "sftp", "password": "s3cret", "host": "h"},
        "destinations": {"x": {"auth": {"token": "t", "type": "bearer"}}},
    }
    out = _redact(cfg)
    assert out["source"] == {"type": "sftp", "password": "***", "host": "h"}
    assert out["destinations"]["x"]["auth"] == {"token": "***", "type": "bearer"}


async def test_pause_stops_the_source_and_resume_starts_it_again(hub):
    analyst = hub.client("analyst")
    assert (await hub.client("operator").post("/api/channels/adt/pause")).status_code == 403
    r = await analyst.post("/api/channels/adt/pause")
    assert r.json() == {"channel": "adt", "state": "paused"}
    with pytest.raises(AssertionError, match="not started"):
        await hub.push(hl7("P1", "MRN1"))
    chans = {c["name"]: c for c in (await analyst.get("/api/channels")).json()}
    assert chans["adt"]["state"] == "paused"
    ready = (await analyst.get("/readyz")).json()
    assert ready["ready"] and ready["checks"]["paused_channels"] == ["adt"]
    assert (await analyst.post("/api/channels/adt/resume")).json()["state"] == "running"
    assert await hub.push(hl7("P2", "MRN2")) > 0
    assert (await analyst.post("/api/channels/nope/pause")).status_code == 404
    actions = [(a["action"], a["channel"]) for a in (await hub.client("admin").get("/api/audit")).json()["items"]]
    assert ("pause", "adt") in actions and ("resume", "adt") in actions


async def test_config_check_and_reload(hub):
    analyst = hub.client("analyst")
    r = await analyst.post("/api/config/check")
    assert r.json() == {"ok": True, "problems": []}
    before = hub.engine.channels["adt"]
    r = await analyst.post("/api/config/reload")
    assert r.status_code == 200 and r.json()["reloaded"] and "adt" in r.json()["channels"]
    assert hub.engine.channels["adt"] is not before  # rebuilt from the files
    assert await hub.push(hl7("R1", "MRN-R1")) > 0  # and taking messages again
    folder = hub.engine.cfg.folder
    (folder / "channels" / "broken.yaml").write_text("name: broken\nsource: {type: nope}\n")
    r = await analyst.post("/api/config/check")
    assert not r.json()["ok"] and any("broken.yaml" in p for p in r.json()["problems"])
    r = await analyst.post("/api/config/reload")
    assert r.status_code == 422 and r.json()["detail"]["problems"]
    assert hub.engine.channels["adt"] is not None and "broken" not in hub.engine.channels
    actions = [
        a["action"] for a in (await hub.client("admin").get("/api/audit", params={"user": "analyst"})).json()["items"]
    ]
    assert actions.count("config_check") == 2 and actions.count("config_reload") == 2


async def test_a_pause_is_kept_in_the_store_it_outlives_reloads_until_resumed(hub):
    analyst = hub.client("analyst")
    assert (await analyst.post("/api/channels/adt/pause")).status_code == 200
    assert hub.engine.paused == {"adt"} and hub.engine.is_paused("adt")
    assert hub.engine.channel_state("adt") == "paused" and hub.engine.sources_running() == {"adt": 0, "other": 1}
    assert (await analyst.post("/api/channels/adt/pause")).json()["state"] == "paused"  # twice: still paused
    assert hub.engine.paused == {"adt"}
    shared = hub.engine.store.channel_states()["adt"]
    assert shared.paused and shared.enabled and shared.changed_by == "analyst"
    folder = hub.engine.cfg.folder
    broken = folder / "channels" / "broken.yaml"
    broken.write_text("name: broken\nsource: {type: nope}\n")
    assert (await analyst.post("/api/config/reload")).status_code == 422  # nothing changed: still paused
    assert hub.engine.paused == {"adt"}
    assert {c["name"]: c["state"] for c in (await analyst.get("/api/channels")).json()}["adt"] == "paused"
    broken.unlink()
    assert (await analyst.post("/api/config/reload")).status_code == 200  # every channel built again: still paused
    assert hub.engine.paused == {"adt"} and hub.engine.channel_state("adt") == "paused"
    assert hub.engine.sources_running() == {"adt": 0, "other": 1}
    assert (await analyst.post("/api/channels/adt/resume")).json()["state"] == "running"
    assert await hub.push(hl7("R2", "MRN-R2")) > 0
    # the engine's own pause is what the API shows, and resuming through the API ends it
    assert await hub.engine.pause("other") and not await hub.engine.pause("other")
    assert {c["name"]: c["state"] for c in (await analyst.get("/api/channels")).json()}["other"] == "paused"
    assert (await analyst.post("/api/channels/other/resume")).json()["state"] == "running"
    assert not hub.engine.is_paused("other") and not await hub.engine.resume("other")
    assert not hub.engine.store.channel_states()["other"].paused


async def test_disable_stops_source_and_workers_and_enable_starts_them_again(hub):
    analyst = hub.client("analyst")
    assert (await hub.client("operator").post("/api/channels/adt/disable")).status_code == 403
    r = await analyst.post("/api/channels/adt/disable")
    assert r.json() == {"channel": "adt", "state": "disabled"}
    assert hub.engine.disabled == {"adt"} and not any(ch == "adt" for ch, _ in hub.engine.workers)
    with pytest.raises(AssertionError, match="not started"):
        await hub.push(hl7("D1", "MRN1"))
    chans = {c["name"]: c for c in (await analyst.get("/api/channels")).json()}
    assert chans["adt"]["state"] == "disabled" and chans["other"]["state"] == "running"
    assert hub.engine.sources_running()["adt"] == 0
    assert not hub.engine.store.channel_states()["adt"].enabled
    # paused while disabled: enabling starts the workers, the source stays stopped until resumed
    assert (await analyst.post("/api/channels/adt/pause")).json()["state"] == "paused"
    assert hub.engine.channel_state("adt") == "disabled"
    assert (await analyst.post("/api/channels/adt/enable")).json()["state"] == "paused"
    assert any(ch == "adt" for ch, _ in hub.engine.workers)
    assert (await analyst.post("/api/channels/adt/resume")).json()["state"] == "running"
    assert await hub.push(hl7("D2", "MRN2")) > 0
    assert (await analyst.post("/api/channels/nope/disable")).status_code == 404
    actions = [(a["action"], a["channel"]) for a in (await hub.client("admin").get("/api/audit")).json()["items"]]
    assert ("disable", "adt") in actions and ("enable", "adt") in actions


# ------------------------------------------------------------------------------------------- messages
async def test_search_by_every_filter_and_page_with_before_id(hub):
    ids, x12, fhir = await seeded(hub)
    op = hub.client("operator")

    async def found(**params):
        r = await op.get("/api/messages", params=params)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["items"]]

    assert await found(channel="adt") == ids[::-1]
    assert await found(channel="other") == [fhir, x12]
    assert await found(control_id="CTRL1") == [ids[1]]
    assert await found(patient_id="MRN2") == [ids[2]]
    assert await found(message_type="ADT") == ids[::-1]
    assert await found(message_type="ADT^A04") == ids[::-1]
    assert await found(message_type="ORU") == []
    assert await found(text="DOE1^JANE") == [ids[1]]
    assert await found(status="dead") == [ids[0]]
    assert await found(status="dead", destination="ehr") == []
    assert await found(status="accepted", channel="adt") == ids[::-1]
    assert await found(since="1h") == [fhir, x12] + ids[::-1]
    assert await found(until="1h") == []
    assert await found(since=str(time.time() + 60)) == []
    page1 = (await op.get("/api/messages", params={"limit": 2})).json()
    assert [m["id"] for m in page1["items"]] == [fhir, x12] and page1["next_before_id"] == x12
    page2 = (await op.get("/api/messages", params={"limit": 2, "before_id": page1["next_before_id"]})).json()
    assert [m["id"] for m in page2["items"]] == [ids[2], ids[1]]
    assert (await op.get("/api/messages", params={"status": "bogus"})).status_code == 422
    assert (await op.get("/api/messages", params={"since": "yesterday-ish"})).status_code == 422
    row = (await op.get("/api/messages", params={"control_id": "CTRL0"})).json()["items"][0]
    assert row["patient_id"] == "MRN0" and row["deliveries"] == {"sent": 1, "dead": 1}


async def test_a_viewer_sees_metadata_but_no_patient_ids_or_content(hub):
    ids, _, _ = await seeded(hub)
    v = hub.client("viewer")
    rows = (await v.get("/api/messages", params={"channel": "adt"})).json()["items"]
    assert len(rows) == 3 and all(r["patient_id"] is None for r in rows) and rows[0]["control_id"] == "CTRL2"
    assert (await v.get("/api/messages", params={"patient_id": "MRN1"})).status_code == 403
    assert (await v.get("/api/messages", params={"text": "DOE"})).status_code == 403
    detail = (await v.get(f"/api/messages/{ids[0]}")).json()
    assert detail["content_visible"] is False
    for key in ("raw", "structure", "patient_id", "error", "meta", "source_ref"):
        assert key not in detail
    for d in detail["deliveries"]:
        assert "content" not in d and "response" not in d and "last_error" not in d
        assert all(set(a) == {"number", "at", "outcome", "node"} for a in d["attempt_log"])
    assert "MRN0" not in (await v.get(f"/api/messages/{ids[0]}")).text
    dead = (await v.get("/api/dead-letters")).json()["items"]
    assert dead[0]["message_id"] == ids[0] and dead[0]["last_error"] is None and dead[0]["patient_id"] is None
    assert (await v.get(f"/api/messages/{ids[0]}/raw")).status_code == 403
    audit = (await hub.client("admin").get("/api/audit", params={"user": "viewer"})).json()["items"]
    assert audit == []  # nothing with content was shown


async def test_message_detail_shows_hl7_by_segment_with_field_names_deliveries_and_attempts(hub):
    ids, _, _ = await seeded(hub)
    op = hub.client("operator")
    m = (await op.get(f"/api/messages/{ids[0]}")).json()
    assert m["content_visible"] and m["raw"].startswith("MSH|^~\\&|PM|") and m["patient_id"] == "MRN0"
    s = m["structure"]
    assert s["kind"] == "hl7v2" and [seg["name"] for seg in s["segments"]] == ["MSH", "EVN", "PID", "PV1"]
    pid = {f["id"]: f for f in s["segments"][2]["fields"]}
    assert pid["PID-5"]["name"] == "Patient Name" and pid["PID-5"]["value"] == "DOE0^JANE"
    assert pid["PID-5"]["repetitions"][0][0] == {"n": 1, "name": "Family Name", "value": "DOE0"}
    assert pid["PID-3"]["name"] == "Patient Identifier List"
    d = {x["destination"]: x for x in m["deliveries"]}
    assert d["ehr"]["status"] == "sent" and d["ehr"]["response"] == "ok" and d["ehr"]["content_is_raw"]
    assert d["flaky"]["status"] == "dead" and d["flaky"]["last_error"] == "simulated permanent failure 1"
    assert [a["outcome"] for a in d["flaky"]["attempt_log"]] == ["dead"] and d["flaky"]["attempt_log"][0]["error"]
    raw = await op.get(f"/api/messages/{ids[0]}/raw")
    assert raw.content.startswith(b"MSH|") and "attachment" in raw.headers["content-disposition"]
    audit = (await hub.client("admin").get("/api/audit", params={"message_id": ids[0]})).json()["items"]
    assert [(a["action"], a["username"], a["role"], a["channel"]) for a in audit] == [
        ("view_raw", "operator", "operator", "adt"),
        ("view_message", "operator", "operator", "adt"),
    ]
    assert (await op.get("/api/messages/999999")).status_code == 404


async def test_detail_shows_x12_by_loop_and_segment_and_fhir_as_formatted_json(hub):
    _, x12, fhir = await seeded(hub)
    op = hub.client("operator")
    s = (await op.get(f"/api/messages/{x12}")).json()["structure"]
    assert s["kind"] == "x12" and s["transaction"] == "837"
    segs = {seg["id"]: seg for seg in s["segments"]}
    assert segs["CLM"]["name"] == "Claim Information" and segs["CLM"]["loop"] == "2300 Claim"
    assert [seg["loop"] for seg in s["segments"] if seg["id"] == "NM1"] == [
        "1000A Submitter",
        "2010AA Billing Provider Name",
    ]
    assert segs["HL"]["loop"] == "2000A Billing Provider" and segs["SV1"]["loop"] == "2400 Service Line"
    assert {"id": "CLM02", "value": "100"} in segs["CLM"]["elements"]
    f = (await op.get(f"/api/messages/{fhir}")).json()["structure"]
    assert f["kind"] == "fhir" and f["summary"] == {
        "resourceType": "Bundle",
        "type": "transaction",
        "entries": ["Patient"],
    }
    assert f["pretty"].startswith('{\n  "resourceType": "Bundle"')


async def test_an_hl7_ack_response_is_rendered_too(hub):
    from hub.web.render import render

    ack = b"MSH|^~\\&|EHR|CLINIC|PM|CLINIC|20260310090001||ACK^A04^ACK|A1|P|2.5.1\rMSA|AA|CTRL0\r"
    s = render(None, ack)
    msa = s["segments"][1]
    assert (
        msa["name"] == "MSA" and msa["fields"][0]["name"] == "Acknowledgment Code" and msa["fields"][0]["value"] == "AA"
    )


async def test_replay_one_message_sends_its_dead_delivery_again(hub):
    ids, _, _ = await seeded(hub)
    op = hub.client("operator")
    assert (await hub.client("viewer").post(f"/api/messages/{ids[0]}/replay", json={})).status_code == 403
    r = await op.post(f"/api/messages/{ids[0]}/replay", json={"destination": "flaky"})
    assert r.json() == {"message_id": ids[0], "queued": 1, "reprocessed": None}
    await until(lambda: hub.engine.store.delivery_states(ids[0]) == ["sent", "sent"])
    deliveries = (await op.get(f"/api/messages/{ids[0]}")).json()["deliveries"]
    flaky = next(d for d in deliveries if d["destination"] == "flaky")
    assert [a["outcome"] for a in flaky["attempt_log"]] == ["dead", "sent"]
    audit = (await hub.client("admin").get("/api/audit", params={"action": "replay"})).json()["items"]
    assert audit[0]["message_id"] == ids[0] and audit[0]["detail"] == {"destination": "flaky", "queued": 1}
    assert (await op.post("/api/messages/999999/replay", json={})).status_code == 404


async def test_replaying_a_rejected_message_runs_it_through_the_channel_again(hub):
    mid = await hub.push(
        b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260310||ADT^A04|R1||2.5.1\rPID|1||MRN7^^^CLINIC^MR||DOE^JANE\r"
    )
    assert hub.engine.store.get_message(mid)["status"] == "rejected"  # MSH-11 is missing
    r = await hub.client("operator").post(f"/api/messages/{mid}/replay", json={})
    assert r.json() == {"message_id": mid, "queued": 0, "reprocessed": "rejected"}  # nothing was fixed: still rejected
    hub.engine.channels["adt"].source_config.validate_ = "none"  # "fix" the channel
    r = await hub.client("operator").post(f"/api/messages/{mid}/replay", json={})
    assert r.json() == {"message_id": mid, "queued": 2, "reprocessed": "accepted"}
    await until(lambda: sorted(hub.engine.store.delivery_states(mid)) == ["dead", "sent"])  # flaky fails its first send


async def test_replay_a_filtered_set(hub):
    ids, _, _ = await seeded(hub)
    op = hub.client("operator")
    assert (await op.post("/api/replay", json={"statuses": ["sent"]})).status_code == 422  # resend everything? no
    r = await op.post(
        "/api/replay", json={"channel": "adt", "since": "1h", "message_type": "ADT^A04", "statuses": ["dead"]}
    )
    assert r.json() == {"queued": 1, "messages": 1}
    await until(lambda: hub.engine.store.delivery_states(ids[0]) == ["sent", "sent"])
    r = await op.post("/api/replay", json={"message_ids": [ids[1], ids[2]], "destination": "ehr", "statuses": ["sent"]})
    assert r.json() == {"queued": 2, "messages": 2}
    ehr = hub.engine.destinations[("adt", "ehr")]
    await until(lambda: len(ehr.sent) == 5)
    r = await op.post("/api/replay", json={"channel": "adt"})  # every dead one: none left
    assert r.json()["queued"] == 0
    audit = (await hub.client("admin").get("/api/audit", params={"action": "replay_many"})).json()["items"]
    assert len(audit) == 3 and audit[1]["detail"]["message_ids"] == [ids[1], ids[2]]


# ------------------------------------------------------------------------------------------- users and audit
async def test_admin_manages_users_and_tokens(hub):
    admin = hub.client("admin")
    r = await admin.post("/api/users", json={"name": "nina", "role": "operator", "password": "a-long-synthetic-pass"})
    assert (
        r.status_code == 201
        and r.json()["role"] == "operator"
        and "a-long-synthetic-pass" not in r.text
        and "scrypt" not in r.text
    )
    assert (await admin.post("/api/users", json={"name": "nina", "role": "viewer"})).status_code == 409
    assert (
        await admin.post("/api/users", json={"name": "weak", "role": "viewer", "password": "short"})
    ).status_code == 422
    assert (await admin.post("/api/users", json={"name": "x", "role": "superuser"})).status_code == 422
    token = (await admin.post("/api/users/nina/tokens", json={"label": "script", "ttl": "1d"})).json()["token"]
    nina = hub.client()
    nina.headers["Authorization"] = f"Bearer {token}"
    assert (await nina.get("/api/me")).json()["role"] == "operator"
    assert (await admin.patch("/api/users/nina", json={"role": "viewer"})).json()["role"] == "viewer"
    assert (await nina.get("/api/me")).json()["permissions"] == ["view"]
    assert (await admin.post("/api/users/ghost/tokens", json={})).status_code == 404
    assert (await admin.patch("/api/users/ghost", json={"role": "viewer"})).status_code == 404
    names = {u["name"]: u for u in (await admin.get("/api/users")).json()}
    assert names["nina"]["role"] == "viewer" and names["viewer"]["has_password"] is False
    # the last enabled admin stays an admin
    assert (await admin.patch("/api/users/admin", json={"role": "viewer"})).status_code == 409
    assert (await admin.patch("/api/users/admin", json={"disabled": True})).status_code == 409
    actions = [a["action"] for a in (await admin.get("/api/audit", params={"user": "admin"})).json()["items"]]
    assert actions.count("user_add") == 1 and actions.count("user_change") == 1 and actions.count("token_create") == 1


async def test_two_admins_disabling_each_other_at_once_cannot_lock_everyone_out(hub):
    await asyncio.to_thread(hub.auth.add_user, "boss", "admin")
    boss = hub.client()
    boss.headers["Authorization"] = f"Bearer {await asyncio.to_thread(hub.auth.create_token, 'boss')}"
    admin = hub.client("admin")
    r1, r2 = await asyncio.gather(
        admin.patch("/api/users/boss", json={"disabled": True}), boss.patch("/api/users/admin", json={"disabled": True})
    )
    # The second request is refused either by the last-admin rule (409) or, when the first committed before the
    # second was authenticated, because its caller is now disabled (401). Never both accepted.
    codes = sorted([r1.status_code, r2.status_code])
    assert codes in ([200, 409], [200, 401])
    if codes == [200, 409]:
        refused = r1 if r1.status_code == 409 else r2
        detail = refused.json()["detail"]
        assert "without an enabled admin" in detail and "last enabled admin" in detail
    left = [u for u in await asyncio.to_thread(hub.auth.list_users) if u.role == "admin" and not u.disabled]
    assert len(left) == 1
    me = admin if left[0].name == "admin" else boss  # the one left cannot demote itself either
    r = await me.patch(f"/api/users/{left[0].name}", json={"role": "sender"})
    assert r.status_code == 409 and "last enabled admin" in r.json()["detail"]


async def test_audit_log_is_searchable_by_user_action_message_and_time(hub):
    ids, _, _ = await seeded(hub)
    op = hub.client("operator")
    for mid in ids:
        await op.get(f"/api/messages/{mid}")
    await op.post(f"/api/messages/{ids[1]}/replay", json={})
    admin = hub.client("admin")

    async def audit(**params):
        return (await admin.get("/api/audit", params=params)).json()

    everything = await audit()
    assert [a["action"] for a in everything["items"]] == ["replay", "view_message", "view_message", "view_message"]
    assert all(a["remote"] for a in everything["items"])
    assert [a["message_id"] for a in (await audit(action="view_message"))["items"]] == ids[::-1]
    assert len((await audit(message_id=ids[1]))["items"]) == 2
    assert (await audit(user="nobody"))["items"] == []
    assert len((await audit(since="1h"))["items"]) == 4 and (await audit(until="1h"))["items"] == []
    page = await audit(limit=3)
    assert page["next_before_id"] is not None
    assert len((await audit(before_id=page["next_before_id"]))["items"]) == 1


# ------------------------------------------------------------------------------------------- meta
async def test_openapi_metrics_readyz_and_security_headers(hub):
    await seeded(hub)
    v = hub.client("viewer")
    doc = (await v.get("/api/openapi.json")).json()
    for path in (
        "/api/channels",
        "/api/messages",
        "/api/messages/{message_id}",
        "/api/messages/{message_id}/replay",
        "/api/replay",
        "/api/dead-letters",
        "/api/destinations",
        "/api/users",
        "/api/audit",
        "/api/channels/{name}/pause",
        "/metrics",
        "/healthz",
    ):
        assert path in doc["paths"], path
    m = (await v.get("/metrics")).text
    assert 'hub_messages_total{channel="adt",outcome="accepted"}' in m
    assert 'hub_deliveries_total{channel="adt",destination="flaky",outcome="dead"}' in m
    assert "hub_ingest_seconds_bucket" in m and "hub_delivery_latency_seconds_bucket" in m
    assert (await v.get("/readyz")).json()["ready"] is True
    r = await v.get("/api/channels")
    assert "default-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"

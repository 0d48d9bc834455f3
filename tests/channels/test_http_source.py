"""The ``http`` source served by the hub's real web app (uvicorn on 127.0.0.1, a real SQLite store), with httpx as
the sending system: sender token and Basic, 401/403/405/413, answers only after the commit (the message is in the
store when the answer arrives), HL7 v2 answered with its ACK (AR with the reason when rejected), X12 rejected with
the channel's 999, the store down → 503 with Retry-After, idempotent resends, ``response: after_delivery`` relaying
what the ``http`` destination's peer answered (and the timeout), and ``response_to`` feeding the reply back in."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path

import httpx
import pytest
from http_peer import Answer, HttpPeer
from test_mllp_support import make_pki

from hub.channels.http import HttpSource, format_of
from hub.cli import _services
from hub.engine import Engine, check
from hub.errors import StoreError
from hub.spec import load_config
from hub.store import SearchQuery
from hub.store.auth import AuthStore
from support import ROOT, SAMPLES, until, write_config

PASSWORD = "synthetic-password-1"

HUB = """
store: {{url: 'sqlite:///{db}'}}
web: {{listen: '127.0.0.1:0'}}
mappings: {mappings}
"""

LAB = """
name: lab_in
source: {type: http, path: /in/lab, basic: true, senders: [lab], max_bytes: 4000, meta_headers: [X-Correlation-Id]}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""

CLAIMS = """
name: claims_in
source: {type: http, path: /in/claims, format: x12, split: none, methods: [POST, PUT]}
routes:
  - name: ack
    transforms: [{type: x12_999, partner: clearinghouse}]
    to: [acks]
destinations:
  acks: {type: memory}
"""

ELIG = """
name: elig
source:
  type: http
  path: /eligibility
  format: x12
  validate: none
  response: after_delivery
  response_from: clearinghouse
  response_timeout: {timeout}
routes:
  - {{name: all, to: [clearinghouse, audit]}}
destinations:
  audit: {{type: memory}}
  clearinghouse:
    type: http
    url: '{url}/270'
    response_to: replies
    queue: {{max_attempts: 2, backoff: {{initial: 0.05s, max: 0.1s}}}}
"""

REPLIES = """
name: replies
source: {type: channel}
routes:
  - {name: all, to: [kept]}
destinations:
  kept: {type: memory}
"""


def adt(control: str = "C1", trigger: str = "A04", extra: str = "") -> bytes:
    return (
        f"MSH|^~\\&|LIS|CLINIC|HUB|CLINIC|20260310090000||ADT^{trigger}^ADT_A01|{control}|P|2.5.1\r"
        f"EVN|{trigger}|20260310090000\r"
        f"PID|1||MRN{control}^^^CLINIC^MR||DOE^JANE||19800214|F\r{extra}"
    ).encode()


class Hub:
    def __init__(self, engine: Engine, url: str, tokens: dict[str, str]) -> None:
        self.engine = engine
        self.url = url
        self.tokens = tokens

    def client(self, who: str | None = None, **kw) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20, **kw)


async def start(tmp_path: Path, channels: dict[str, str], hub_extra: str = "") -> Hub:
    hub_yaml = HUB.format(db=tmp_path / "hub.db", mappings=ROOT / "mappings") + hub_extra
    cfg = load_config(write_config(tmp_path / "cfg", hub_yaml, channels))
    assert not cfg.problems, cfg.problems
    eng = Engine(cfg, services=_services(cfg), idle_poll=0.05)  # as `hub run` composes it: the web app serves
    await eng.start()
    web = eng.services[0]
    auth = AuthStore(eng.store)
    tokens = {}
    for name, role, pw in (("lab", "sender", PASSWORD), ("other", "sender", None), ("ops", "operator", None)):
        await asyncio.to_thread(auth.add_user, name, role, pw)
        tokens[name] = await asyncio.to_thread(auth.create_token, name)
    return Hub(eng, web.url, tokens)


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


async def test_hl7_is_stored_before_the_aa_and_a_bad_message_gets_an_ar_with_the_reason(tmp_path):
    hub = await start(tmp_path, {"lab_in": LAB})
    try:
        async with hub.client("lab") as c:
            r = await c.post(
                "/in/lab",
                content=adt("C1"),
                headers={"Content-Type": "x-application/hl7-v2+er7", "X-Correlation-Id": "corr-1"},
            )
            assert r.status_code == 200 and r.headers["content-type"] == "x-application/hl7-v2+er7"
            assert b"MSA|AA|C1" in r.content
            mid = int(r.headers["X-Hub-Message-Id"])
            stored = await asyncio.to_thread(hub.engine.store.get_message, mid)  # committed before the answer
            assert stored["status"] == "accepted" and stored["content_type"] == "hl7v2"
            assert stored["meta"]["sender"] == "lab" and stored["meta"]["http_x_correlation_id"] == "corr-1"

            # text/plain starting with MSH is HL7 v2 too; a message without MSH-9 is rejected: 422 + AR + reason
            bad = adt("C2").replace(b"ADT^A04^ADT_A01", b"")
            r = await c.post("/in/lab", content=bad, headers={"Content-Type": "text/plain"})
            assert r.status_code == 422 and b"MSA|AR|C2" in r.content and b"ERR|" in r.content
            mid = int(r.headers["X-Hub-Message-Id"])
            stored = await asyncio.to_thread(hub.engine.store.get_message, mid)
            assert stored["status"] == "rejected" and stored["error"]  # kept, with the reason, never lost

            # not HL7 at all: JSON with the reason
            r = await c.post("/in/lab", content=b"MSH", headers={"Content-Type": "x-application/hl7-v2+er7"})
            assert r.status_code == 422
            assert r.headers["content-type"].startswith(("application/json", "x-application/hl7-v2+er7"))

            # JSON by its Content-Type
            r = await c.post("/in/lab", json={"order": "SYN-1", "tests": ["CBC"]})
            assert r.status_code == 200 and r.json()["status"] == "accepted"
            (mid,) = r.json()["message_ids"]
            stored = await asyncio.to_thread(hub.engine.store.get_message, mid)
            assert stored["content_type"] == "json"
        out = hub.engine.destinations[("lab_in", "out")]
        await until(lambda: len(out.sent) == 2, what="both accepted messages delivered")
    finally:
        await hub.engine.stop()


async def test_credentials_roles_senders_methods_and_size(tmp_path):
    hub = await start(tmp_path, {"lab_in": LAB, "claims_in": CLAIMS})
    try:
        async with hub.client() as c:
            r = await c.post("/in/lab", content=adt())
            assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
            r = await c.post("/in/lab", content=adt(), headers=basic("lab", PASSWORD))
            assert r.status_code == 200 and b"MSA|AA" in r.content  # HTTP Basic for a legacy peer
            r = await c.post("/in/lab", content=adt(), headers=basic("lab", PASSWORD))  # from the cache: no scrypt
            assert r.status_code == 200
            r = await c.post("/in/lab", content=adt(), headers=basic("lab", "wrong-password"))
            assert r.status_code == 401 and "wrong user name or password" in r.json()["detail"]
            r = await c.post("/in/lab", content=adt(), headers={"Authorization": f"Bearer {hub.tokens['other']}"})
            assert r.status_code == 403 and "not one of its senders" in r.json()["detail"]
            r = await c.post("/in/lab", content=adt(), headers={"Authorization": f"Bearer {hub.tokens['ops']}"})
            assert r.status_code == 403 and "needs 'send'" in r.json()["detail"]
            # claims_in takes tokens only (basic: false), from any sender
            r = await c.post("/in/claims", content=b"ISA", headers=basic("lab", PASSWORD))
            assert r.status_code == 401 and "not HTTP Basic" in r.json()["detail"]
        async with hub.client("lab") as c:
            r = await c.get("/in/lab")
            assert r.status_code == 405  # only POST is listed
            r = await c.post("/in/lab", content=adt("BIG", extra="NTE|1||" + "x" * 5000 + "\r"))
            assert r.status_code == 413 and "larger than 4000" in r.json()["reason"]
            r = await c.post("/in/lab", content=b"")
            assert r.status_code == 400
        # nothing refused was stored: the two accepted posts only
        found = await asyncio.to_thread(hub.engine.store.search, SearchQuery(channel="lab_in"))
        assert len(found) == 2
        await asyncio.to_thread(AuthStore(hub.engine.store).update_user, "lab", disabled=True)
        async with hub.client() as c:  # a disabled user stops at once, also from the Basic cache
            r = await c.post("/in/lab", content=adt(), headers=basic("lab", PASSWORD))
            assert r.status_code == 401
    finally:
        await hub.engine.stop()


async def test_the_store_down_is_503_with_retry_after_and_an_ae(tmp_path):
    hub = await start(tmp_path, {"lab_in": LAB})
    try:

        async def down(items, **kw):
            raise StoreError("database is locked")

        hub.engine.store.accept_async = down
        async with hub.client("lab") as c:
            r = await c.post("/in/lab", content=adt("D1"), headers={"Content-Type": "x-application/hl7-v2+er7"})
            assert r.status_code == 503 and r.headers["Retry-After"] == "10" and b"MSA|AE|D1" in r.content
            r = await c.post("/in/lab", json={"x": 1})
            assert r.status_code == 503 and r.headers["Retry-After"] == "10" and "again" in r.json()["reason"]
            await hub.engine.pause("lab_in")  # a paused channel answers 503 as well: the sender keeps it
            r = await c.post("/in/lab", json={"x": 1})
            assert r.status_code == 503 and "not running" in r.json()["reason"]
    finally:
        await hub.engine.stop()


async def test_an_idempotency_key_resend_is_answered_as_the_first_and_stored_once(tmp_path):
    hub = await start(tmp_path, {"lab_in": LAB})
    try:
        async with hub.client("lab") as c:
            h = {"Idempotency-Key": "order-77", "Content-Type": "application/json"}
            a = await c.post("/in/lab", content=b'{"order": 77}', headers=h)
            b = await c.post("/in/lab", content=b'{"order": 77}', headers=h)
            assert a.status_code == b.status_code == 200
            assert a.json()["message_ids"] == b.json()["message_ids"] and b.json()["duplicate"] is True
        assert len(await asyncio.to_thread(hub.engine.store.search, SearchQuery(channel="lab_in"))) == 1
    finally:
        await hub.engine.stop()


async def test_a_rejected_x12_is_answered_with_the_channels_999(tmp_path):
    hub = await start(tmp_path, {"claims_in": CLAIMS})
    try:
        async with hub.client("lab") as c:
            good = (SAMPLES / "x12" / "claims_837p.837").read_bytes()
            r = await c.post("/in/claims", content=good)
            assert r.status_code == 200 and r.json()["status"] == "accepted"
            bad = (SAMPLES / "x12" / "malformed_missing_element.837").read_bytes()
            r = await c.put("/in/claims", content=bad)
            assert r.status_code == 422 and r.headers["content-type"] == "application/edi-x12"
            assert b"ST*999*" in r.content and b"IK5*R" in r.content and b"AK9*R" in r.content
            assert "CLM02" in r.headers["X-Hub-Reason"]
            isa13 = r.content.split(b"*")[13]
            assert isa13 != b"000000001"  # numbered from the store's sequence, after the accepted one's 999
    finally:
        await hub.engine.stop()


async def test_after_delivery_returns_the_clearinghouse_answer_and_feeds_it_back(tmp_path):
    peer = HttpPeer()
    x270 = (SAMPLES / "x12" / "claims_837p.837").read_bytes()  # any X12 will do: validate: none
    x271 = (
        b"ISA*00*          *00*          *ZZ*PAYER          *ZZ*CLINIC         *260310*0900*^*00501*000000101*0*P*:~"
        b"GS*HB*PAYER*CLINIC*20260310*0900*101*X*005010X279A1~ST*271*0001*005010X279A1~SE*2*0001~GE*1*101~"
        b"IEA*1*000000101~"
    )

    def answer(seen):
        assert seen.body == x270
        return Answer(200, x271, {"Content-Type": "application/edi-x12"})

    peer.responder = answer
    hub = await start(tmp_path, {"elig": ELIG.format(url=peer.url, timeout="5s"), "replies": REPLIES})
    try:
        async with hub.client("lab") as c:
            r = await c.post("/eligibility", content=x270)
            assert r.status_code == 200 and r.content == x271
            assert r.headers["content-type"] == "application/edi-x12"
            mid = int(r.headers["X-Hub-Message-Id"])
        kept = hub.engine.destinations[("replies", "kept")]
        await until(lambda: len(kept.sent) == 1, what="the answer fed to the replies channel")
        assert kept.sent[0].raw == x271 and kept.sent[0].meta["in_reply_to"] == mid

        # the clearinghouse is slow: 202 after response_timeout, the message is stored and still delivered
        peer.responder = None
        peer.script = [Answer(200, x271, {"Content-Type": "application/edi-x12"}, delay=2.5)]
        hub.engine.sources["elig"].timeout = 0.5
        async with hub.client("lab") as c:
            r = await c.post("/eligibility", content=x270)
            assert r.status_code == 202 and "no answer from clearinghouse within 0.5s" in r.json()["detail"]
        await until(lambda: len(kept.sent) == 2, timeout=10, what="the late answer still arrives")

        # the clearinghouse refuses it: 502 with its answer
        peer.script = [Answer(400, b'{"error":"bad member id"}', {"Content-Type": "application/json"})]
        hub.engine.sources["elig"].timeout = 5
        async with hub.client("lab") as c:
            r = await c.post("/eligibility", content=x270)
            assert r.status_code == 502 and r.json() == {"error": "bad member id"}
    finally:
        await hub.engine.stop()
        peer.close()


async def test_a_get_becomes_a_json_message(tmp_path):
    chan = LAB.replace("max_bytes: 4000", "methods: [GET, POST]")
    hub = await start(tmp_path, {"lab_in": chan})
    try:
        async with hub.client("lab") as c:
            r = await c.get("/in/lab", params={"mrn": "SYN-9", "x": ["1", "2"]})
            assert r.status_code == 200
            (mid,) = r.json()["message_ids"]
        stored = await asyncio.to_thread(hub.engine.store.get_message, mid)
        assert stored["content_type"] == "json"
        assert json.loads(stored["raw"]) == {
            "method": "GET",
            "path": "/in/lab",
            "query": {"mrn": "SYN-9", "x": ["1", "2"]},
        }
    finally:
        await hub.engine.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_mutual_tls_through_the_web_apps_tls(tmp_path, pki):
    tls = f"  tls: {{cert: '{pki.server_cert}', key: '{pki.server_key}', ca: '{pki.ca}', client_cert: required}}\n"
    chan = LAB.replace("basic: true,", "basic: true, client_cert: true,")
    hub_extra = ""
    hub_yaml_tls = HUB.replace(
        "web: {{listen: '127.0.0.1:0'}}", "web:\n  listen: '127.0.0.1:0'\n" + tls.replace("{", "{{").replace("}", "}}")
    )
    cfg = load_config(
        write_config(
            tmp_path / "cfg",
            hub_yaml_tls.format(db=tmp_path / "hub.db", mappings=ROOT / "mappings") + hub_extra,
            {"lab_in": chan},
        )
    )
    assert not check(cfg)
    eng = Engine(cfg, services=_services(cfg), idle_poll=0.05)
    await eng.start()
    try:
        auth = AuthStore(eng.store)
        await asyncio.to_thread(auth.add_user, "lab", "sender", PASSWORD)
        url = eng.services[0].url
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        async with httpx.AsyncClient(base_url=url, verify=ctx) as c:
            r = await c.post("/in/lab", content=adt(), headers=basic("lab", PASSWORD))
            assert r.status_code == 200 and b"MSA|AA" in r.content
        bare = ssl.create_default_context(cafile=str(pki.ca))
        async with httpx.AsyncClient(base_url=url, verify=bare) as c:
            with pytest.raises((httpx.HTTPError, ssl.SSLError)):
                await c.post("/in/lab", content=adt(), headers=basic("lab", PASSWORD))
    finally:
        await eng.stop()
    # client_cert: true without the web app asking for certificates is a `hub check` problem
    plain = load_config(
        write_config(tmp_path / "cfg2", HUB.format(db=tmp_path / "h2.db", mappings=ROOT / "mappings"), {"lab_in": chan})
    )
    assert any("client_cert: required" in str(p) for p in check(plain))


def test_config_is_checked_like_every_component(tmp_path):
    with pytest.raises(ValueError, match="Extra inputs"):
        HttpSource.Config.model_validate({"type": "http", "port": 80})
    with pytest.raises(ValueError, match="web app's own"):
        HttpSource.Config.model_validate({"type": "http", "path": "/api/x"})
    with pytest.raises(ValueError):
        HttpSource.Config.model_validate({"type": "http", "methods": ["TRACE"]})
    cfg = load_config(
        write_config(
            tmp_path / "cfg",
            HUB.format(db=tmp_path / "hub.db", mappings=ROOT / "mappings"),
            {
                "elig": ELIG.format(url="http://127.0.0.1:1", timeout="5s").replace(
                    "response_from: clearinghouse", "response_from: nowhere"
                ),
                "replies": REPLIES,
            },
        )
    )
    assert any("response_from: no destination named 'nowhere'" in str(p) for p in check(cfg))


def test_content_types_map_to_formats():
    assert format_of("application/json; charset=utf-8") == "json"
    assert format_of("application/json", b'{"resourceType": "Patient", "id": "p1"}') == "fhir"  # FHIR as plain JSON
    assert format_of("application/json", b'{"patient": {"mrn": "1"}}') == "json"
    assert format_of("application/fhir+json") == "fhir"
    assert format_of("application/vnd.api+json") == "json"
    assert format_of("text/xml") == "xml" and format_of("application/xml") == "xml"
    assert format_of("x-application/hl7-v2+er7") == "hl7v2"
    assert format_of("text/plain", b"MSH|^~\\&|") == "hl7v2" and format_of("text/plain", b"ISA*00") == "x12"
    assert format_of("text/plain", b"hello") == "raw"
    assert format_of("application/edi-x12") == "x12" and format_of("text/csv") == "csv"
    assert format_of(None) is None and format_of("application/octet-stream") is None
    assert format_of("image/png") == "raw"

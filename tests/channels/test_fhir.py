"""fhir_rest destination (with httpx's MockTransport: status handling, Retry-After, SMART auth) and the FHIR HTTP
and polling sources through a running Engine. The same Bundles against a real FHIR server: test_fhir_server.py."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import SAMPLES, write_config
from hub.channels.base import Context
from hub.channels.fhir import FhirPollSource, FhirRestDestination, FhirSource
from hub.engine import Engine
from hub.errors import PermanentDelivery, RetryableDelivery, StoreError
from hub.message import Message
from hub.spec import load_config
from hub.transforms.fhir.v2_to_fhir import convert, dumps

BUNDLE = dumps(convert((SAMPLES / "hl7v2" / "adt_a04.hl7").read_bytes()))
BASE = "http://ehr.test/fhir"


def dest(handler, **cfg) -> FhirRestDestination:
    d = FhirRestDestination(FhirRestDestination.Config.model_validate({"type": "fhir_rest", "base_url": BASE, **cfg}), Context())
    d.transport = httpx.MockTransport(handler)
    return d


def fhir(status: int, body: dict, **headers) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json", **headers})


OO = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Patient.gender: bad code"}]}


async def test_a_transaction_is_posted_to_base_and_the_entry_locations_are_the_answer():
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        n = len(json.loads(req.content)["entry"])
        return fhir(200, {"resourceType": "Bundle", "type": "transaction-response",
                          "entry": [{"response": {"status": "201 Created", "location": f"Thing/{i}/_history/1"}} for i in range(n)]})

    d = dest(handler, auth={"type": "bearer", "token": "s3cret"}, headers={"X-Tenant": "clinic"})
    answer = await d.send(Message(raw=BUNDLE, content_type="fhir"))
    req = seen[0]
    assert req.method == "POST" and str(req.url) == BASE
    assert req.headers["Authorization"] == "Bearer s3cret" and req.headers["Content-Type"] == "application/fhir+json"
    assert req.headers["X-Tenant"] == "clinic" and req.content == BUNDLE
    assert answer.splitlines()[0] == "HTTP 200 OK" and "entry 0: 201 Created Thing/0/_history/1" in answer
    await d.close()
    await d.close()  # idempotent


@pytest.mark.parametrize("status,retry", [(429, True), (503, True), (500, True), (408, True), (400, False), (404, False), (422, False), (412, False)])
async def test_status_codes_decide_retry_or_dead(status, retry):
    d = dest(lambda req: fhir(status, OO, **({"Retry-After": "7"} if status in (429, 503) else {})))
    with pytest.raises(RetryableDelivery if retry else PermanentDelivery) as err:
        await d.send(Message(raw=BUNDLE, content_type="fhir"))
    assert json.loads(err.value.response)["resourceType"] == "OperationOutcome"  # stored and shown on the delivery
    assert "Patient.gender: bad code" in str(err.value)
    if status in (429, 503):
        assert err.value.retry_after == 7
    await d.close()


async def test_retry_after_as_an_http_date_and_connection_errors():
    from email.utils import formatdate

    d = dest(lambda req: fhir(503, OO, **{"Retry-After": formatdate(time.time() + 60, usegmt=True)}))
    with pytest.raises(RetryableDelivery) as err:
        await d.send(Message(raw=BUNDLE, content_type="fhir"))
    assert 50 < err.value.retry_after <= 61

    def refuse(req):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(RetryableDelivery, match="ConnectError"):
        await dest(refuse).send(Message(raw=BUNDLE, content_type="fhir"))

    def slow(req):
        raise httpx.ReadTimeout("too slow")

    with pytest.raises(RetryableDelivery, match="timed out"):
        await dest(slow).send(Message(raw=BUNDLE, content_type="fhir"))


async def test_a_batch_response_is_judged_by_its_worst_entry():
    batch = dumps(convert((SAMPLES / "hl7v2" / "adt_a04.hl7").read_bytes(), config=None) | {"type": "batch"})

    def answer(codes):
        return lambda req: fhir(200, {"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": {"status": c}} for c in codes]})

    with pytest.raises(PermanentDelivery, match="worst HTTP 400"):
        await dest(answer(["201 Created", "400 Bad Request"])).send(Message(raw=batch, content_type="fhir"))
    with pytest.raises(RetryableDelivery, match="worst HTTP 503"):
        await dest(answer(["400", "503"])).send(Message(raw=batch, content_type="fhir"))
    ok = await dest(answer(["201", "200"])).send(Message(raw=batch, content_type="fhir"))
    assert "entry 1: 200" in ok


async def test_single_resources_and_collections_are_written_one_by_one():
    seen = []

    def handler(req):
        seen.append((req.method, str(req.url), req.headers.get("If-None-Exist")))
        return fhir(201, {"resourceType": "Patient", "id": "p1"}, Location=f"{BASE}/Patient/p1/_history/1")

    d = dest(handler)
    out = await d.send(Message(raw=b'{"resourceType": "Patient", "id": "abc", "gender": "female"}', content_type="fhir"))
    assert seen[-1] == ("PUT", f"{BASE}/Patient/abc", None) and "location: " in out
    await d.send(Message(raw=b'{"resourceType": "Patient", "gender": "female"}', content_type="fhir"))
    assert seen[-1] == ("POST", f"{BASE}/Patient", None)
    coll = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=s|1"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?identifier=s|2"}},
    ]}
    await d.send(Message(raw=json.dumps(coll).encode(), content_type="fhir"))
    assert seen[-2] == ("POST", f"{BASE}/Patient", "identifier=s|1")
    assert seen[-1] == ("PUT", f"{BASE}/Patient?identifier=s%7C2", None) or seen[-1][0:2] == ("PUT", f"{BASE}/Patient?identifier=s|2")
    with pytest.raises(PermanentDelivery, match="not FHIR JSON"):
        await d.send(Message(raw=b"MSH|^~\\&|", content_type="hl7v2"))


async def test_smart_backend_services_gets_caches_and_renews_the_token(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "client.pem").write_bytes(pem)
    public = key.public_key()
    token_url = "http://auth.test/token"
    tokens, calls = [], []

    def handler(req: httpx.Request) -> httpx.Response:
        if str(req.url) == token_url:
            form = dict(x.split("=", 1) for x in req.content.decode().split("&"))
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
            claims = jwt.decode(form["client_assertion"], public, algorithms=["RS384"], audience=token_url)
            assert claims["iss"] == claims["sub"] == "hub-client" and claims["exp"] - claims["iat"] <= 300
            assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"
            tokens.append(f"tok{len(tokens) + 1}")
            return httpx.Response(200, json={"access_token": tokens[-1], "token_type": "bearer", "expires_in": 300})
        calls.append(req.headers["Authorization"])
        if len(calls) == 2:
            return fhir(401, OO)  # revoked: the destination fetches a new token once and tries again
        return fhir(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": []})

    d = FhirRestDestination(
        FhirRestDestination.Config.model_validate(
            {"type": "fhir_rest", "base_url": BASE,
             "auth": {"type": "smart", "token_url": token_url, "client_id": "hub-client", "private_key_file": "client.pem", "key_id": "k1", "scope": "system/*.write"}}
        ),
        Context(home=tmp_path),
    )
    d.transport = httpx.MockTransport(handler)
    await d.send(Message(raw=BUNDLE, content_type="fhir"))
    await d.send(Message(raw=BUNDLE, content_type="fhir"))
    assert calls == ["Bearer tok1", "Bearer tok1", "Bearer tok2"] and tokens == ["tok1", "tok2"]
    await d.close()


# ---------------------------------------------------------------------------------------------- sources
HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\n"
CHANNEL = """
name: ehr_in
source: {type: fhir, resource_types: [Patient, Bundle]}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""


async def _engine(tmp_path, channel: str = CHANNEL) -> Engine:
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {"ehr_in": channel}))
    eng = Engine(cfg, idle_poll=0.05, start_web=False)
    await eng.start()
    return eng


async def test_the_http_source_validates_stores_then_answers(tmp_path):
    from fastapi import FastAPI

    eng = await _engine(tmp_path)
    try:
        src = eng.sources["ehr_in"]
        app = FastAPI()
        app.include_router(src.router())  # what the web app does with every source that has router()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            patient = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}], "gender": "female"}
            r = await client.post("/fhir/ehr_in/Patient", json=patient)
            assert r.status_code == 201 and r.headers["content-type"].startswith("application/fhir+json")
            oo = r.json()
            assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["severity"] == "information"
            mid = int(oo["issue"][0]["diagnostics"].rsplit(" ", 1)[1])
            stored = eng.store.get_message(mid)  # accepted only after the commit: it is there
            assert stored["status"] == "accepted" and stored["content_type"] == "fhir"
            r = await client.post("/fhir/ehr_in", content=BUNDLE)
            assert r.status_code == 200
            bad = {"resourceType": "Patient", "gender": "femalex", "birthDate": "1980-13-01"}
            r = await client.post("/fhir/ehr_in/Patient", json=bad)
            assert r.status_code == 422
            where = {x["expression"][0] for x in r.json()["issue"]}
            assert {"Patient.gender", "Patient.birthDate"} <= where
            r = await client.post("/fhir/ehr_in/Observation", json=patient)
            assert r.status_code == 422 and "URL names Observation" in r.text
            r = await client.post("/fhir/ehr_in/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
            assert r.status_code == 422 and "not accepted here" in r.text
            r = await client.post("/fhir/ehr_in", content=b"{nope")
            assert r.status_code == 422 and r.json()["issue"][0]["code"] == "structure"

            async def down(items):
                raise StoreError("database is locked")

            eng.store.accept_async = down  # the store fails: nothing acknowledged, the peer must resend
            r = await client.post("/fhir/ehr_in/Patient", json=patient)
            assert r.status_code == 503 and r.headers["Retry-After"] == "10"
        dest = eng.destinations[("ehr_in", "out")]
        for _ in range(100):
            if len(dest.sent) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(dest.sent) == 2
    finally:
        await eng.stop()


async def test_the_polling_source_keeps_a_lastupdated_cursor(tmp_path):
    channel = """
name: ehr_in
source: {type: fhir_poll, base_url: "http://ehr.test/fhir", search: "Patient?active=true", schedule: 1h}
routes:
  - {name: all, to: [out]}
destinations:
  out: {type: memory}
"""
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {"ehr_in": channel}))
    eng = Engine(cfg, idle_poll=0.05, start_web=False)
    seen = []
    pages = {
        None: {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": "http://ehr.test/fhir/Patient?page=2"}],
               "entry": [{"resource": {"resourceType": "Patient", "id": "a", "meta": {"versionId": "1", "lastUpdated": "2026-03-01T10:00:00Z"}}}]},
        "2": {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": {"resourceType": "Patient", "id": "b", "meta": {"versionId": "1", "lastUpdated": "2026-03-02T10:00:00Z"}}}]},
    }

    def handler(req):
        seen.append(str(req.url))
        if "_lastUpdated=gt" in str(req.url):
            return fhir(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
        return fhir(200, pages[req.url.params.get("page")])

    original = FhirPollSource.start

    async def start(self, receive):  # inject the mock transport, then start as usual (one poll at once)
        self.transport = httpx.MockTransport(handler)
        await original(self, receive)

    FhirPollSource.start = start
    try:
        await eng.start()
        src = eng.sources["ehr_in"]
        for _ in range(100):
            if eng.store.get_cursor("fhir_poll:ehr_in"):
                break
            await asyncio.sleep(0.05)
        assert eng.store.get_cursor("fhir_poll:ehr_in") == "2026-03-02T10:00:00Z"
        assert seen[0].startswith("http://ehr.test/fhir/Patient?active=true&_sort=_lastUpdated&_count=100")
        assert await src.poll() == 0
        assert "_lastUpdated=gt2026-03-02T10%3A00%3A00Z" in seen[-1]
        dest = eng.destinations[("ehr_in", "out")]
        for _ in range(100):
            if len(dest.sent) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(json.loads(m.raw)["id"] for m in dest.sent) == ["a", "b"]
    finally:
        FhirPollSource.start = original
        await eng.stop()


def test_configs_are_checked_without_io():
    with pytest.raises(Exception, match="http"):
        FhirRestDestination.Config.model_validate({"type": "fhir_rest", "base_url": "ftp://x"})
    with pytest.raises(Exception):
        FhirRestDestination.Config.model_validate({"type": "fhir_rest", "base_url": BASE, "auth": {"type": "smart", "client_id": "x"}})
    s = FhirSource(FhirSource.Config.model_validate({"type": "fhir"}), Context(channel="ehr_orders"))
    assert s.path == "/fhir/ehr_orders"

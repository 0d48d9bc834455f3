"""fhir_rest destination (with httpx's MockTransport: status handling, Retry-After, SMART auth; chunks, merging and
version conflicts against a small fake server) and the FHIR HTTP and polling sources through a running Engine. The
same Bundles against a real FHIR server: test_fhir_server.py."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from hub.channels.base import Context
from hub.channels.fhir import FhirPollSource, FhirRestDestination, FhirSource
from hub.engine import Engine
from hub.errors import PermanentDelivery, RetryableDelivery, StoreError
from hub.message import Message
from hub.spec import load_config
from hub.store import SearchQuery
from hub.transforms.fhir.v2_to_fhir import convert, dumps
from support import SAMPLES, write_config

BUNDLE = dumps(convert((SAMPLES / "hl7v2" / "adt_a04.hl7").read_bytes()))
BASE = "http://ehr.test/fhir"


def dest(handler, **cfg) -> FhirRestDestination:
    d = FhirRestDestination(
        FhirRestDestination.Config.model_validate({"type": "fhir_rest", "base_url": BASE, **cfg}), Context()
    )
    d.transport = httpx.MockTransport(handler)
    return d


def fhir(status: int, body: dict, **headers) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json", **headers})


OO = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Patient.gender: bad code"}],
}


async def test_a_transaction_is_posted_to_base_and_the_entry_locations_are_the_answer():
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        n = len(json.loads(req.content)["entry"])
        return fhir(
            200,
            {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [
                    {"response": {"status": "201 Created", "location": f"Thing/{i}/_history/1"}} for i in range(n)
                ],
            },
        )

    d = dest(
        handler,
        auth={"type": "bearer", "token": "s3cret"},
        headers={"X-Tenant": "clinic"},
        update="replace",
        max_entries=1000,
    )
    answer = await d.send(Message(raw=BUNDLE, content_type="fhir"))
    req = seen[0]
    assert req.method == "POST" and str(req.url) == BASE and len(seen) == 1  # no read, no split: one transaction
    assert req.headers["Authorization"] == "Bearer s3cret" and req.headers["Content-Type"] == "application/fhir+json"
    assert req.headers["X-Tenant"] == "clinic" and json.loads(req.content)["entry"] == json.loads(BUNDLE)["entry"]
    assert answer.splitlines()[0].startswith("HTTP 200 OK") and "entry 0: 201 Created Thing/0/_history/1" in answer
    await d.close()
    await d.close()  # idempotent


@pytest.mark.parametrize(
    "status,retry",
    [(429, True), (503, True), (500, True), (408, True), (400, False), (404, False), (422, False), (412, False)],
)
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
    batch = tx(obs(1, "Patient/x"), obs(2, "Patient/x"), kind="batch")

    def answer(codes):
        return lambda req: fhir(
            200,
            {"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": {"status": c}} for c in codes]},
        )

    with pytest.raises(PermanentDelivery, match=r"1 of 2 entries failed: Observation identifier=urn:obs\|2 → HTTP 400"):
        await dest(answer(["201 Created", "400 Bad Request"]), update="replace").send(batch)
    with pytest.raises(RetryableDelivery, match="HTTP 503"):
        await dest(answer(["400", "503"]), update="replace").send(batch)
    ok = await dest(answer(["201", "200"]), update="replace").send(batch)
    assert "entry 1: 200" in ok


async def test_single_resources_and_collections_are_written_one_by_one():
    seen = []

    def handler(req):
        seen.append((req.method, str(req.url), req.headers.get("If-None-Exist")))
        return fhir(201, {"resourceType": "Patient", "id": "p1"}, Location=f"{BASE}/Patient/p1/_history/1")

    d = dest(handler)
    out = await d.send(
        Message(raw=b'{"resourceType": "Patient", "id": "abc", "gender": "female"}', content_type="fhir")
    )
    assert seen[-1] == ("PUT", f"{BASE}/Patient/abc", None) and "location: " in out
    await d.send(Message(raw=b'{"resourceType": "Patient", "gender": "female"}', content_type="fhir"))
    assert seen[-1] == ("POST", f"{BASE}/Patient", None)
    coll = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=s|1"},
            },
            {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient?identifier=s|2"}},
        ],
    }
    await d.send(Message(raw=json.dumps(coll).encode(), content_type="fhir"))
    assert seen[-2] == ("POST", f"{BASE}/Patient", "identifier=s|1")
    assert seen[-1] == ("PUT", f"{BASE}/Patient?identifier=s%7C2", None) or seen[-1][0:2] == (
        "PUT",
        f"{BASE}/Patient?identifier=s|2",
    )
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
            {
                "type": "fhir_rest",
                "base_url": BASE,
                "update": "replace",
                "max_entries": 1000,
                "auth": {
                    "type": "smart",
                    "token_url": token_url,
                    "client_id": "hub-client",
                    "private_key_file": "client.pem",
                    "key_id": "k1",
                    "scope": "system/*.write",
                },
            }
        ),
        Context(home=tmp_path),
    )
    d.transport = httpx.MockTransport(handler)
    await d.send(Message(raw=BUNDLE, content_type="fhir"))
    await d.send(Message(raw=BUNDLE, content_type="fhir"))
    assert calls == ["Bearer tok1", "Bearer tok1", "Bearer tok2"] and tokens == ["tok1", "tok2"]
    await d.close()


# ------------------------------------------------------------------------------------- chunks, merge, conflicts
class FakeFhir:
    """Just enough of a FHIR server to unit-test delivery: identifier search, conditional create and update, versions
    and If-Match, transactions (urn:uuid resolved within the request, all-or-nothing, Medplum's cap of 8 entries when
    any is conditional) and batches (entries independent: an urn:uuid reference is an error). The real server's
    behaviour is tested in test_fhir_server.py."""

    def __init__(self, cap: int = 8) -> None:
        self.db: dict[str, dict] = {}
        self.cap = cap
        self.log: list[tuple[str, str, dict | None, httpx.Headers]] = []
        self.before_write = None  # called before a write request is handled (another writer)
        self.ids = 0

    def put(self, resource: dict) -> dict:
        """Store a resource directly (what was on the server before the test)."""
        self.ids += 1
        r = {**resource, "id": resource.get("id") or f"s{self.ids}", "meta": {"versionId": "1"}}
        self.db[f"{r['resourceType']}/{r['id']}"] = r
        return r

    def find(self, rtype: str, query: str) -> list[dict]:
        want = dict(p.split("=", 1) for p in query.split("&"))["identifier"]
        return [
            r
            for k, r in self.db.items()
            if k.startswith(rtype + "/")
            and any(f"{i.get('system')}|{i.get('value')}" == want for i in r.get("identifier") or [])
        ]

    def __call__(self, req: httpx.Request) -> httpx.Response:
        from urllib.parse import unquote

        body = json.loads(req.content) if req.content else None
        url = req.url.path.removeprefix("/fhir").strip("/") + (
            "?" + unquote(req.url.query.decode()) if req.url.query else ""
        )
        self.log.append((req.method, url, body, req.headers))
        writes = req.method != "GET" and (url or any(e["request"]["method"] != "GET" for e in body["entry"]))
        if writes and self.before_write is not None:
            self.before_write()  # another writer, between our read and this write
        if req.method == "POST" and not url:
            return fhir(*self.bundle(body))
        status, res = self.op(req.method, url, body, req.headers.get("If-Match"), req.headers.get("If-None-Exist"))
        extra = (
            {"Location": f"{BASE}/{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}"}
            if status < 300 and req.method != "GET"
            else {}
        )
        return fhir(status, res, **extra)

    def op(self, method, url, body, if_match=None, if_none_exist=None, assigned=None):
        path, _, query = url.partition("?")
        rtype = path.split("/")[0]
        if method == "GET":
            if query:
                return 200, {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": r, "search": {"mode": "match"}} for r in self.find(rtype, query)],
                }
            return (200, self.db[path]) if path in self.db else (404, OO)
        if "urn:uuid:" in json.dumps(body):
            return 400, {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": "unresolved urn:uuid reference"}],
            }
        if body.get("status") == "bad":
            return 400, OO
        if method == "POST" and if_none_exist:
            found = self.find(rtype, if_none_exist)
            if len(found) == 1:
                return 200, found[0]
        if method == "PUT" and query:
            found = self.find(rtype, query)
            if len(found) > 1:
                return 412, OO
            path = f"{rtype}/{found[0]['id'] if found else assigned or self._id()}"
        elif method == "POST":
            path = f"{rtype}/{assigned or self._id()}"
        old = self.db.get(path)
        if if_match and (old is None or f'W/"{old["meta"]["versionId"]}"' != if_match):
            return 412, {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "conflict", "diagnostics": "version"}],
            }
        new = {
            **body,
            "id": path.split("/")[1],
            "meta": {"versionId": str(int(old["meta"]["versionId"]) + 1 if old else 1)},
        }
        self.db[path] = new
        return (200 if old else 201), new

    def _id(self) -> str:
        self.ids += 1
        return f"n{self.ids}"

    def bundle(self, b: dict) -> tuple[int, dict]:
        entries = b["entry"]
        kind = b["type"]
        if kind == "transaction":
            conditional = any("?" in e["request"]["url"] or e["request"].get("ifNoneExist") for e in entries)
            if conditional and len(entries) > self.cap:
                return 400, {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "too many entries"}],
                }
            ids = {}
            for e in entries:  # where each entry will be: its fullUrl becomes that reference
                rtype, _, q = e["request"]["url"].partition("?")
                found = (
                    self.find(rtype, q or e["request"].get("ifNoneExist") or "")
                    if (q or e["request"].get("ifNoneExist"))
                    else []
                )
                if len(found) == 1:
                    rid = found[0]["id"]
                else:
                    rid = rtype.split("/")[1] if "/" in rtype else self._id()
                ids[e.get("fullUrl")] = f"{rtype.split('/')[0]}/{rid}"
            assigned = [ids[e.get("fullUrl")].split("/")[1] for e in entries]
            text = json.dumps([e.get("resource") for e in entries])
            for u, ref in ids.items():
                if u:
                    text = text.replace(f'"{u}"', f'"{ref}"')
            resources = json.loads(text)
            saved = dict(self.db)
            out = []
            for e, res, new_id in zip(entries, resources, assigned, strict=False):
                r = e["request"]
                status, res = self.op(
                    r["method"], r["url"], res, r.get("ifMatch"), r.get("ifNoneExist"), assigned=new_id
                )
                if status >= 300:
                    self.db = saved  # all or nothing
                    return status, res
                out.append(
                    {
                        "response": {
                            "status": str(status),
                            "location": f"{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}",
                        },
                        "resource": res,
                    }
                )
            return 200, {"resourceType": "Bundle", "type": "transaction-response", "entry": out}
        out = []
        for e in entries:
            r = e["request"]
            status, res = self.op(r["method"], r["url"], e.get("resource"), r.get("ifMatch"), r.get("ifNoneExist"))
            resp = {"status": str(status)}
            if status < 300 and r["method"] != "GET":
                resp["location"] = f"{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}"
            out.append({"response": resp, "resource": res} if status < 300 else {"response": {**resp, "outcome": res}})
        return 200, {"resourceType": "Bundle", "type": "batch-response", "entry": out}

    def writes(self, kind: str) -> list[dict]:
        return [
            b
            for m, u, b, h in self.log
            if m == "POST" and not u and b["type"] == kind and any(e["request"]["method"] != "GET" for e in b["entry"])
        ]

    def reads(self) -> list[dict]:
        return [
            b
            for m, u, b, h in self.log
            if m == "POST" and not u and all(e["request"]["method"] == "GET" for e in b["entry"])
        ]


def fake_dest(server: FakeFhir, **cfg) -> FhirRestDestination:
    return dest(server, **cfg)


MRN = "urn:mrn"


def pat(mrn: str, **fields) -> dict:
    """A conditional-update Patient entry (what the converter writes for a PID)."""
    return {
        "fullUrl": f"urn:uuid:p-{mrn}",
        "resource": {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], **fields},
        "request": {"method": "PUT", "url": f"Patient?identifier={MRN}|{mrn}"},
    }


def obs(n: int, subject: str, **fields) -> dict:
    return {
        "fullUrl": f"urn:uuid:o-{n}",
        "resource": {
            "resourceType": "Observation",
            "identifier": [{"system": "urn:obs", "value": str(n)}],
            "status": "final",
            "code": {"text": f"test {n}"},
            "subject": {"reference": subject},
            **fields,
        },
        "request": {"method": "PUT", "url": f"Observation?identifier=urn:obs|{n}"},
    }


def report(n_obs: int, subject: str) -> dict:
    return {
        "fullUrl": "urn:uuid:dr",
        "resource": {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": "urn:dr", "value": "1"}],
            "status": "final",
            "code": {"text": "panel"},
            "subject": {"reference": subject},
            "result": [{"reference": f"urn:uuid:o-{i}"} for i in range(n_obs)],
        },
        "request": {"method": "PUT", "url": "DiagnosticReport?identifier=urn:dr|1"},
    }


def practitioner(npi: str) -> dict:
    return {
        "fullUrl": f"urn:uuid:pr-{npi}",
        "resource": {"resourceType": "Practitioner", "identifier": [{"system": "urn:npi", "value": npi}]},
        "request": {"method": "POST", "url": "Practitioner", "ifNoneExist": f"identifier=urn:npi|{npi}"},
    }


def tx(*entries, kind: str = "transaction") -> Message:
    return Message(
        raw=json.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)}).encode(), content_type="fhir"
    )


def merge_pair(a: str, b: str) -> list[dict]:
    """An ADT^A40's two patients: the survivor links the merged one and back (a reference cycle)."""
    survivor = pat(a, link=[{"other": {"reference": f"urn:uuid:p-{b}"}, "type": "replaces"}])
    merged = pat(b, active=False, link=[{"other": {"reference": f"urn:uuid:p-{a}"}, "type": "replaced-by"}])
    return [survivor, merged]


def test_the_plan_puts_each_entry_after_what_it_references_and_keeps_cycles_together():
    from hub.channels.fhir_delivery import _entries, load_merge_rules, plan

    bundle = {
        "entry": [
            report(5, "urn:uuid:p-1"),
            *[obs(i, "urn:uuid:p-1") for i in range(5)],
            *merge_pair("1", "2"),
            practitioner("9"),
        ]
    }
    entries = _entries(bundle, "merge", load_merge_rules(None))
    for mode, size in (("transaction", 3), ("transaction", 8), ("batch", 3), ("resources", 8)):
        steps = plan(entries, mode, size)
        assert all(len(s) <= (1 if mode == "resources" else size) for s in steps)
        at: dict[tuple[int, bool], int] = {(e.index, stub): k for k, s in enumerate(steps) for e, stub in s}
        assert sorted(i for i, stub in at if not stub) == list(range(len(entries)))  # every entry written whole once
        for (i, stub), k in at.items():
            for d in entries[i].deps:
                first = min(v for (j, _), v in at.items() if j == d)  # where d gets its id
                if mode == "transaction":
                    assert first <= k  # before it, or in the same transaction
                elif not stub and d != i:
                    assert first < k  # batch/resources: in an earlier request
    steps = plan(entries, "transaction", 3)
    assert any({e.index for e, _ in s} >= {6, 7} for s in steps)  # the two merged patients in one transaction
    batch = plan(entries, "batch", 8)
    assert [(e.index, stub) for s in batch for e, stub in s if e.index in (6, 7)] == [
        (6, True),
        (7, True),
        (6, False),
        (7, False),
    ]
    big = plan(entries, "transaction", 1)  # a cycle larger than a transaction: stubs, then whole
    assert [(e.index, stub) for s in big for e, stub in s if e.index in (6, 7)] == [
        (6, True),
        (7, True),
        (6, False),
        (7, False),
    ]


async def test_a_bundle_over_the_cap_is_split_and_later_chunks_refer_by_server_ids():
    server = FakeFhir(cap=8)
    d = fake_dest(server)
    msg = tx(
        pat("1", name=[{"family": "ROE"}]),
        practitioner("9"),
        *[obs(i, "urn:uuid:p-1", performer=[{"reference": "urn:uuid:pr-9"}]) for i in range(20)],
        report(20, "urn:uuid:p-1"),
    )
    answer = await d.send(msg)
    writes = server.writes("transaction")
    assert len(writes) == 3 and [len(w["entry"]) for w in writes] == [8, 8, 7]
    assert "urn:uuid:p-1" not in json.dumps(writes[1:]) and "urn:uuid:pr-9" not in json.dumps(
        writes[1:]
    )  # Type/id by then
    patient = server.find("Patient", f"identifier={MRN}|1")[0]
    dr = server.find("DiagnosticReport", "identifier=urn:dr|1")[0]
    assert dr["subject"]["reference"] == f"Patient/{patient['id']}" and len(dr["result"]) == 20
    assert all(server.db[r["reference"]]["resourceType"] == "Observation" for r in dr["result"])
    lines = answer.splitlines()
    assert lines[0].startswith("HTTP 200 OK (23 entries in 3 transactions") and len(lines) == 24
    assert lines[1] == f"entry 0: 201 Patient/{patient['id']}/_history/1" and lines[-1].startswith(
        "entry 22: 201 DiagnosticReport/"
    )
    await d.send(msg)  # again: updates, no second copy of anything
    assert len(server.db) == 23
    assert len(server.writes("transaction")) == 6


async def test_a_conditional_update_is_merged_into_what_the_server_holds():
    server = FakeFhir()
    held = server.put(
        {
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": "1"}, {"system": "urn:ssn", "value": "999-00-0001"}],
            "name": [{"use": "official", "family": "DOE-SMITH"}, {"use": "maiden", "family": "DOE"}],
            "telecom": [
                {"system": "phone", "use": "home", "value": "555-0001"},
                {"system": "phone", "use": "work", "value": "555-0002"},
            ],
            "address": [{"use": "home", "line": ["77 ELM AVE"]}],
            "maritalStatus": {"text": "married"},
            "deceasedBoolean": False,
        }
    )
    d = fake_dest(server)
    sparse = pat(
        "1",
        name=[{"use": "official", "family": "DOE"}],
        telecom=[{"system": "phone", "use": "home", "value": "555-0009"}],
        deceasedDateTime="2026-01-01",
    )
    await d.send(tx(sparse))
    write = server.writes("transaction")[-1]["entry"][0]
    assert write["request"] == {"method": "PUT", "url": f"Patient/{held['id']}", "ifMatch": 'W/"1"'}
    p = server.db[f"Patient/{held['id']}"]
    assert [i["value"] for i in p["identifier"]] == ["1", "999-00-0001"]  # kept
    assert p["name"] == [
        {"use": "official", "family": "DOE"},
        {"use": "maiden", "family": "DOE"},
    ]  # same key replaced, other kept
    assert [t["value"] for t in p["telecom"]] == ["555-0009", "555-0002"]
    assert p["address"] == held["address"] and p["maritalStatus"] == {"text": "married"}  # not carried: kept
    assert p["deceasedDateTime"] == "2026-01-01" and "deceasedBoolean" not in p  # one deceased[x]
    assert p["meta"]["versionId"] == "2"

    await dest(server, update="replace").send(
        tx(pat("1", name=[{"family": "X"}]))
    )  # replace: today's conditional update
    assert server.writes("transaction")[-1]["entry"][0]["request"] == {
        "method": "PUT",
        "url": f"Patient?identifier={MRN}|1",
    }
    assert "address" not in server.db[f"Patient/{held['id']}"]


def test_the_merge_rules():
    from hub.channels.fhir_delivery import load_merge_rules, merge_resource

    rules = load_merge_rules(None)
    held = {
        "resourceType": "Patient",
        "id": "p",
        "meta": {"versionId": "3"},
        "gender": "female",
        "birthDate": "1980-02-14",
        "_birthDate": {"extension": []},
        "link": [{"other": {"reference": "Patient/x"}, "type": "seealso"}],
        "extension": [{"url": "race", "valueString": "a"}, {"url": "ethnicity", "valueString": "b"}],
    }
    msg = {
        "resourceType": "Patient",
        "id": "ignored",
        "birthDate": "1980-02-15",
        "gender": "male",
        "link": [{"other": {"reference": "Patient/y"}, "type": "replaces"}],
        "extension": [{"url": "race", "valueString": "c"}],
    }
    merged = merge_resource(held, msg, "merge", rules)
    assert merged["id"] == "p" and merged["meta"] == {"versionId": "3"} and merged["gender"] == "male"
    assert merged["birthDate"] == "1980-02-15" and "_birthDate" not in merged  # an element is both its properties
    assert merged["link"] == [held["link"][0], msg["link"][0]] and merged["extension"] == [
        msg["extension"][0],
        held["extension"][1],
    ]
    filled = merge_resource(held, msg, "fill", rules)
    assert (
        filled["gender"] == "female"
        and filled["birthDate"] == "1980-02-14"
        and filled["extension"] == held["extension"]
    )
    assert filled["link"] == [held["link"][0], msg["link"][0]]  # only what the server lacks is added
    assert merge_resource(held, msg, "replace", rules) == {
        **{k: v for k, v in msg.items() if k != "id"},
        "id": "p",
        "meta": {"versionId": "3"},
    }
    # together: a new status takes the cancelation reason with it; value[x] and dataAbsentReason go as one
    appt = {
        "resourceType": "Appointment",
        "id": "a",
        "status": "cancelled",
        "cancelationReason": {"text": "sick"},
        "start": "2026-01-01T10:00:00Z",
    }
    assert merge_resource(appt, {"resourceType": "Appointment", "status": "booked"}, "merge", rules) == {
        "resourceType": "Appointment",
        "id": "a",
        "status": "booked",
        "start": "2026-01-01T10:00:00Z",
    }
    o = {
        "resourceType": "Observation",
        "id": "o",
        "dataAbsentReason": {"text": "cancelled"},
        "note": [{"text": "lab note"}],
    }
    assert merge_resource(o, {"resourceType": "Observation", "valueQuantity": {"value": 1}}, "merge", rules) == {
        "resourceType": "Observation",
        "id": "o",
        "note": [{"text": "lab note"}],
        "valueQuantity": {"value": 1},
    }


def test_the_merge_rules_file_is_read_and_checked(tmp_path):
    from hub.channels.fhir_delivery import load_merge_rules, merge_resource
    from hub.errors import ConfigError
    from support import ROOT

    shipped = load_merge_rules(ROOT / "mappings" / "fhir" / "merge.yaml")
    builtin = load_merge_rules(None)
    assert (shipped.lists, shipped.how, shipped.together) == (builtin.lists, builtin.how, builtin.together)
    (tmp_path / "fhir").mkdir()
    (tmp_path / "fhir" / "merge.yaml").write_text("lists:\n  '*':\n    identifier: [system]\n")
    d = FhirRestDestination(FhirRestDestination.Config(type="fhir_rest", base_url=BASE), Context(mappings_dir=tmp_path))
    held = {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]}
    assert merge_resource(
        held, {"resourceType": "Patient", "identifier": [{"system": "s", "value": "2"}]}, "merge", d.merge_rules
    )["identifier"] == [{"system": "s", "value": "2"}]
    assert d.merge_rules.how == {}  # this file has no how: everything merges
    with pytest.raises(ConfigError, match="not found"):
        FhirRestDestination(
            FhirRestDestination.Config(type="fhir_rest", base_url=BASE, merge_rules="nope.yaml"), Context(home=tmp_path)
        )
    for bad, why in (
        ("lists: [1]", "lists"),
        ("how: {Patient: maybe}", "maybe"),
        ("lists: {'*': {name: ['a..b']}}", "path"),
        ("together: {Patient: [x]}", "groups"),
        ("oops: 1", "unknown"),
    ):
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(ConfigError, match=why):
            FhirRestDestination(
                FhirRestDestination.Config(type="fhir_rest", base_url=BASE, merge_rules="bad.yaml"),
                Context(home=tmp_path),
            )


async def test_a_hint_on_the_entry_says_how_and_never_reaches_the_server():
    server = FakeFhir()
    held = server.put(
        {
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": "1"}],
            "name": [{"use": "official", "family": "DOE-SMITH"}],
            "gender": "female",
        }
    )
    survivor, merged = merge_pair("1", "2")
    survivor["resource"]["name"] = [{"use": "official", "family": "DOE"}]
    survivor["request"]["extension"] = [
        {"url": "urn:hub:fhir:merge", "valueCode": "fill"},
        {"url": "urn:other", "valueString": "kept"},
    ]
    await fake_dest(server).send(tx(survivor, merged))
    sent = server.writes("transaction")[-1]
    assert "urn:hub:fhir:merge" not in json.dumps(sent) and sent["entry"][0]["request"]["extension"] == [
        {"url": "urn:other", "valueString": "kept"}
    ]
    p = server.db[f"Patient/{held['id']}"]
    other = server.find("Patient", f"identifier={MRN}|2")[0]
    assert p["name"][0]["family"] == "DOE-SMITH" and p["link"] == [
        {"other": {"reference": f"Patient/{other['id']}"}, "type": "replaces"}
    ]
    assert other["link"] == [{"other": {"reference": f"Patient/{held['id']}"}, "type": "replaced-by"}]
    survivor["request"]["extension"] = [{"url": "urn:hub:fhir:merge", "valueCode": "sometimes"}]
    with pytest.raises(PermanentDelivery, match="merge hint 'sometimes'"):
        await fake_dest(server).send(tx(survivor, merged))


async def test_a_fill_hint_on_a_conditional_create_merges_into_what_the_server_holds():
    """The converter's partial patient (a merge's survivor, a lab's copy): POST + ifNoneExist + the fill hint. Found:
    read, fill in what the server lacks, PUT Type/id with If-Match. Absent: created as sent. No hint: left alone."""
    server = FakeFhir()
    held = server.put(
        {
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": "1"}],
            "name": [{"use": "official", "family": "DOE-SMITH"}],
            "address": [{"use": "home", "line": ["77 ELM AVE"]}],
            "gender": "female",
        }
    )

    def partial(mrn: str, **fields) -> dict:
        e = pat(mrn, **fields)
        e["request"] = {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": f"identifier={MRN}|{mrn}",
            "extension": [{"url": "urn:hub:fhir:merge", "valueCode": "fill"}],
        }
        return e

    survivor = partial(
        "1",
        name=[{"use": "official", "family": "DOE"}],
        link=[{"other": {"reference": "urn:uuid:p-2"}, "type": "replaces"}],
    )
    merged = pat("2", active=False, link=[{"other": {"reference": "urn:uuid:p-1"}, "type": "replaced-by"}])
    await fake_dest(server).send(tx(survivor, merged))
    sent = server.writes("transaction")[-1]
    assert sent["entry"][0]["request"] == {"method": "PUT", "url": f"Patient/{held['id']}", "ifMatch": 'W/"1"'}
    assert "urn:hub:fhir:merge" not in json.dumps(sent)
    p = server.db[f"Patient/{held['id']}"]
    other = server.find("Patient", f"identifier={MRN}|2")[0]
    assert (
        p["name"] == [{"use": "official", "family": "DOE-SMITH"}]
        and p["address"] == held["address"]
        and p["gender"] == "female"
    )
    assert p["link"] == [{"other": {"reference": f"Patient/{other['id']}"}, "type": "replaces"}]
    assert other["active"] is False and other["link"][0]["other"]["reference"] == f"Patient/{held['id']}"

    await fake_dest(server).send(tx(partial("3", name=[{"family": "NEW"}])))  # absent: a conditional create
    assert server.writes("transaction")[-1]["entry"][0]["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={MRN}|3",
    }
    assert server.find("Patient", f"identifier={MRN}|3")[0]["name"] == [{"family": "NEW"}]

    server.put(
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "urn:npi", "value": "9"}],
            "name": [{"family": "KEPT"}],
        }
    )
    doc = practitioner("9")
    doc["resource"]["name"] = [{"family": "OTHER"}]
    await fake_dest(server).send(tx(doc))  # no hint: a conditional create never touches the server's copy
    assert server.find("Practitioner", "identifier=urn:npi|9")[0]["name"] == [{"family": "KEPT"}]
    assert len(server.find("Practitioner", "identifier=urn:npi|9")) == 1


async def test_a_version_conflict_is_read_again_merged_again_and_sent_again():
    server = FakeFhir()
    held = server.put({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "1"}], "gender": "female"})
    key = f"Patient/{held['id']}"
    races = []

    def other_writer():
        if not races:  # between our read and our write, someone adds a phone
            races.append(key)
            server.db[key] = {
                **server.db[key],
                "telecom": [{"system": "phone", "use": "mobile", "value": "555-0777"}],
                "meta": {"versionId": "2"},
            }

    server.before_write = other_writer
    await fake_dest(server).send(tx(pat("1", name=[{"family": "DOE"}])))
    p = server.db[key]
    assert p["telecom"][0]["value"] == "555-0777" and p["name"] == [{"family": "DOE"}] and p["meta"]["versionId"] == "3"
    assert [w["entry"][0]["request"]["ifMatch"] for w in server.writes("transaction")] == ['W/"1"', 'W/"2"']
    assert len(server.reads()) == 2

    server.before_write = lambda: server.db.__setitem__(
        key, {**server.db[key], "meta": {"versionId": str(int(server.db[key]["meta"]["versionId"]) + 1)}}
    )
    with pytest.raises(RetryableDelivery, match=r"kept changing .*HTTP 412 3 times.* Patient identifier=urn:mrn\|1"):
        await fake_dest(server).send(tx(pat("1", name=[{"family": "DOE"}])))
    server.before_write = None
    with pytest.raises(
        PermanentDelivery, match="HTTP 412"
    ):  # a 412 without our If-Match is the server's answer, not a race
        await dest(lambda req: fhir(412, OO), update="replace").send(tx(pat("1")))


async def test_two_resources_with_one_identifier_are_dead_with_a_clear_reason():
    server = FakeFhir()
    for _ in range(2):
        server.put({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "1"}]})
    with pytest.raises(PermanentDelivery) as err:
        await fake_dest(server).send(tx(pat("1", name=[{"family": "DOE"}], birthDate="1980-02-14")))
    assert str(err.value).startswith(
        f"transaction 1 of 1: 2 Patient resources on the server have identifier {MRN}|1; resolve the duplicate on the "
        f"server, then replay"
    )
    assert "DOE" not in str(err.value) and "1980" not in str(err.value)
    assert not server.writes("transaction")


async def test_a_failed_chunk_says_which_what_it_held_and_what_was_written():
    server = FakeFhir(cap=8)
    bad = obs(10, "urn:uuid:p-1", status="bad", valueString="SECRET RESULT")
    with pytest.raises(PermanentDelivery) as err:
        await fake_dest(server).send(
            tx(
                pat("1", name=[{"family": "ROE"}]),
                *[obs(i, "urn:uuid:p-1") for i in range(10)],
                bad,
                report(11, "urn:uuid:p-1"),
            )
        )
    reason = str(err.value)
    assert reason.startswith(
        "transaction 2 of 2: HTTP 400: Patient.gender: bad code; it held Observation identifier=urn:obs|7,"
    )
    assert "Observation identifier=urn:obs|10" in reason and "DiagnosticReport identifier=urn:dr|1" in reason
    assert (
        "the 1 earlier transaction (8 entries) was written; every entry is conditional, so a replay updates what is "
        "there" in reason
    )
    assert "SECRET" not in reason and "ROE" not in reason
    assert (
        "entry 0: 201 Patient/" in err.value.response
        and '"resourceType":"OperationOutcome"' in err.value.response.replace(" ", "")
    )
    with pytest.raises(
        PermanentDelivery, match="a replay writes them again"
    ):  # a plain POST is not idempotent: said so
        plain = {
            "resource": {"resourceType": "Observation", "status": "bad", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Observation"},
        }
        await fake_dest(server).send(tx(plain))


async def test_a_connection_error_in_a_later_chunk_stays_retryable_and_says_where():
    server = FakeFhir(cap=8)
    calls = []

    def flaky(req):
        calls.append(req)
        if len(calls) == 3:  # chunk 1: read + write; the read of chunk 2 fails
            raise httpx.ConnectError("connection refused")
        return server(req)

    with pytest.raises(RetryableDelivery) as err:
        await dest(flaky).send(tx(pat("1"), *[obs(i, "urn:uuid:p-1") for i in range(10)], kind="transaction"))
    assert str(err.value).startswith(
        "transaction 2 of 2: POST http://ehr.test/fhir: ConnectError"
    ) and "1 earlier transaction" in str(err.value)
    server.log.clear()

    def busy(req):
        return (
            fhir(429, OO, **{"Retry-After": "30"}) if json.loads(req.content)["type"] == "transaction" else server(req)
        )

    with pytest.raises(RetryableDelivery) as err:
        await dest(busy).send(tx(pat("1")))
    assert err.value.retry_after == 30 and "HTTP 429" in str(err.value)


async def test_mode_resources_writes_entry_by_entry_with_the_conditional_headers():
    server = FakeFhir()
    held = server.put({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "1"}], "gender": "female"})
    d = fake_dest(server, mode="resources")
    answer = await d.send(
        tx(practitioner("9"), *merge_pair("1", "2"), obs(0, "urn:uuid:p-1", performer=[{"reference": "urn:uuid:pr-9"}]))
    )
    calls = [(m, u, h.get("If-None-Exist"), h.get("If-Match")) for m, u, b, h in server.log]
    assert not any(m == "POST" and not u for m, u, *_ in calls)  # no Bundle at all
    assert ("POST", "Practitioner", "identifier=urn:npi|9", None) in calls
    assert ("PUT", f"Patient/{held['id']}", None, 'W/"1"') in calls  # merged, with the version read
    other = server.find("Patient", f"identifier={MRN}|2")[0]
    assert server.db[f"Patient/{held['id']}"]["link"][0]["other"]["reference"] == f"Patient/{other['id']}"
    assert other["link"][0]["other"]["reference"] == f"Patient/{held['id']}"
    o = server.find("Observation", "identifier=urn:obs|0")[0]
    assert o["subject"]["reference"] == f"Patient/{held['id']}" and o["performer"][0]["reference"].startswith(
        "Practitioner/"
    )
    assert len(answer.splitlines()) == 5 and "4 entries in 6 requests" in answer  # the cycle: stubs first, then whole


async def test_mode_batch_sends_independent_entries_and_judges_each():
    server = FakeFhir()
    d = fake_dest(server, mode="batch")
    await d.send(
        tx(pat("1"), practitioner("9"), *[obs(i, "urn:uuid:p-1") for i in range(9)], report(9, "urn:uuid:p-1"))
    )
    writes = server.writes("batch")
    assert [len(w["entry"]) for w in writes] == [
        2,
        8,
        1,
        1,
    ]  # references resolved before: patient; 9 observations; report
    assert "urn:uuid" not in json.dumps([e["resource"] for w in writes for e in w["entry"]])
    with pytest.raises(
        PermanentDelivery, match=r"batch 1 of 1: 1 of 2 entries failed: Observation identifier=urn:obs|5 → HTTP 400"
    ):
        await d.send(tx(obs(4, "Patient/x"), obs(5, "Patient/x", status="bad"), kind="batch"))
    assert server.find("Observation", "identifier=urn:obs|4")  # the other entry of the batch was written


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
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    return eng


def _sender_app(eng: Engine, *users: tuple[str, str]) -> tuple[object, dict[str, str]]:
    """The web app (it serves every source's router()) and an API token per (user, role)."""
    from hub.web.app import create_app

    app = create_app(eng)
    auth = app.state.hub.auth
    tokens = {}
    for name, role in users:
        auth.add_user(name, role)
        tokens[name] = auth.create_token(name)
    return app, tokens


async def test_the_http_source_validates_stores_then_answers(tmp_path):
    eng = await _engine(tmp_path)
    try:
        app, tokens = _sender_app(eng, ("ehr", "sender"))
        auth = {"Authorization": f"Bearer {tokens['ehr']}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", headers=auth
        ) as client:
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
            r = await client.post(
                "/fhir/ehr_in/Observation",
                json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            )
            assert r.status_code == 422 and "not accepted here" in r.text
            r = await client.post("/fhir/ehr_in", content=b"{nope")
            assert r.status_code == 422 and r.json()["issue"][0]["code"] == "structure"

            async def down(items, **kw):
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


async def test_the_http_source_takes_nothing_anonymous_only_a_senders_token(tmp_path):
    """No credentials → 401; a token of another role → 403; ``senders`` binds the channel to named sender users."""
    bound = CHANNEL.replace("resource_types: [Patient, Bundle]}", "resource_types: [Patient, Bundle], senders: [ehr]}")
    eng = await _engine(tmp_path, bound)
    try:
        app, tokens = _sender_app(eng, ("ehr", "sender"), ("lab", "sender"), ("ops", "operator"), ("boss", "admin"))
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:x", "value": "SYNTH-1"}],
            "gender": "female",
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:

            async def post(path: str, who: str | None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
                return await client.post(path, json=patient, headers=headers)

            for path in ("/fhir/ehr_in", "/fhir/ehr_in/Patient"):
                r = await post(path, None)
                assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
                r = await client.post(path, json=patient, headers={"Authorization": "Bearer hub_not-a-token"})
                assert r.status_code == 401
                for who in ("ops", "boss"):  # content readers and admins are not sending systems
                    r = await post(path, who)
                    assert r.status_code == 403 and "send" in r.json()["detail"]
                r = await post(path, "lab")  # a sender, but not one of this channel's
                assert r.status_code == 403 and "may not post to channel ehr_in" in r.json()["detail"]
            assert eng.store.search(SearchQuery(channel="ehr_in")) == []  # nothing refused was stored
            assert (await post("/fhir/ehr_in/Patient", "ehr")).status_code == 201
            assert (await post("/fhir/ehr_in", "ehr")).status_code == 200
            assert len(eng.store.search(SearchQuery(channel="ehr_in"))) == 2
            app.state.hub.auth.update_user("ehr", disabled=True)  # a disabled sender's token stops working
            assert (await post("/fhir/ehr_in", "ehr")).status_code == 401
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
    eng = Engine(cfg, idle_poll=0.05)
    seen = []
    pages = {
        None: {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": "http://ehr.test/fhir/Patient?page=2"}],
            "entry": [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "id": "a",
                        "meta": {"versionId": "1", "lastUpdated": "2026-03-01T10:00:00Z"},
                    }
                }
            ],
        },
        "2": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "id": "b",
                        "meta": {"versionId": "1", "lastUpdated": "2026-03-02T10:00:00Z"},
                    }
                }
            ],
        },
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
    with pytest.raises(ValidationError):
        FhirRestDestination.Config.model_validate(
            {"type": "fhir_rest", "base_url": BASE, "auth": {"type": "smart", "client_id": "x"}}
        )
    s = FhirSource(FhirSource.Config.model_validate({"type": "fhir"}), Context(channel="ehr_orders"))
    assert s.path == "/fhir/ehr_orders"

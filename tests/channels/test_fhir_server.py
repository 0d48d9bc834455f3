"""The hub's Bundles against a real FHIR server: Medplum's FHIR router (conditional create/update, transactions,
search) over its in-memory repository, validating every resource against the R4 StructureDefinitions.

The server is the npm package @medplum/fhir-router, run by Node beside the test process on a loopback port
(tests/channels/fhir_server/server.mjs); tests/peers.sh installs it into var/test-peers/medplum (this fixture does
too when it is missing, or when an older server.mjs had raised its transaction cap in the installed files). It runs as
Medplum ships it: at most 8 entries in a transaction with conditional entries, at most 50 updates in any transaction.
Without Node/npm the tests are skipped with the reason (a failure in CI).

The Bundles here are hand-made in the shape the v2_to_fhir converter writes, so that these tests judge delivery
(chunks, merging, conflicts, modes, reasons) and not conversion; every sample message through the converter and the
engine into this server is test_fhir_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from unittest.mock import ANY

import httpx
import pytest

from hub.channels.base import Context
from hub.channels.fhir import FhirRestDestination
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message
from support import ROOT, need_peer

SERVER_SRC = ROOT / "tests" / "channels" / "fhir_server"
INSTALL = ROOT / "var" / "test-peers" / "medplum"


ROUTER = INSTALL / "node_modules" / "@medplum" / "fhir-router"


def _router_is_pristine() -> bool:
    """The installed router still has Medplum's 8-entry cap on transactions that need strict isolation (an older
    server.mjs raised it by rewriting the installed file in place; the tests must see the server as Medplum ships
    it)."""
    try:
        code = (ROUTER / "dist" / "esm" / "index.mjs").read_text(encoding="utf-8")
    except OSError:
        return False
    cap = re.search(r"requiresStrongTransaction&&this\.state\.resultEntries\.length>(\w+)\)", code)
    return cap is not None and re.search(rf"[,;{{ ]{re.escape(cap.group(1))}=8[,;]", code) is not None


def _install() -> str | None:
    """Install the server's npm packages once (again when the router was patched); None when ready, else why not."""
    if not (shutil.which("node") and shutil.which("npm")):
        return "node and npm are needed for the real FHIR server test"
    INSTALL.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVER_SRC / "server.mjs", INSTALL / "server.mjs")
    same = (INSTALL / "package.json").is_file() and (INSTALL / "package.json").read_bytes() == (
        SERVER_SRC / "package.json"
    ).read_bytes()
    if ROUTER.is_dir() and same and _router_is_pristine():
        return None
    shutil.rmtree(ROUTER, ignore_errors=True)  # npm then installs it afresh from the registry (or its cache)
    shutil.copy(SERVER_SRC / "package.json", INSTALL / "package.json")
    try:
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=INSTALL,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return "npm install of @medplum/fhir-router timed out"
    if r.returncode != 0:
        return f"npm install of @medplum/fhir-router failed: {r.stderr.strip()[-300:]}"
    if not _router_is_pristine():
        return "the installed @medplum/fhir-router does not have Medplum's transaction cap where this test expects it"
    return None


@pytest.fixture(scope="module")
def fhir_server():
    problem = _install()
    need_peer(problem is None, problem or "")
    proc = subprocess.Popen(
        ["node", "--experimental-websocket", "server.mjs", "0"],
        cwd=INSTALL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NODE_OPTIONS": ""},
    )
    port = None
    deadline = time.monotonic() + 90
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("LISTENING "):
            port = int(line.split()[1])
            break
    if port is None:
        proc.kill()
        need_peer(False, f"the FHIR server did not start: {''.join(lines)[-500:]}")
    yield f"http://127.0.0.1:{port}/fhir"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def search(base: str, query: str) -> list[dict]:
    """Every resource a search finds (all pages)."""
    out: list[dict] = []
    url: str | None = f"{base}/{query}"
    async with httpx.AsyncClient() as c:
        while url:
            r = await c.get(url, headers={"Accept": "application/fhir+json"})
            r.raise_for_status()
            page = r.json()
            out += [
                e["resource"]
                for e in page.get("entry") or []
                if (e.get("search") or {}).get("mode", "match") == "match"
            ]
            url = next((lk["url"] for lk in page.get("link") or [] if lk.get("relation") == "next"), None)
    return out


async def read(base: str, reference: str) -> dict:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{base}/{reference}", headers={"Accept": "application/fhir+json"})
        r.raise_for_status()
        return r.json()


async def one(base: str, query: str) -> dict:
    found = await search(base, query)
    assert len(found) == 1, f"{len(found)} resources for {query}"
    return found[0]


# ---------------------------------------------------------------------------------------------- Bundles
# Hand-made Bundles in the shape v2_to_fhir writes (hub/transforms/fhir/bundle.py): urn:uuid fullUrls, conditional
# updates (PUT Type?identifier=…), conditional creates (POST + ifNoneExist) for what a message only refers to, and
# the urn:hub:fhir:merge hint. These tests are about delivery; conversion end to end is test_fhir_e2e.py.
MRN = "https://example.org/fhir/sid/clinic-mrn"
EMPI = "https://example.org/fhir/sid/empi"
SSN = "http://hl7.org/fhir/sid/us-ssn"
LAB = "https://example.org/fhir/sid/lab-order"
ORDER = "https://example.org/fhir/sid/ehr-order"
NPI = "http://hl7.org/fhir/sid/us-npi"
VISIT = "https://example.org/fhir/sid/hospital-visit"
HINT = "urn:hub:fhir:merge"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
AMB = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


def urn(rtype: str, system: str, value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{rtype}/{system}|{value}')}"


def put(rtype: str, system: str, value: str, fields: dict) -> dict:
    """A conditional update entry (what the converter writes for what the message describes)."""
    resource = {"resourceType": rtype, "identifier": [{"system": system, "value": value}], **fields}
    return {
        "fullUrl": urn(rtype, system, value),
        "resource": resource,
        "request": {"method": "PUT", "url": f"{rtype}?identifier={system}|{value}"},
    }


def create(rtype: str, system: str, value: str, fields: dict, hint: str | None = None) -> dict:
    """A conditional create entry (what the message only refers to); with a hint, the hub's merge."""
    e = put(rtype, system, value, fields)
    e["request"] = {"method": "POST", "url": rtype, "ifNoneExist": f"identifier={system}|{value}"}
    if hint:
        e["request"]["extension"] = [{"url": HINT, "valueCode": hint}]
    return e


def ref(entry: dict) -> dict:
    return {"reference": entry["fullUrl"]}


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def practitioner(npi: str, family: str) -> dict:
    return create("Practitioner", NPI, npi, {"name": [{"family": family}]})


def a04(mrn: str, empi: str, ssn: str) -> dict:
    """A registration: the whole patient (three identifiers, name, phones, address, race …) and a visit."""
    p = put(
        "Patient",
        MRN,
        mrn,
        {
            "identifier": [
                {
                    "system": MRN,
                    "value": mrn,
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                },
                {"system": EMPI, "value": empi},
                {"system": SSN, "value": ssn},
            ],
            "active": True,
            "name": [{"use": "official", "family": "DOE", "given": ["JANE", "Q"]}],
            "telecom": [
                {"system": "phone", "use": "home", "value": "+1 (217) 555-0123"},
                {"system": "phone", "use": "work", "value": "+1 (217) 555-0199"},
                {"system": "email", "value": "jane.doe@example.org"},
            ],
            "gender": "female",
            "birthDate": "1980-02-14",
            "address": [
                {
                    "use": "home",
                    "line": ["123 MAIN ST", "APT 4B"],
                    "city": "SPRINGFIELD",
                    "state": "IL",
                    "postalCode": "62701",
                }
            ],
            "maritalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            },
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}}],
            "extension": [
                {
                    "url": US_CORE + "us-core-race",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"},
                        }
                    ],
                },
                {
                    "url": US_CORE + "us-core-ethnicity",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2186-5"},
                        }
                    ],
                },
            ],
        },
    )
    doc = practitioner("1234567893", "SMITH")
    enc = put(
        "Encounter",
        VISIT,
        f"V{mrn}",
        {"status": "in-progress", "class": AMB, "subject": ref(p), "participant": [{"individual": ref(doc)}]},
    )
    return tx(p, doc, enc)


def a08(mrn: str, empi: str) -> dict:
    """An update: a new official name (the old one kept as maiden) and a new home address; not the SSN, not the work
    phone."""
    p = put(
        "Patient",
        MRN,
        mrn,
        {
            "identifier": [{"system": MRN, "value": mrn}, {"system": EMPI, "value": empi}],
            "name": [
                {"use": "official", "family": "DOE-SMITH", "given": ["JANE", "Q"]},
                {"use": "maiden", "family": "DOE", "given": ["JANE", "Q"]},
            ],
            "telecom": [{"system": "phone", "use": "home", "value": "+1 (217) 555-0123"}],
            "gender": "female",
            "birthDate": "1980-02-14",
            "address": [
                {"use": "home", "line": ["77 ELM AVE"], "city": "SPRINGFIELD", "state": "IL", "postalCode": "62704"}
            ],
        },
    )
    enc = put("Encounter", VISIT, f"V{mrn}", {"status": "in-progress", "class": AMB, "subject": ref(p)})
    return tx(p, enc)


def a40(survivor: str, merged: str, how: str = "fill") -> dict:
    """A merge as the converter writes it: the survivor from a sparse PID (only the MRN and the old name) — a
    conditional create with the fill hint (how=fill) or a plain conditional update (how=update) — and the merged
    patient, inactive, replaced-by the survivor. The two link each other: a reference cycle."""
    fields = {
        "name": [{"use": "official", "family": "DOE", "given": ["JANE", "Q"]}],
        "gender": "female",
        "birthDate": "1980-02-14",
        "link": [{"other": {"reference": urn("Patient", MRN, merged)}, "type": "replaces"}],
    }
    s = (
        create("Patient", MRN, survivor, fields, hint="fill")
        if how == "fill"
        else put("Patient", MRN, survivor, fields)
    )
    m = put(
        "Patient",
        MRN,
        merged,
        {
            "active": False,
            "name": [{"use": "official", "family": "DOE", "given": ["JANE"]}],
            "link": [{"other": ref(s), "type": "replaced-by"}],
        },
    )
    return tx(s, m)


def oru(n: int, mrn: str, order: str) -> dict:
    """A lab report with n results: n + 8 entries, every one of them referring to others."""
    p = create(
        "Patient",
        MRN,
        mrn,
        {
            "name": [{"use": "official", "family": "ROE", "given": ["RICHARD"]}],
            "gender": "male",
            "birthDate": "1957-11-03",
        },
        hint="fill",
    )
    enc = put("Encounter", VISIT, f"V{order}", {"status": "finished", "class": AMB, "subject": ref(p)})
    orderer, reader = practitioner("1234567893", "SMITH"), practitioner("9876543213", "JONES")
    lab = create("Organization", "https://example.org/fhir/sid/clinic", "EXAMPLE_LAB", {"name": "Example Lab"})
    sr = put(
        "ServiceRequest",
        ORDER,
        f"ORD{order}",
        {
            "status": "active",
            "intent": "order",
            "code": {"text": "panel"},
            "subject": ref(p),
            "encounter": ref(enc),
            "requester": ref(orderer),
        },
    )
    spec = put(
        "Specimen", "https://example.org/fhir/sid/specimen", f"S{order}", {"subject": ref(p), "type": {"text": "blood"}}
    )
    obs = [
        put(
            "Observation",
            LAB,
            f"{order}-{i}",
            {
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": f"{90000 + i}-0"}],
                    "text": f"Synthetic test {i}",
                },
                "subject": ref(p),
                "encounter": ref(enc),
                "basedOn": [ref(sr)],
                "performer": [ref(reader)],
                "specimen": ref(spec),
                "effectiveDateTime": "2026-03-16T10:10:00-06:00",
                "valueString": f"result {i}",
            },
        )
        for i in range(1, n + 1)
    ]
    dr = put(
        "DiagnosticReport",
        LAB,
        order,
        {
            "status": "final",
            "code": {"text": "panel"},
            "subject": ref(p),
            "encounter": ref(enc),
            "basedOn": [ref(sr)],
            "performer": [ref(lab)],
            "specimen": [ref(spec)],
            "result": [ref(o) for o in obs],
        },
    )
    return tx(p, enc, orderer, reader, lab, sr, spec, dr, *obs)


class Spy(httpx.AsyncBaseTransport):
    """Forwards to the server; records each request and may act before forwarding it (another writer)."""

    def __init__(self, before=None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, dict | None]] = []
        self.before = before

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread() or b"null")
        self.seen.append((request.method, body))
        if self.before is not None:
            await self.before(request, body)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def bundles(self, kind: str) -> list[dict]:
        """The Bundles of that type that wrote something (the reads are batches of GETs)."""
        return [
            b
            for m, b in self.seen
            if isinstance(b, dict)
            and b.get("type") == kind
            and any(e["request"]["method"] != "GET" for e in b["entry"])
        ]

    def reads(self) -> list[dict]:
        return [
            b
            for m, b in self.seen
            if isinstance(b, dict)
            and b.get("type") == "batch"
            and all(e["request"]["method"] == "GET" for e in b["entry"])
        ]


async def deliver(base: str, bundle: dict, transport: httpx.AsyncBaseTransport | None = None, **cfg) -> str:
    """Send a Bundle with a fhir_rest destination (the shipped merge rules); its answer."""
    d = FhirRestDestination(
        FhirRestDestination.Config(type="fhir_rest", base_url=base, **cfg), Context(mappings_dir=ROOT / "mappings")
    )
    d.transport = transport
    try:
        return await d.send(Message(raw=json.dumps(bundle).encode(), content_type="fhir"))
    finally:
        await d.close()


# ---------------------------------------------------------------------------------------------- the server as shipped
async def test_the_server_has_medplums_cap_on_conditional_transactions(fhir_server):
    """The reason for max_entries: nine conditional entries in one transaction are refused by Medplum as shipped."""
    nine = tx(*[practitioner(f"10000000{i:02d}", "CAP") for i in range(9)])
    async with httpx.AsyncClient() as c:
        r = await c.post(fhir_server, json=nine, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400 and "too many entries" in r.text
    answer = await deliver(fhir_server, nine)  # the destination's default (8) splits it
    assert answer.startswith("HTTP 200") and "9 entries in 2 transactions" in answer


async def test_a_cap_set_too_high_is_dead_with_a_reason_that_says_what_to_change(fhir_server):
    with pytest.raises(PermanentDelivery) as err:
        await deliver(fhir_server, tx(*[practitioner(f"20000000{i:02d}", "CAP") for i in range(12)]), max_entries=20)
    reason = str(err.value)
    assert "transaction 1 of 1: HTTP 400: Transaction requires strict isolation but has too many entries" in reason
    assert "lower max_entries (now 20)" in reason and "mode: batch" in reason


async def test_an_invalid_bundle_is_dead_with_the_servers_operation_outcome(fhir_server):
    bad = a04("MRN70000001", "E70000001", "999-70-0001")
    bad["entry"][0]["resource"]["birthDate"] = "not-a-date"
    with pytest.raises(PermanentDelivery) as err:
        await deliver(fhir_server, bad)
    oo = json.loads(err.value.response.splitlines()[-1])
    assert oo["resourceType"] == "OperationOutcome" and "HTTP 400" in str(err.value)
    assert "birthDate" in str(err.value)  # the element the server named, never its value
    assert "not-a-date" not in str(err.value)


# ---------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("obx", [12, 60])
async def test_a_big_report_is_split_and_every_reference_resolves(fhir_server, obx):
    mrn, order = f"MRN7{obx:04d}01", f"LAB7{obx:04d}"
    spy = Spy()
    b = oru(obx, mrn, order)
    entries = len(b["entry"])
    for _ in range(2):  # sent twice: the second time updates, nothing twice
        answer = await deliver(fhir_server, b, spy)
        lines = answer.splitlines()
        assert lines[0].startswith("HTTP 200") and f"({entries} entries in {-(-entries // 8)} transactions" in lines[0]
        assert len(lines) == 1 + entries and all(
            line.split(": ", 1)[1][:2] == "20" and "/" in line for line in lines[1:]
        )
    writes = spy.bundles("transaction")
    assert len(writes) == 2 * -(-entries // 8) and all(
        len(w["entry"]) <= 8 for w in writes
    )  # Medplum's cap, as shipped
    assert HINT not in json.dumps(spy.seen)  # the hint is the hub's: the server never sees it

    patient = await one(fhir_server, f"Patient?identifier={MRN}|{mrn}")
    report = await one(fhir_server, f"DiagnosticReport?identifier={LAB}|{order}")
    assert report["subject"]["reference"] == f"Patient/{patient['id']}" and len(report["result"]) == obx
    observations = {
        f"Observation/{o['id']}": o
        for o in await search(fhir_server, f"Observation?subject=Patient/{patient['id']}&_count=1000")
    }
    assert len(observations) == obx and {r["reference"] for r in report["result"]} == set(
        observations
    )  # no urn:uuid left
    targets = set()
    for o in observations.values():
        assert o["identifier"][0]["value"].startswith(order)
        targets |= {
            o["encounter"]["reference"],
            o["specimen"]["reference"],
            o["basedOn"][0]["reference"],
            o["performer"][0]["reference"],
        }
    assert len(targets) == 4  # one encounter, specimen, order and reader for all of them, each on the server
    for t in targets:
        await read(fhir_server, t)


async def test_a_failed_chunk_names_the_chunk_its_entries_and_what_was_written(fhir_server):
    good = oru(12, "MRN74000001", "LAB74001")
    bad = json.loads(json.dumps(good))
    [o for o in bad["entry"] if o["resource"]["resourceType"] == "Observation"][4]["resource"]["effectiveDateTime"] = (
        "not-a-date"
    )
    with pytest.raises(PermanentDelivery) as err:
        await deliver(fhir_server, bad)
    reason = str(err.value)
    assert (
        re.match(r"transaction 2 of 3: HTTP 400: .*Observation.effective", reason)
        and "Observation identifier=" in reason
    )
    assert "the 1 earlier transaction (8 entries) was written" in reason and "a replay updates what is there" in reason
    assert "result 5" not in reason and "not-a-date" not in reason  # no resource content
    assert len(await search(fhir_server, f"Patient?identifier={MRN}|MRN74000001")) == 1  # chunk 1 is there
    assert (await deliver(fhir_server, good)).startswith("HTTP 200")  # the replay (after the fix) completes it
    assert len(await search(fhir_server, f"Patient?identifier={MRN}|MRN74000001")) == 1


# ---------------------------------------------------------------------------------------------- updates never erase
@pytest.mark.parametrize("how", ["fill", "update"])
async def test_a_sparse_merge_erases_nothing_the_server_holds(fhir_server, how):
    n = {"fill": "1", "update": "2"}[how]
    mrn, old, empi = f"MRN7100000{n}", f"MRN7110000{n}", f"E7100000{n}"
    await deliver(fhir_server, a04(mrn, empi, f"999-71-000{n}"))
    await deliver(fhir_server, a08(mrn, empi))  # new official name DOE-SMITH, maiden DOE, new home address
    spy = Spy()
    answer = await deliver(fhir_server, a40(mrn, old, how), spy)  # PID: only the MRN and the old name DOE JANE Q
    assert answer.startswith("HTTP 200") and HINT not in json.dumps(spy.seen)

    survivor = await one(fhir_server, f"Patient?identifier={MRN}|{mrn}")
    merged = await one(fhir_server, f"Patient?identifier={MRN}|{old}")
    assert {(i["system"], i["value"]) for i in survivor["identifier"]} == {
        (MRN, mrn),
        (EMPI, empi),
        (SSN, f"999-71-000{n}"),
    }
    names = [(x["use"], x["family"]) for x in survivor["name"]]
    # fill: the server's name stands (the A08's); update: the message's official name wins, the maiden name stays
    assert names == (
        [("official", "DOE-SMITH"), ("maiden", "DOE")] if how == "fill" else [("official", "DOE"), ("maiden", "DOE")]
    )
    assert [a["line"][0] for a in survivor["address"]] == ["77 ELM AVE"]
    assert sorted((t["system"], t["value"]) for t in survivor["telecom"]) == [
        ("email", "jane.doe@example.org"),
        ("phone", "+1 (217) 555-0123"),
        ("phone", "+1 (217) 555-0199"),
    ]
    assert (
        survivor["maritalStatus"]["coding"][0]["code"] == "M"
        and survivor["communication"][0]["language"]["coding"][0]["code"] == "en"
    )
    assert {x["url"].rsplit("/", 1)[1] for x in survivor["extension"]} == {"us-core-race", "us-core-ethnicity"}
    assert survivor["birthDate"] == "1980-02-14" and survivor["gender"] == "female" and survivor["active"] is True
    assert survivor["link"] == [{"other": {"reference": f"Patient/{merged['id']}"}, "type": "replaces"}]
    assert merged["active"] is False and merged["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    # the survivor was written as PUT Patient/<id> with If-Match on the version read, never as a conditional update
    writes = [e["request"] for w in spy.bundles("transaction") for e in w["entry"]]
    assert [w for w in writes if w["url"] == f"Patient/{survivor['id']}"] == [
        {"method": "PUT", "url": f"Patient/{survivor['id']}", "ifMatch": ANY}
    ]
    assert [w for w in writes if w["url"].startswith("Patient?")] == [
        {"method": "PUT", "url": f"Patient?identifier={MRN}|{old}"}
    ]  # new: created

    await deliver(fhir_server, a40(mrn, old, how))  # again: still one link each way, nothing else changed
    again = await one(fhir_server, f"Patient?identifier={MRN}|{mrn}")
    assert (
        again["link"] == survivor["link"]
        and again["name"] == survivor["name"]
        and again["identifier"] == survivor["identifier"]
    )


async def test_a_fill_for_a_patient_the_server_lacks_creates_it(fhir_server):
    answer = await deliver(fhir_server, oru(1, "MRN77000001", "LAB77001"))
    assert answer.splitlines()[1].startswith("entry 0: 201 Patient/")
    p = await one(fhir_server, f"Patient?identifier={MRN}|MRN77000001")
    assert p["name"][0]["family"] == "ROE" and "extension" not in p


async def test_a_version_conflict_is_read_again_and_the_other_writers_change_survives(fhir_server):
    await deliver(fhir_server, a04("MRN72000001", "E72000001", "999-72-0001"))
    raced = []

    async def other_writer(request: httpx.Request, body: dict | None) -> None:
        """Between our read and our write, someone else adds a mobile phone to the patient."""
        if raced or not isinstance(body, dict) or body.get("type") != "transaction":
            return
        if not any(e["request"].get("ifMatch") for e in body["entry"]):
            return
        async with httpx.AsyncClient() as c:
            p = await one(fhir_server, f"Patient?identifier={MRN}|MRN72000001")
            p["telecom"].append({"system": "phone", "value": "+1 (217) 555-0777", "use": "mobile"})
            r = await c.put(
                f"{fhir_server}/Patient/{p['id']}", json=p, headers={"Content-Type": "application/fhir+json"}
            )
            assert r.status_code == 200
        raced.append(True)

    spy = Spy(other_writer)
    answer = await deliver(fhir_server, a08("MRN72000001", "E72000001"), spy)
    assert answer.startswith("HTTP 200") and raced
    writes = spy.bundles("transaction")
    assert (
        len(writes) == 2 and writes[0]["entry"][0]["request"]["ifMatch"] != writes[1]["entry"][0]["request"]["ifMatch"]
    )
    assert len(spy.reads()) == 2  # read, 412, read again
    p = await one(fhir_server, f"Patient?identifier={MRN}|MRN72000001")
    assert ("mobile", "+1 (217) 555-0777") in {(t.get("use"), t["value"]) for t in p["telecom"]}  # the other writer's
    assert p["name"][0]["family"] == "DOE-SMITH" and p["address"][0]["line"][0] == "77 ELM AVE"  # and the message's


async def test_a_conflict_that_does_not_end_is_retried_later(fhir_server):
    await deliver(fhir_server, a04("MRN72000002", "E72000002", "999-72-0002"))

    async def always(request: httpx.Request, body: dict | None) -> None:
        if (
            isinstance(body, dict)
            and body.get("type") == "transaction"
            and any(e["request"].get("ifMatch") for e in body["entry"])
        ):
            async with httpx.AsyncClient() as c:
                p = await one(fhir_server, f"Patient?identifier={MRN}|MRN72000002")
                await c.put(
                    f"{fhir_server}/Patient/{p['id']}", json=p, headers={"Content-Type": "application/fhir+json"}
                )

    with pytest.raises(RetryableDelivery, match="kept changing") as err:
        await deliver(fhir_server, a08("MRN72000002", "E72000002"), Spy(always))
    assert "Patient identifier=" in str(err.value)


async def test_two_patients_with_one_identifier_are_dead_with_a_clear_reason(fhir_server):
    async with httpx.AsyncClient() as c:
        for _ in range(2):
            twin = {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": "MRN73000001"}],
                "gender": "female",
            }
            r = await c.post(f"{fhir_server}/Patient", json=twin, headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 201
    with pytest.raises(PermanentDelivery) as err:
        await deliver(fhir_server, a08("MRN73000001", "E73000001"))
    reason = str(err.value)
    assert (
        f"2 Patient resources on the server have identifier {MRN}|MRN73000001; resolve the duplicate on the server, "
        f"then replay" in reason
    )
    assert "transaction 1 of 1" in reason and "no earlier transaction was written" in reason
    assert "DOE" not in reason and "ELM" not in reason  # names the resources by type and identifier only


# ---------------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mode", ["batch", "resources"])
async def test_modes_batch_and_resources_deliver_too(fhir_server, mode):
    n = {"batch": "1", "resources": "2"}[mode]
    spy = Spy()
    for _ in range(2):  # twice: nothing twice
        answer = await deliver(fhir_server, oru(10, f"MRN7500000{n}", f"LAB7500{n}"), spy, mode=mode)
        assert answer.startswith("HTTP 20")
    assert not spy.bundles("transaction")
    if mode == "batch":
        assert spy.bundles("batch") and all(len(b["entry"]) <= 8 for b in spy.bundles("batch"))
    else:
        assert all(not (isinstance(b, dict) and b.get("resourceType") == "Bundle") for _, b in spy.seen)
    patient = await one(fhir_server, f"Patient?identifier={MRN}|MRN7500000{n}")
    report = await one(fhir_server, f"DiagnosticReport?identifier={LAB}|LAB7500{n}")
    assert report["subject"]["reference"] == f"Patient/{patient['id']}" and len(report["result"]) == 10
    for r in report["result"]:
        assert (await read(fhir_server, r["reference"]))["subject"]["reference"] == f"Patient/{patient['id']}"
    # a reference cycle (the two patients of a merge link each other) is written in two steps; the survivor merged
    await deliver(fhir_server, a04(f"MRN7600000{n}", f"E7600000{n}", f"999-76-000{n}"), mode=mode)
    await deliver(fhir_server, a40(f"MRN7600000{n}", f"MRN7610000{n}"), mode=mode)
    survivor = await one(fhir_server, f"Patient?identifier={MRN}|MRN7600000{n}")
    merged = await one(fhir_server, f"Patient?identifier={MRN}|MRN7610000{n}")
    assert survivor["link"] == [{"other": {"reference": f"Patient/{merged['id']}"}, "type": "replaces"}]
    assert merged["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert len(survivor["identifier"]) == 3 and survivor["address"][0]["line"][0] == "123 MAIN ST"  # nothing erased


async def test_no_identifier_is_on_two_resources_after_everything(fhir_server):
    """Every test above sent its messages once or more; conditional entries must have kept one resource each."""
    for rtype, system in (("Patient", MRN), ("Observation", LAB), ("Practitioner", NPI)):
        seen: dict[str, int] = {}
        for r in await search(fhir_server, f"{rtype}?_count=1000"):
            for i in r.get("identifier") or []:
                if i.get("system") == system and not i["value"].startswith("MRN73"):  # the twins made on purpose
                    seen[i["value"]] = seen.get(i["value"], 0) + 1
        assert seen and not {v: c for v, c in seen.items() if c > 1}

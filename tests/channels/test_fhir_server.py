"""The hub's Bundles against a real FHIR server: Medplum's FHIR router (conditional create/update, transactions,
search) over its in-memory repository, validating every resource against the R4 StructureDefinitions.

The server is the npm package @medplum/fhir-router, run by Node beside the test process on a loopback port
(tests/channels/fhir_server/server.mjs); tests/peers.sh installs it into var/test-peers/medplum (this fixture does
too when it is missing). Without Node/npm the tests are skipped with the reason (a failure in CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time

import httpx
import pytest

from support import ROOT, SAMPLES, need_peer, write_config
from hub.channels.base import Context
from hub.channels.fhir import FhirRestDestination
from hub.engine import Engine
from hub.errors import PermanentDelivery
from hub.message import Message
from hub.spec import load_config
from hub.transforms.fhir.v2_to_fhir import convert, dumps

SERVER_SRC = ROOT / "tests" / "channels" / "fhir_server"
INSTALL = ROOT / "var" / "test-peers" / "medplum"


def _install() -> str | None:
    """Install the server's npm packages once; None when ready, else why not."""
    if not (shutil.which("node") and shutil.which("npm")):
        return "node and npm are needed for the real FHIR server test"
    INSTALL.mkdir(parents=True, exist_ok=True)
    shutil.copy(SERVER_SRC / "server.mjs", INSTALL / "server.mjs")
    if (INSTALL / "node_modules" / "@medplum" / "fhir-router").is_dir() and (INSTALL / "package.json").read_bytes() == (SERVER_SRC / "package.json").read_bytes():
        return None
    shutil.copy(SERVER_SRC / "package.json", INSTALL / "package.json")
    try:
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=INSTALL, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "npm install of @medplum/fhir-router timed out"
    if r.returncode != 0:
        return f"npm install of @medplum/fhir-router failed: {r.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def fhir_server():
    problem = _install()
    need_peer(problem is None, problem or "")
    proc = subprocess.Popen(
        ["node", "--experimental-websocket", "server.mjs", "0"], cwd=INSTALL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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


def bundle_of(name: str) -> bytes:
    return dumps(convert((SAMPLES / "hl7v2" / name).read_bytes()))


async def search(base: str, query: str) -> list[dict]:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{base}/{query}", headers={"Accept": "application/fhir+json"})
        r.raise_for_status()
        return [e["resource"] for e in r.json().get("entry") or []]


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (SAMPLES / "hl7v2").glob("*.hl7") if not p.name.startswith("batch") and p.name != "fhir_oru_bad_nm.hl7"),
)
async def test_every_sample_bundle_is_accepted_by_the_server(fhir_server, name):
    d = FhirRestDestination(FhirRestDestination.Config(type="fhir_rest", base_url=fhir_server), Context())
    try:
        answer = await d.send(Message(raw=bundle_of(name), content_type="fhir"))
    finally:
        await d.close()
    assert answer.startswith("HTTP 200")
    assert "entry 0: 20" in answer and "Patient/" in answer


async def test_a_patient_arriving_twice_is_one_patient_and_references_resolve(fhir_server):
    d = FhirRestDestination(FhirRestDestination.Config(type="fhir_rest", base_url=fhir_server), Context())
    try:
        for name in ("adt_a01.hl7", "adt_a04.hl7", "adt_a08.hl7", "adt_a01.hl7"):
            await d.send(Message(raw=bundle_of(name), content_type="fhir"))
        await d.send(Message(raw=bundle_of("oru_r01.hl7"), content_type="fhir"))
        await d.send(Message(raw=bundle_of("oru_r01.hl7"), content_type="fhir"))  # resent: updates, no duplicates
    finally:
        await d.close()
    jane = await search(fhir_server, "Patient?identifier=https://example.org/fhir/sid/clinic-mrn|MRN00012345")
    assert len(jane) == 1 and jane[0]["name"][0]["family"] == "DOE"
    richard = await search(fhir_server, "Patient?identifier=https://example.org/fhir/sid/clinic-mrn|MRN00023456")
    assert len(richard) == 1
    reports = await search(fhir_server, "DiagnosticReport?identifier=https://example.org/fhir/sid/lab-order|LAB77001")
    assert len(reports) == 1
    report = reports[0]
    assert report["subject"]["reference"] == f"Patient/{richard[0]['id']}"
    obs = await search(fhir_server, f"Observation?subject=Patient/{richard[0]['id']}&_count=1000")
    obs = [o for o in obs if o["identifier"][0]["value"].startswith("LAB77001-")]
    assert len(obs) == 10  # ten OBX, sent twice: still ten
    assert {r["reference"] for r in report["result"]} == {f"Observation/{o['id']}" for o in obs}
    enc = await search(fhir_server, "Encounter?identifier=https://example.org/fhir/sid/hospital-visit|V00012345")
    assert len(enc) == 1 and enc[0]["subject"]["reference"] == f"Patient/{jane[0]['id']}"


async def test_the_merge_links_patients_on_the_server(fhir_server):
    d = FhirRestDestination(FhirRestDestination.Config(type="fhir_rest", base_url=fhir_server), Context())
    try:
        await d.send(Message(raw=bundle_of("adt_a40.hl7"), content_type="fhir"))
    finally:
        await d.close()
    old = await search(fhir_server, "Patient?identifier=https://example.org/fhir/sid/clinic-mrn|MRN00099999")
    new = await search(fhir_server, "Patient?identifier=https://example.org/fhir/sid/clinic-mrn|MRN00012345")
    assert old[0]["active"] is False and old[0]["link"][0] == {"other": {"reference": f"Patient/{new[0]['id']}"}, "type": "replaced-by"}


async def test_an_invalid_bundle_is_dead_with_the_servers_operation_outcome(fhir_server):
    bad = json.loads(bundle_of("adt_a04.hl7"))
    bad["entry"][0]["resource"]["birthDate"] = "not-a-date"
    d = FhirRestDestination(FhirRestDestination.Config(type="fhir_rest", base_url=fhir_server), Context())
    try:
        with pytest.raises(PermanentDelivery) as err:
            await d.send(Message(raw=json.dumps(bad).encode(), content_type="fhir"))
    finally:
        await d.close()
    oo = json.loads(err.value.response)
    assert oo["resourceType"] == "OperationOutcome" and "HTTP 400" in str(err.value)


HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\nenv: {{EHR_FHIR_URL: '{url}'}}\n"
CHANNEL = """
name: pm_to_ehr
source: {type: memory, format: hl7v2}
routes:
  - name: to_ehr
    transforms:
      - {type: v2_to_fhir, bundle: transaction}
      - {type: fhir_validate}
    to: [ehr]
destinations:
  ehr:
    type: fhir_rest
    base_url: ${EHR_FHIR_URL}
    queue: {max_attempts: 3, backoff: {initial: 50ms, max: 100ms}}
"""


async def test_through_the_engine_v2_in_fhir_out(tmp_path, fhir_server):
    cfg = load_config(write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db", url=fhir_server), {"pm_to_ehr": CHANNEL}))
    eng = Engine(cfg, idle_poll=0.05, start_web=False)
    await eng.start()
    try:
        src = eng.sources["pm_to_ehr"]
        ok = await src.push((SAMPLES / "hl7v2" / "siu_s12.hl7").read_bytes())
        assert ok.outcome.value == "accepted"
        bad = await src.push((SAMPLES / "hl7v2" / "fhir_oru_bad_nm.hl7").read_bytes())
        assert bad.outcome.value == "rejected" and "not a number" in bad.results[0].reason
        mid = ok.results[0].message_id
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and eng.store.delivery_states(mid) != ["sent"]:
            await asyncio.sleep(0.05)
        delivery = eng.store.get_message(mid)["deliveries"][0]
        assert delivery["status"] == "sent" and "Appointment/" in delivery["response"]  # the entry locations
        appts = await search(fhir_server, "Appointment?identifier=https://example.org/fhir/sid/pm-appointment|APT0001")
        assert len(appts) == 1 and appts[0]["status"] == "booked"
    finally:
        await eng.stop()

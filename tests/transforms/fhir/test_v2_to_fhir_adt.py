"""v2_to_fhir, the patient administration family: ADT (incl. merges), SIU, MDM, BAR, DFT, REF.

For every sample of these types: the conversion succeeds, the Bundle has no validation error, every reference
inside it resolves, and the resources each message type is about exist with their key fields. Then the specific
mappings (merges, appointments, documents, charges, referrals, the PID data-loss cases of issue 12)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest

from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import V2ToFhir, convert, explain
from hub.transforms.fhir.validate import validate
from support import ROOT, SAMPLES, need_peer

HL7 = SAMPLES / "hl7v2"
TYPES = HL7 / "types"
TABLES = load_tables(ROOT / "mappings" / "fhir")
FAMILY = ("adt_", "bar_", "dft_", "mdm_", "ref_", "siu_")
SAMPLE_FILES = sorted(
    [p for p in TYPES.glob("*.hl7") if p.name.startswith(FAMILY)]
    + [
        p
        for p in HL7.glob("*.hl7")
        if p.name.startswith(FAMILY) or p.name.startswith(("fhir_adt_", "fhir_siu_", "fhir_messy_adt"))
    ]
    + [p for p in (TYPES / "messy").glob("*.hl7") if p.name.startswith(FAMILY)]
)
IDS = [str(p.relative_to(HL7)) for p in SAMPLE_FILES]

# what each message type must give (besides the Patient every one of them has)
EXPECTED = {
    "ADT": ("Patient",),
    "SIU": ("Appointment",),
    "MDM": ("DocumentReference",),
    "DFT": ("ChargeItem",),
    "BAR": ("Patient",),
    "REF": ("ServiceRequest",),
}


def convert_file(path, **cfg) -> dict:
    return convert(path.read_bytes(), TABLES, V2ToFhir.Config(type="v2_to_fhir", **cfg))


def sample(name: str) -> dict:
    p = TYPES / name if (TYPES / name).is_file() else HL7 / name
    return convert_file(p)


def of(b: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in b.get("entry", []) if e["resource"]["resourceType"] == rtype]


def entry_of(b: dict, resource: dict) -> dict:
    return next(e for e in b["entry"] if e["resource"] is resource)


def target(b: dict, ref: dict) -> dict:
    return next(e["resource"] for e in b["entry"] if e["fullUrl"] == ref["reference"])


def references(node):
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for v in node.values():
            yield from references(v)
    elif isinstance(node, list):
        for v in node:
            yield from references(v)


def message_type(path) -> str:
    msh = path.read_bytes().lstrip(b"\xef\xbb\xbf").split(b"\r")[0].split(b"\n")[0]
    return msh.split(msh[3:4])[8].split(b"^")[0].decode()


# ---------------------------------------------------------------------------------------------- every sample
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=IDS)
def test_sample_converts_validates_and_links(path) -> None:
    b = convert_file(path)
    assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
    errors = [i for i in validate(b) if i.severity in ("error", "fatal")]
    assert not errors, errors
    full_urls = {e["fullUrl"] for e in b["entry"]}
    for e in b["entry"]:
        for ref in references(e["resource"]):
            assert ref in full_urls, f"{e['resource']['resourceType']} refers to {ref}, not in the Bundle"
    patients = of(b, "Patient")
    assert all(p.get("identifier") for p in patients)
    assert patients or message_type(path) == "SIU"  # S23/S24 block or release time slots: no patient
    for rtype in EXPECTED[message_type(path)]:
        assert of(b, rtype), f"no {rtype}"
    # the clinical and financial resources all point at a patient of the Bundle
    patient_urls = {entry_of(b, p)["fullUrl"] for p in patients}
    for rtype, element in (
        ("AllergyIntolerance", "patient"),
        ("Condition", "subject"),
        ("Coverage", "beneficiary"),
        ("ChargeItem", "subject"),
        ("DocumentReference", "subject"),
        ("Encounter", "subject"),
        ("Procedure", "subject"),
        ("RelatedPerson", "patient"),
    ):
        for r in of(b, rtype):
            assert r[element]["reference"] in patient_urls, (rtype, element)


def test_every_family_sample_is_covered() -> None:
    assert len(SAMPLE_FILES) >= 80


# ---------------------------------------------------------------------------------------- PID data loss (issue 12)
def test_pid_street_name_driver_licence_and_telecom_reach_the_patient() -> None:
    raw = (
        (TYPES / "siu_s14.hl7")
        .read_bytes()
        .replace(
            b"|2186-5^Not Hispanic or Latino^CDCREC",
            b"|2186-5^Not Hispanic or Latino^CDCREC" + b"|" * 18 + b"^NET^Internet^eric@example.net",
        )
    )
    b = convert(raw, TABLES)
    p = of(b, "Patient")[0]
    street = p["address"][0]["_line"][0]["extension"]  # XAD.1.2, the street name of the SAD, as a part of the line (IG)
    assert {
        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-streetName",
        "valueString": "Demo Drive",
    } in street
    dl = [i for i in p["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "DL"]
    assert dl and dl[0]["value"] == "X5550707"  # PID-20
    assert any(t.get("value") == "eric@example.net" for t in p["telecom"])  # PID-40


# ---------------------------------------------------------------------------------------------- merges
def test_a40_merge_marks_the_merged_patient_and_keeps_the_survivor_whole() -> None:
    b = convert_file(HL7 / "adt_a40.hl7")
    survivor, merged = of(b, "Patient")
    assert survivor["identifier"][0]["value"] == "MRN00012345"
    assert merged["identifier"][0]["value"] == "MRN00099999"
    assert merged["active"] is False
    assert merged["link"][0]["type"] == "replaced-by" and target(b, merged["link"][0]["other"]) is survivor
    assert survivor["link"][0]["type"] == "replaces" and target(b, survivor["link"][0]["other"]) is merged
    assert "active" not in survivor
    # the survivor is only filled (a sparse PID never erases); the merged one is written over
    s_req = entry_of(b, survivor)["request"]
    assert s_req["method"] == "POST" and {"url": "urn:hub:fhir:merge", "valueCode": "fill"} in s_req["extension"]
    assert entry_of(b, merged)["request"]["method"] == "PUT"


@pytest.mark.parametrize("name", ["adt_a40.hl7", "adt_a41.hl7", "adt_a42.hl7", "adt_a47.hl7"])
def test_merge_events(name) -> None:
    b = sample(name)
    trigger = name[4:7].upper()
    patients = of(b, "Patient")
    if trigger in ("A40", "A47"):
        assert len(patients) == 2 and patients[1]["active"] is False
    else:  # A41 merges accounts, A42 visits: the patient is not merged
        assert all("active" not in p for p in patients)
        assert all(p.get("link") is None for p in patients)
    if trigger == "A42":
        encs = of(b, "Encounter")
        merged = [e for e in encs if e.get("partOf")]
        assert merged and target(b, merged[0]["partOf"]) in encs
        assert {"url": "urn:hub:fhir:merge", "valueCode": "fill"} in entry_of(b, merged[0])["request"]["extension"]


def test_a47_change_identifier_keeps_the_old_identifier_on_the_merged_patient() -> None:
    b = sample("adt_a47.hl7")
    new, old = of(b, "Patient")
    assert new["identifier"][0]["value"] != old["identifier"][0]["value"]
    assert old["link"][0]["type"] == "replaced-by"


# ---------------------------------------------------------------------------------------------- scheduling
@pytest.mark.parametrize("name", sorted(p.name for p in TYPES.glob("siu_*.hl7")) + ["siu_s12.hl7", "fhir_siu_s15.hl7"])
def test_appointment_has_times_and_participants(name) -> None:
    b = sample(name)
    (appt,) = of(b, "Appointment")
    if appt["status"] not in ("proposed", "cancelled", "waitlist"):
        assert appt["start"] and appt["end"] and appt["start"] <= appt["end"]  # app-3
    assert appt["participant"] and all(
        p.get("status") and (p.get("actor") or p.get("type")) for p in appt["participant"]
    )
    if not of(b, "Patient"):  # a blocked/released slot has no patient
        return
    patient_url = entry_of(b, of(b, "Patient")[0])["fullUrl"]
    assert patient_url in [p.get("actor", {}).get("reference") for p in appt["participant"]]


def test_siu_s12_details() -> None:
    b = convert_file(HL7 / "siu_s12.hl7")
    (appt,) = of(b, "Appointment")
    assert appt["start"] == "2026-03-25T14:00:00-06:00" and appt["end"] == "2026-03-25T14:30:00-06:00"
    assert appt["minutesDuration"] == 30
    assert appt["status"] == "booked"
    assert appt["comment"] == "Patient requests an interpreter (Spanish)."
    assert appt["serviceType"][0]["coding"][0]["code"] == "99213"
    actors = {target(b, p["actor"])["resourceType"] for p in appt["participant"] if "reference" in p.get("actor", {})}
    assert {"Patient", "Practitioner", "Location"} <= actors


def test_siu_times_from_tq1_and_events() -> None:
    b = sample("siu_s24.hl7")  # SCH-11 empty: TQ1-7/8
    (appt,) = of(b, "Appointment")
    assert appt["start"] == "2026-05-19T12:00:00-05:00" and appt["end"] == "2026-05-19T13:00:00-05:00"
    assert (
        of(sample("siu_s15.hl7") if (TYPES / "siu_s15.hl7").is_file() else sample("fhir_siu_s15.hl7"), "Appointment")[
            0
        ]["status"]
        == "cancelled"
    )
    assert of(sample("siu_s17.hl7"), "Appointment")[0]["status"] == "entered-in-error"
    assert of(sample("siu_s26.hl7"), "Appointment")[0]["status"] == "noshow"


# ---------------------------------------------------------------------------------------------- documents
def test_mdm_t02_document_text() -> None:
    b = convert_file(HL7 / "mdm_t02.hl7")
    (doc,) = of(b, "DocumentReference")
    att = doc["content"][0]["attachment"]
    assert att["contentType"] == "text/plain"
    text = base64.b64decode(att["data"]).decode()
    assert text.startswith("SUBJECTIVE:") and "\n" in text
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert target(b, doc["subject"])["resourceType"] == "Patient"


@pytest.mark.parametrize(
    "name", ["mdm_t01.hl7", "mdm_t03.hl7", "mdm_t05.hl7", "mdm_t07.hl7", "mdm_t09.hl7", "mdm_t11.hl7"]
)
def test_mdm_notification_content_from_txa(name) -> None:
    b = sample(name)
    (doc,) = of(b, "DocumentReference")
    assert doc["content"][0]["attachment"].get("title")  # DocumentReference.content 1..* without OBX
    assert doc["masterIdentifier"]["value"] and doc["identifier"][0]["value"] == doc["masterIdentifier"]["value"]


def test_mdm_document_is_linked_to_its_order() -> None:
    b = sample("mdm_t01.hl7")
    (doc,) = of(b, "DocumentReference")
    related = [target(b, r) for r in doc["context"]["related"] if "reference" in r]
    assert related and related[0]["resourceType"] == "ServiceRequest"


# ---------------------------------------------------------------------------------------------- financial
def test_dft_p03_charge_items() -> None:
    b = convert_file(HL7 / "dft_p03.hl7")
    charges = of(b, "ChargeItem")
    assert len(charges) == 2
    c = charges[0]
    assert c["identifier"][0]["value"] == "TXN0001"
    assert c["code"]["coding"][0]["code"] == "99214" and c["code"]["text"] == "Office visit, established patient"
    assert c["priceOverride"] == {"value": 185.0, "currency": "USD"} or c["priceOverride"]["value"] == 185
    assert c["quantity"]["value"] == 1
    assert c["occurrencePeriod"]["start"].startswith("2026-03-20T14:00")
    assert [r["coding"][0]["code"] for r in c["reason"]] == ["E11.9", "I10"]
    assert target(b, c["context"])["resourceType"] == "Encounter"
    assert target(b, c["account"][0])["resourceType"] == "Account"
    assert {target(b, p["actor"])["resourceType"] for p in c["performer"]} == {"Practitioner"}
    guarantor = of(b, "RelatedPerson")
    assert guarantor and target(b, of(b, "Account")[0]["guarantor"][0]["party"]) is guarantor[0]


def test_bar_p06_ends_the_account() -> None:
    b = sample("bar_p06.hl7")
    assert all(a["status"] == "inactive" for a in of(b, "Account"))


# ---------------------------------------------------------------------------------------------- referrals
def test_ref_i12_referral() -> None:
    b = sample("ref_i12.hl7")
    (sr,) = [s for s in of(b, "ServiceRequest") if s["identifier"][0]["value"] == "RFR26050001"]
    assert sr["status"] == "draft" and sr["priority"] == "routine" and sr["intent"] == "order"
    assert sr["occurrencePeriod"] == {"start": "2026-05-04", "end": "2026-11-04"}
    assert target(b, sr["requester"])["name"][0]["family"] == "SMITH"
    assert target(b, sr["performer"][0])["name"][0]["family"] == "BONES"
    assert target(b, sr["subject"])["resourceType"] == "Patient"
    assert {target(b, r)["resourceType"] for r in sr["reasonReference"]} == {"Condition"}
    assert target(b, sr["insurance"][0])["resourceType"] == "Coverage"


# ---------------------------------------------------------------------------------------------- Medplum's validator
MEDPLUM = ROOT / "var" / "test-peers" / "medplum"


def test_medplum_validator_accepts_every_family_bundle(tmp_path) -> None:
    need_peer(shutil.which("node") is not None and MEDPLUM.is_dir(), "node or var/test-peers/medplum not installed")
    files = []
    for i, p in enumerate(SAMPLE_FILES):
        f = tmp_path / f"{i:03d}_{p.stem}.json"
        f.write_text(json.dumps(convert_file(p)))
        files.append(str(f))
    run = subprocess.run(
        ["node", "--experimental-websocket", "tools/medplum_validate.mjs", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    bad = [line for line in run.stdout.splitlines() if not line.endswith(": OK")]
    assert run.returncode == 0 and not bad, "\n".join(bad[:40]) + run.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- IG gaps closed
def unreached(path) -> set[str]:
    """The components ``hub convert --explain`` lists as populated but not reaching the Bundle (in-process: the
    command's own output is tested in test_convert_cli.py)."""
    _, coverage, _ = explain(path.read_bytes(), TABLES)
    return {loc for loc, _, reached in coverage if not reached}


def test_in1_insured_self_is_the_patient_subscriber() -> None:
    b = convert_file(HL7 / "adt_a01.hl7")  # IN1-17 SEL
    cov = next(c for c in of(b, "Coverage") if "subscriber" in c)
    assert target(b, cov["subscriber"])["resourceType"] == "Patient"
    assert not {"IN1-16.1", "IN1-16.2", "IN1-16.3"} & unreached(HL7 / "adt_a01.hl7")


def test_in1_insured_other_than_the_patient_is_a_related_person_subscriber() -> None:
    text = (
        (HL7 / "adt_a01.hl7")
        .read_text()
        .replace("DOE^JANE^Q|SEL^Self^HL70063|19800214|123 MAIN ST", "DOE^JOHN^R|SPO^Spouse^HL70063|19790101|9 OAK ST")
        .replace("XYZ123456789", "XYZ123456789|||||||M||||||JD0001^^^BCBS^MB")
    )
    b = convert(text.encode(), TABLES, V2ToFhir.Config(type="v2_to_fhir"))
    assert not [i for i in validate(b) if i.severity in ("error", "fatal")]
    cov = next(c for c in of(b, "Coverage") if "subscriber" in c)
    rp = target(b, cov["subscriber"])
    assert rp["resourceType"] == "RelatedPerson"
    assert rp["name"][0]["family"] == "DOE" and rp["name"][0]["given"][0] == "JOHN"
    assert rp["birthDate"] == "1979-01-01" and rp["gender"] == "male" and rp["address"][0]["line"][0] == "9 OAK ST"
    assert rp["identifier"][0]["value"] == "JD0001"
    assert target(b, rp["patient"])["resourceType"] == "Patient"
    assert "SPS" in {c["code"] for c in rp["relationship"][0]["coding"]}


def test_pv1_20_financial_class_in_mdm() -> None:
    b = convert_file(HL7 / "mdm_t02.hl7")
    (cov,) = of(b, "Coverage")
    assert cov["type"]["coding"][0]["code"] == "SELF"
    assert "PV1-20" not in unreached(HL7 / "mdm_t02.hl7")


def test_adt_a60_nte_is_a_note_of_the_reaction() -> None:
    b = sample("adt_a60.hl7")
    notes = [n["text"] for a in of(b, "AllergyIntolerance") for n in a.get("note", [])]
    assert any(t.startswith("Rash two days after") for t in notes)
    assert "NTE-3" not in unreached(TYPES / "adt_a60.hl7")


def test_siu_personnel_start_offset_gives_the_participant_period() -> None:
    b = convert_file(HL7 / "siu_s12.hl7")  # AIP-6 empty, AIP-7 30 min: the appointment's start + 30 min
    (appt,) = of(b, "Appointment")
    periods = [p["period"] for p in appt["participant"] if "period" in p]
    assert periods == [{"start": "2026-03-25T14:30:00-06:00"}]
    assert "AIP-7" not in unreached(HL7 / "siu_s12.hl7")


def test_siu_ais_10_status_when_sch_gives_none() -> None:
    text = (HL7 / "fhir_siu_s13.hl7").read_text()
    text = text.replace("|||||Booked^Booked^HL70278", "|||||").replace(
        "|20|min^minutes^ANS+\n", "|20|min^minutes^ANS+||Complete\n", 1
    )
    b = convert(text.encode(), TABLES, V2ToFhir.Config(type="v2_to_fhir"))
    assert of(b, "Appointment")[0]["status"] == "fulfilled"


def test_mdm_obx_type_and_status_when_txa_gives_none() -> None:
    text = (HL7 / "mdm_t02.hl7").read_text().replace("TXA|1|PN|", "TXA|1||").replace("|||||AU", "|||||")
    b = convert(text.encode(), TABLES, V2ToFhir.Config(type="v2_to_fhir"))
    (doc,) = of(b, "DocumentReference")
    assert doc["type"]["coding"][0] == {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
    assert doc["docStatus"] == "final"
    # with TXA-2/TXA-17 valued they decide
    (doc,) = of(convert_file(HL7 / "mdm_t02.hl7"), "DocumentReference")
    assert doc["type"]["coding"][0]["code"] == "PN"


def test_procedure_rol_is_a_performer() -> None:
    b = sample("bar_p12.hl7")
    (proc,) = of(b, "Procedure")
    roles = {c.get("code") for p in proc["performer"] for c in p.get("function", {}).get("coding", [])}
    assert "PP" in roles
    assert not {"ROL-3.1", "ROL-4.1"} & unreached(TYPES / "bar_p12.hl7")


def test_adt_a09_v25_dg1_is_a_condition() -> None:
    b = sample("adt_a09.hl7")
    (cond,) = of(b, "Condition")
    assert cond["code"]["coding"][0]["code"] == "R55"
    assert not {"DG1-3.1", "DG1-5"} & unreached(TYPES / "adt_a09.hl7")

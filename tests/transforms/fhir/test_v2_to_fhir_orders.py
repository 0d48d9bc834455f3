"""v2_to_fhir, orders/results/pharmacy/immunization family: ORU, OUL, ORM, OML, OMG, RDE, RDS, VXU.

Every sample of these types converts to a transaction Bundle that fhir_validate accepts, with the resources the
message tables make, the references they need resolved inside the Bundle, and the fields the tables map."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from hub.transforms.fhir.v2_to_fhir import convert
from hub.transforms.fhir.validate import validate
from support import ROOT, SAMPLES, need_peer

HL7 = SAMPLES / "hl7v2"
TYPES = [
    "oru_r01",
    "oru_r30",
    "oul_r21",
    "oul_r22",
    "oul_r23",
    "oul_r24",
    "omg_o19",
    "oml_o21",
    "orm_o01",
    "rde_o11",
    "rde_o25",
    "rds_o13",
    "vxu_v04",
]
SAMPLE_FILES = [f"types/{t}.hl7" for t in TYPES] + [
    "oru_r01.hl7",
    "orm_o01.hl7",
    "oml_o21.hl7",
    "rde_o11.hl7",
    "vxu_v04.hl7",
    "fhir_oru_types.hl7",
    "fhir_oru_two_orders.hl7",
]

# resource → the reference elements that must be present and resolve inside the Bundle
REQUIRED_REFS = {
    "Observation": ["subject"],
    "DiagnosticReport": ["subject"],
    "ServiceRequest": ["subject"],
    "Specimen": ["subject"],
    "MedicationRequest": ["subject"],
    "MedicationDispense": ["subject"],
    "Immunization": ["patient"],
    "Condition": ["subject"],
    "AllergyIntolerance": ["patient"],
    "Coverage": ["beneficiary"],
}


def bundle(name: str) -> dict:
    return convert((HL7 / name).read_bytes())


def of(b: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == rtype]


def urls(b: dict) -> dict[str, dict]:
    return {e["fullUrl"]: e["resource"] for e in b["entry"]}


def target(b: dict, ref: dict) -> dict:
    return urls(b)[ref["reference"]]


def refs_in(node, out: list) -> list:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            out.append(node["reference"])
        for v in node.values():
            refs_in(v, out)
    elif isinstance(node, list):
        for v in node:
            refs_in(v, out)
    return out


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_converts_validates_and_references_resolve(name):
    b = bundle(name)
    assert b["type"] == "transaction"
    assert [i for i in validate(b) if i.severity == "error"] == []
    known = urls(b)
    for e in b["entry"]:
        res = e["resource"]
        for r in refs_in(res, []):
            assert r in known, f"{res['resourceType']} refers to {r}, not in the Bundle"
        for el in REQUIRED_REFS.get(res["resourceType"], []):
            assert el in res and res[el]["reference"] in known, f"{name}: {res['resourceType']}.{el}"


def test_oru_every_obr_a_report_and_an_order_every_obx_an_observation():
    b = bundle("types/oru_r01.hl7")
    text = (HL7 / "types/oru_r01.hl7").read_bytes().replace(b"\n", b"\r").split(b"\r")
    n_obr = sum(1 for s in text if s.startswith(b"OBR|"))
    n_obx = sum(1 for s in text if s.startswith(b"OBX|"))
    reports, orders, obs = of(b, "DiagnosticReport"), of(b, "ServiceRequest"), of(b, "Observation")
    assert len(reports) == n_obr == 4 and len(orders) == n_obr
    assert len(obs) == n_obx
    for dr in reports:
        assert target(b, dr["basedOn"][0])["resourceType"] == "ServiceRequest"
    assert (
        sum(len(dr.get("result", [])) for dr in reports) == n_obx - 2
    )  # the two OBX before the first order are the patient's


def test_oru_repeated_obx5_keeps_every_repetition():
    b = bundle("types/oru_r01.hl7")
    (gtt,) = [o for o in of(b, "Observation") if o["code"]["coding"][0]["code"] == "GTTDRAW"]
    assert [c["valueQuantity"]["value"] for c in gtt["component"]] == [60, 120]
    assert gtt["component"][1]["valueQuantity"]["code"] == "min"


def test_oru_specimen_from_spm_and_obr13_note():
    b = bundle("types/oru_r01.hl7")
    (spm,) = of(b, "Specimen")
    assert spm["type"]["coding"][0]["code"] == "119364003"
    assert spm["collection"]["method"]["coding"][0]["code"] == "28520004"
    reports = of(b, "DiagnosticReport")
    assert any(r.get("specimen") and target(b, r["specimen"][0]) == spm for r in reports)
    notes = [n["text"] for sr in of(b, "ServiceRequest") for n in sr.get("note", [])]
    assert "Warfarin 5 mg daily" in notes  # OBR-13 relevant clinical information


def test_oru_identifiers_and_report_conclusion():
    b = bundle("oru_r01.hl7")
    (dr,) = of(b, "DiagnosticReport")
    assert {i["type"]["coding"][0]["code"]: i["value"] for i in dr["identifier"]} == {
        "FILL": "LAB77001",
        "PLAC": "ORD448811",
    }
    (sr,) = of(b, "ServiceRequest")
    assert sr["status"] == "completed" and sr["requester"]["display"]
    assert next(e for e in b["entry"] if e["resource"] is sr)["request"]["url"].endswith("|ORD448811")  # keyed on PLAC
    types = bundle("fhir_oru_types.hl7")
    (dr2,) = of(types, "DiagnosticReport")
    assert dr2["conclusion"] == "Collected at the clinic."
    sn = {o["code"]["coding"][0]["code"]: o for o in of(types, "Observation")}["5811-5"]
    assert sn["valueQuantity"]["value"] == 1.015 and "dataAbsentReason" not in sn  # SN ^1.015 is a value


def test_oul_specimen_oriented_reports_refer_to_their_specimen():
    for name in ("types/oul_r22.hl7", "types/oul_r23.hl7", "types/oul_r24.hl7"):
        b = bundle(name)
        spms = of(b, "Specimen")
        assert spms, name
        for dr in of(b, "DiagnosticReport"):
            assert dr.get("specimen"), name
            assert target(b, dr["specimen"][0])["resourceType"] == "Specimen"


def test_orm_oml_omg_orders():
    orm = bundle("orm_o01.hl7")
    (sr,) = of(orm, "ServiceRequest")
    assert sr["priority"] == "routine" and sr["status"] == "active" and sr["intent"] == "order"
    assert target(orm, sr["reasonReference"][0])["code"]["coding"][0]["code"] == "E11.9"
    assert target(orm, sr["insurance"][0])["resourceType"] == "Coverage"
    assert sr["requisition"]["value"] == "GRP448811"
    oml = bundle("oml_o21.hl7")
    (sr2,) = of(oml, "ServiceRequest")
    assert sr2["priority"] == "routine"  # TQ1-9
    assert target(oml, sr2["specimen"][0])["type"]["coding"][0]["code"] == "119297000"
    omg = bundle("types/omg_o19.hl7")
    (sr3,) = of(omg, "ServiceRequest")
    assert sr3["supportingInfo"] and all(target(omg, r)["resourceType"] == "Observation" for r in sr3["supportingInfo"])


def test_rde_medication_request():
    b = bundle("rde_o11.hl7")
    (mr,) = of(b, "MedicationRequest")
    assert mr["medicationCodeableConcept"]["coding"][0]["code"] == "860975" and mr["status"] == "active"
    assert mr["dispenseRequest"]["quantity"] == {
        "value": 60,
        "unit": "tablet",
        "system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
        "code": "TAB",
    }
    assert mr["dispenseRequest"]["numberOfRepeatsAllowed"] == 3
    dose = mr["dosageInstruction"][0]
    assert dose["route"]["coding"][-1]["code"] == "PO" and dose["timing"]["code"]["coding"][0]["code"] == "BID"
    assert dose["timing"]["repeat"]["boundsPeriod"] == {"start": "2026-03-17", "end": "2026-06-16"}
    assert dose["doseAndRate"][0]["doseQuantity"]["value"] == 1 and dose["text"] == "Take with meals"
    assert target(b, mr["subject"])["resourceType"] == "Patient"


def test_rds_dispense_points_to_its_prescription():
    b = bundle("types/rds_o13.hl7")
    (mr,) = of(b, "MedicationRequest")
    (md,) = of(b, "MedicationDispense")
    assert target(b, md["authorizingPrescription"][0]) == mr
    assert md["status"] == "completed" and md["quantity"]["value"] == 90
    assert md["substitution"]["wasSubstituted"] is True
    assert [n["text"] for n in md["note"]] == [
        "Generic substituted; counseling offered",
        "Patient picked up at counter.",
    ]
    assert mr["substitution"]["allowedCodeableConcept"]["coding"][0]["code"] == "G"


def test_vxu_immunization():
    b = bundle("vxu_v04.hl7")
    (imm,) = of(b, "Immunization")
    assert imm["vaccineCode"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/cvx",
        "code": "141",
        "display": "Influenza, seasonal, injectable",
    }
    assert imm["status"] == "completed" and imm["lotNumber"] == "LOT12345" and imm["expirationDate"] == "2027-06-30"
    assert imm["doseQuantity"]["value"] == 0.5 and imm["primarySource"] is True
    assert imm["programEligibility"][0]["coding"][0]["code"] == "V02"  # OBX 64994-7
    functions = sorted(p["function"]["coding"][0]["code"] for p in imm["performer"])
    assert functions == ["AP", "OP"]  # RXA-10 and ORC-12 both kept
    (obs,) = of(b, "Observation")  # the OBX is an Observation too, part of the immunization
    assert target(b, obs["partOf"][0]) == imm


def test_invalid_dates_are_left_out_not_written():
    msg = (
        b"MSH|^~\\&|LAB|LAB|EHR|EHR|20220301||ORU^R01^ORU_R01|X1|P|2.5.1\r"
        b"PID|1||123^^^HOSP^MR||DOE^JANE||19800101|F\r"
        b"OBR|1|P1^EHR|F1^LAB|94500-6^SARS-CoV-2 RNA^LN|||201701222656|||||||20220229\r"
        b"OBX|1|DT|11368-8^Onset^LN||99999999||||||F|||20220229\r"
        b"SPM|1|S1^EHR||258500001^Nasopharyngeal swab^SCT|||||||||||||20220229|20220230\r"
    )
    b = convert(msg)
    assert [i for i in validate(b) if i.severity == "error"] == []
    text = json.dumps(b)
    for bad in ("2022-02-29", "2022-02-30", "9999-99-99", "26:56"):
        assert bad not in text


def test_specimen_collection_time_from_spm17():
    (sp,) = of(bundle("oml_o21.hl7"), "Specimen")
    assert sp["collection"]["collectedDateTime"] == "2026-03-16T10:10:00-06:00"  # SPM-17 (DR.1 only): a dateTime
    msg = (
        b"MSH|^~\\&|LAB|LAB|EHR|EHR|20220301||ORU^R01^ORU_R01|X2|P|2.5.1\r"
        b"PID|1||123^^^HOSP^MR||DOE^JANE||19800101|F\r"
        b"OBR|1|P1^EHR|F1^LAB|94500-6^SARS-CoV-2 RNA^LN\r"
        b"SPM|1|S1^EHR||258500001^Nasopharyngeal swab^SCT|||||||||||||202202280800^202202280815\r"
    )
    (sp,) = of(convert(msg), "Specimen")
    assert sp["collection"]["collectedPeriod"] == {
        "start": "2022-02-28T08:00:00Z",
        "end": "2022-02-28T08:15:00Z",
    }  # SPM-17.2: a Period


def test_oml_every_order_group_is_a_service_request():
    """An ORC after SPM/SAC opens the next ORDER (not a prior result): the second order, its TQ1 and OBR, reach
    the Bundle."""
    b = bundle("types/oml_o21.hl7")
    srs = of(b, "ServiceRequest")
    assert sorted(i["value"] for sr in srs for i in sr["identifier"] if i["type"]["coding"][0]["code"] == "PLAC") == [
        "ORD90051",
        "ORD90052",
    ]
    second = next(sr for sr in srs if any(i["value"] == "ORD90052" for i in sr["identifier"]))
    assert second["priority"] == "routine" and second["code"]["coding"][0]["code"] == "3016-3"  # TQ1[2]-9, OBR[2]-4
    assert second["occurrenceTiming"]["repeat"]["boundsPeriod"]["start"].startswith("2026-05-02")  # TQ1[2]-7


def test_ordering_facility_makes_the_requester_a_practitioner_role():
    b = bundle("types/omg_o19.hl7")
    (sr,) = of(b, "ServiceRequest")
    role = target(b, sr["requester"])
    assert role["resourceType"] == "PractitionerRole"
    assert target(b, role["practitioner"])["identifier"][0]["value"] == "1234567893"  # ORC-12
    org = target(b, role["organization"])  # ORC-21, ORC-22, ORC-23
    assert org["name"] == "EXAMPLE CLINIC" and org["address"][0]["city"] == "Anytown"
    assert org["telecom"][0]["value"] == "+1 (217) 555-0190"
    (acct,) = of(b, "Account")  # PID-18
    assert (
        acct["identifier"][0]["value"] == "ACCT50000707" and target(b, acct["subject"][0])["resourceType"] == "Patient"
    )
    (mr,) = of(bundle("types/rde_o25.hl7"), "MedicationRequest")
    assert mr["requester"]["reference"]  # a PractitionerRole too (ORC-21 … ORC-23)


def test_ordering_provider_address_and_a_facility_known_by_name_only():
    msg = (
        b"MSH|^~\\&|LAB|LAB|EHR|EHR|20220301||ORU^R01^ORU_R01|X3|P|2.5.1\r"
        b"PID|1||123^^^HOSP^MR||DOE^JANE||19800101|F\r"
        b"ORC|RE|P1^EHR|F1^LAB|||||||||1234567893^Hane^Cornelius^^^^^^NPI&2.16.840.1.113883.4.6&ISO^^^^NPI|||||||||"
        b"Any facility USA^L|7143 Wilford Meadow^^Springfield^IL|^WPN^PH^^1^235^6754082"
        b"|395 Tenesha Stravenue^^Springfield^IL\r"
        b"OBR|1|P1^EHR|F1^LAB|94500-6^SARS-CoV-2 RNA^LN\r"
        b"OBX|1|ST|94500-6^SARS-CoV-2 RNA^LN||Detected||||||F\r"
    )
    b = convert(msg)
    assert [i for i in validate(b) if i.severity == "error"] == []
    (sr,) = of(b, "ServiceRequest")
    role = target(b, sr["requester"])
    assert target(b, role["practitioner"])["address"][0]["line"] == ["395 Tenesha Stravenue"]  # ORC-24
    org = target(b, role["organization"])  # no XON identifier: one derived, so its address and phone are kept
    assert org["name"] == "Any facility USA" and org["identifier"][0]["system"].endswith("Organization")
    assert org["address"][0]["line"] == ["7143 Wilford Meadow"] and org["telecom"][0]["system"] == "phone"
    # without a facility the requester stays the Practitioner
    (sr,) = of(bundle("orm_o01.hl7"), "ServiceRequest")
    assert sr["requester"]["display"] == "ROBERT A SMITH"


def test_obx18_equipment_is_a_device():
    b = bundle("types/oru_r30.hl7")
    devices = {target(b, o["device"])["identifier"][0]["value"] for o in of(b, "Observation") if "device" in o}
    assert devices == {"GM-55501", "CG-22301"}


def _with_field(name: str, seg: str, n: int, value: str, nth: int = 1) -> bytes:
    """A sample with field ``n`` of its ``nth`` ``seg`` segment set to ``value``."""
    segs = (HL7 / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    k = 0
    for i, s in enumerate(segs):
        if s.startswith(seg.encode() + b"|"):
            k += 1
            if k == nth:
                f = s.split(b"|")
                f += [b""] * (n + 1 - len(f))
                f[n] = value.encode()
                segs[i] = b"|".join(f)
                break
    assert k == nth, f"{name} has no {seg} #{nth}"
    return b"\r".join(segs)


@pytest.mark.parametrize(
    "t", [t for t in TYPES if b"\rPV1|" in (HL7 / f"types/{t}.hl7").read_bytes().replace(b"\n", b"\r")]
)
def test_pv1_20_financial_class_is_a_coverage_in_every_order_and_result_message(t):
    b = convert(_with_field(f"types/{t}.hl7", "PV1", 20, "SP^Self pay^HL70064"))
    assert [i for i in validate(b) if i.severity == "error"] == []
    (cov,) = [c for c in of(b, "Coverage") if c.get("type", {}).get("coding", [{}])[0].get("code") == "SP"]
    patient = of(b, "Patient")[0]
    assert target(b, cov["beneficiary"]) == patient and target(b, cov["payor"][0]) == patient


def test_obr24_diagnostic_service_section_is_the_order_category():
    (sr,) = of(bundle("types/mdm_t08.hl7"), "ServiceRequest")  # MDM: the OBR is the document's order
    assert [c["code"] for c in sr["category"][0]["coding"]] == ["RAD", "RAD"]
    assert sr["category"][0]["coding"][1]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0074"
    cats = sorted(
        c["coding"][0]["code"] for sr in of(bundle("types/orm_o01.hl7"), "ServiceRequest") for c in sr["category"]
    )
    assert cats == ["CH", "CT"]


def test_spm14_description_each_repetition_a_note_and_spm20_availability_the_status():
    b = convert(_with_field("types/oul_r22.hl7", "SPM", 14, "Slightly hemolyzed~Lipemic"))
    (spm,) = of(b, "Specimen")
    assert [n["text"] for n in spm["note"]] == ["Slightly hemolyzed", "Lipemic"]
    assert spm["status"] == "available"  # SPM-20 Y (the code map's name was misspelt: Y was left out as invalid)


def test_obx6_units_of_a_numeric_range():
    b = bundle("types/oru_r01.hl7")
    (goal,) = [o for o in of(b, "Observation") if o["code"]["coding"][0]["code"] == "INRGOAL"]
    rng = goal["valueRange"]
    assert (rng["low"]["value"], rng["high"]["value"]) == (2.0, 3.0)
    assert rng["low"]["code"] == rng["high"]["code"] == "{INR}" and rng["low"]["system"] == "http://unitsofmeasure.org"


def test_nte4_comment_type_on_the_note():
    b = convert(_with_field("types/oml_o21.hl7", "NTE", 4, "RE^Remark^HL70364", nth=2))  # the second order's NTE
    notes = [
        n for sr in of(b, "ServiceRequest") for n in sr.get("note", []) if n["text"] == "Same draw as lipid panel."
    ]
    (ext,) = notes[0]["extension"]
    assert ext["url"] == "http://hl7.org/fhir/StructureDefinition/annotationType"
    assert ext["valueCodeableConcept"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0364",
        "code": "RE",
        "display": "Remark",
    }
    b = convert(_with_field("types/oru_r01.hl7", "NTE", 4, "RE^Remark^HL70364", nth=2))  # after an OBX
    typed = [n for o in of(b, "Observation") for n in o.get("note", []) if n.get("extension")]
    assert [n["text"] for n in typed] == ["Non-fasting specimen."]


def test_medplum_validator_accepts_every_sample(tmp_path):
    need_peer(
        shutil.which("node") is not None and (ROOT / "var/test-peers/medplum").exists(),
        "node or var/test-peers/medplum (Medplum's validator) not installed",
    )
    files = []
    for name in SAMPLE_FILES:
        p = tmp_path / (name.replace("/", "_") + ".json")
        p.write_text(json.dumps(bundle(name)))
        files.append(str(p))
    out = subprocess.run(
        ["node", "--experimental-websocket", "tools/medplum_validate.mjs", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert out.returncode == 0 and lines and all(ln.endswith(": OK") for ln in lines), out.stdout + out.stderr

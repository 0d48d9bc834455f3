"""FHIR documents (FHIRPath-subset paths, meta) and validation (fhir.resources R4B + required bindings + Bundle rules)."""

from __future__ import annotations

import copy
import json

import pytest

from support import SAMPLES
from hub.errors import FhirParseError, MappingError, ValidationError
from hub.message import Message
from hub.transforms.document import extract_meta, parse_document, validate_document
from hub.transforms.fhir.document import parse
from hub.transforms.fhir.v2_to_fhir import convert
from hub.transforms.fhir.validate import FhirValidate, operation_outcome, validate

ADT = convert((SAMPLES / "hl7v2" / "adt_a01.hl7").read_bytes())
RAW = json.dumps(ADT).encode()


def test_paths_read_resources_and_bundles():
    doc = parse_document("fhir", RAW)
    assert doc.get("Bundle.type") == "transaction"
    assert doc.get("Patient.name[0].family") == "DOE"  # a resource type on a Bundle reads its entries
    assert doc.get_all("Patient.name.given") == ["JANE", "Q"]
    assert doc.get("Bundle.entry.resource.where(resourceType='Encounter').status") == "in-progress"
    assert doc.get("Patient.identifier.where(type.coding.code='PI').value") == "E998877"
    assert doc.get("Observation[1].value.value") == "68.5"  # choice element, second Observation
    assert doc.get("Bundle.entry.count()") == str(len(ADT["entry"]))
    assert doc.get("Patient.deceased") is None
    assert doc.get("Bundle.entry[0].request.method") == "PUT"
    single = parse(json.dumps(ADT["entry"][0]["resource"]))
    assert single.get("Patient.gender") == "female" and single.get("gender") == "female"


def test_set_delete_and_exact_bytes():
    assert parse(RAW).to_bytes() == RAW  # unmodified: the very bytes
    doc = parse(RAW)
    doc.set("Patient.gender", "male")
    doc.set("Patient.name[0].given[1]", "QUINN")
    doc.set("Patient.telecom[5].value", "x@example.org")  # past the end: appended
    doc.set("Observation[0].value.value", "170")  # a number stays a number
    doc.delete("Patient.birthDate")
    out = json.loads(doc.to_bytes())
    p = out["entry"][0]["resource"]
    assert p["gender"] == "male" and p["name"][0]["given"] == ["JANE", "QUINN"] and "birthDate" not in p
    assert p["telecom"][5] == {"value": "x@example.org"}
    assert next(e["resource"] for e in out["entry"] if e["resource"]["resourceType"] == "Observation")["valueQuantity"]["value"] == 170
    with pytest.raises(MappingError):
        doc.get("Patient..name")


def test_parse_errors_and_bom():
    assert parse(b"\xef\xbb\xbf" + RAW).get("Bundle.type") == "transaction"
    with pytest.raises(FhirParseError):
        parse(b"{not json")
    with pytest.raises(FhirParseError, match="resourceType"):
        parse(b'{"a": 1}')


def test_meta_indexes_the_bundle():
    meta = extract_meta("fhir", parse(RAW))
    assert meta["message_type"] == "Bundle^transaction" and meta["control_id"] == "ADT00001" and meta["patient_id"] == "MRN00012345"


def test_validation_finds_model_binding_and_bundle_problems():
    bad = copy.deepcopy(ADT)
    p = bad["entry"][0]["resource"]
    p["gender"] = "femalex"
    p["birthDate"] = "1980-13-45"
    obs = next(e["resource"] for e in bad["entry"] if e["resource"]["resourceType"] == "Observation")
    obs["colour"] = "blue"
    obs2 = [e["resource"] for e in bad["entry"] if e["resource"]["resourceType"] == "Observation"][1]
    del obs2["status"]
    bad["entry"][1]["fullUrl"] = bad["entry"][0]["fullUrl"]
    del bad["entry"][2]["request"]
    issues = validate(bad)
    where = {(i.location, i.code) for i in issues}
    assert ("Bundle.entry[0].resource.gender", "code-invalid") in where
    assert ("Bundle.entry[0].resource.birthDate", "value") in where
    i_obs = next(i for i, e in enumerate(bad["entry"]) if e["resource"] is obs)
    i_obs2 = next(i for i, e in enumerate(bad["entry"]) if e["resource"] is obs2)
    assert (f"Bundle.entry[{i_obs2}].resource.status", "required") in where
    assert (f"Bundle.entry[{i_obs}].resource.colour", "structure") in where
    assert ("Bundle.entry[1].fullUrl", "invariant") in where
    assert ("Bundle.entry[2].request", "required") in where
    assert all(i.severity == "error" for i in issues)
    dangling = copy.deepcopy(ADT)
    dangling["entry"] = dangling["entry"][1:]  # the Patient is gone: references to it dangle
    assert any(i.code == "not-found" for i in validate(dangling))
    oo = operation_outcome(issues)
    assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["severity"] == "error" and oo["issue"][0]["expression"]


def test_validators_by_level_and_the_transform():
    assert validate_document("fhir", parse(b'{"resourceType": "Nonsense"}'), "basic")[0].code == "code-invalid"
    assert validate_document("fhir", parse(RAW), "strict") == []
    t = FhirValidate(FhirValidate.Config(type="fhir_validate"), None)
    ok = Message(raw=RAW, content_type="fhir")
    assert t(ok) is ok
    bad = copy.deepcopy(ADT)
    bad["entry"][0]["resource"]["gender"] = "nope"
    with pytest.raises(ValidationError) as err:
        t(Message(raw=json.dumps(bad).encode(), content_type="fhir"))
    assert "Bundle.entry[0].resource.gender" in str(err.value) and err.value.code == "code-invalid"

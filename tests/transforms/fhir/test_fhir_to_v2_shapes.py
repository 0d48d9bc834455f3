"""fhir_to_v2 on JSON that is not shaped as R4 has it: the project's MappingError with the validator's location,
never AttributeError/KeyError/TypeError (issue 13: dozens of crash sites found by fuzzing)."""

from __future__ import annotations

import json

import pytest

from hub.errors import MappingError
from hub.message import Message
from hub.transforms.fhir.document import FhirDocument, meta
from hub.transforms.fhir.fhir_to_v2 import FhirToV2, to_v2

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://example.org/fhir/sid/clinic-mrn", "value": "MRN1"}],
    "name": [{"family": "SAMPLE", "given": ["PAT"]}],
    "telecom": [{"system": "phone", "value": "+1 (555) 555-0100"}],
    "address": [{"line": ["1 MAIN ST"], "city": "TOWN"}],
    "birthDate": "1980-01-01",
}


def with_(**changes):
    return {**PATIENT, **changes}


SHAPES = [
    ({"resourceType": "Patient", "name": ["x"]}, "Patient.name[0]"),  # the issue's example: a string for a HumanName
    (with_(identifier={"value": "MRN1"}), "Patient.identifier"),  # an object where R4 has a list
    (with_(name=[{"family": ["SAMPLE"]}]), "Patient.name[0].family"),  # a list where R4 has one string
    (with_(name=[{"given": "PAT"}]), "Patient.name[0].given"),  # one string where R4 has a list
    (with_(birthDate=19800101), "Patient.birthDate"),  # a number where R4 has a string
    (with_(telecom=[{"system": {"x": 1}, "value": "1"}]), "Patient.telecom[0].system"),
    (with_(address=[{"line": "1 MAIN ST"}]), "Patient.address[0].line"),
    (with_(address=[True]), "Patient.address[0]"),
    (with_(identifier=[["MRN1"]]), "Patient.identifier[0]"),
    (with_(extension=[{"url": 5, "valueString": "x"}]), "Patient.extension[0].url"),
    ({"resourceType": "Bundle", "type": "collection", "entry": True}, "Bundle.entry"),
    (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]},
        "Bundle.entry[0].resource.resourceType",
    ),
    (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": {"a": 1}, "resource": PATIENT}]},
        "Bundle.entry[0].fullUrl",
    ),
    (
        {"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}, "subject": "Patient/1"},
        "Encounter.subject",
    ),
    (
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, "result": [7]},
        "DiagnosticReport.result[0]",
    ),
]


@pytest.mark.parametrize("data,location", SHAPES, ids=[s[1] for s in SHAPES])
def test_wrongly_shaped_json_is_a_mapping_error_with_its_location(data, location):
    with pytest.raises(MappingError) as caught:
        to_v2(data)
    err = caught.value
    assert err.location == location and err.code == "structure"
    assert location in str(err) and err.issues and err.issues[0].location == location


@pytest.mark.parametrize("data,location", SHAPES[:4], ids=[s[1] for s in SHAPES[:4]])
def test_the_transform_refuses_it_too(data, location):
    t = FhirToV2(FhirToV2.Config(type="fhir_to_v2"), None)
    with pytest.raises(MappingError) as caught:
        t(Message(raw=json.dumps(data).encode(), content_type="fhir"))
    assert caught.value.location == location


def test_well_shaped_content_still_maps():
    m = to_v2(PATIENT)
    assert m.get("PID-5.1") == "SAMPLE" and m.get("PID-7") == "19800101" and m.get("PID-11.1") == "1 MAIN ST"
    # an unknown element is not a shape problem: it is left out, as before
    assert to_v2(with_(favouriteColour="green")).get("PID-5.1") == "SAMPLE"


@pytest.mark.parametrize(
    "data",
    [
        {"resourceType": "Bundle", "type": "message", "entry": True},
        {"resourceType": "Bundle", "type": ["message"], "identifier": {"value": ["x"]}, "id": {"a": 1}},
        {
            "resourceType": "Bundle",
            "type": "message",
            "entry": [{"resource": {"resourceType": "MessageHeader", "eventCoding": ["x"], "source": 3, "id": 7}}],
        },
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "identifier": 1.5}}],
        },
        {"resourceType": "Patient", "identifier": [{"value": {"x": 1}}], "id": ["p"]},
    ],
)
def test_metadata_of_wrongly_shaped_json_is_text_or_absent(data):
    out = meta(FhirDocument(data))
    assert all(v is None or isinstance(v, str) for v in out.values()), out

"""fhir_to_v2, and the round trip v2 → FHIR → v2 field by field for every mapped field."""

from __future__ import annotations

import json

import pytest

from hub.errors import MappingError
from hub.message import Message
from hub.transforms.fhir.fhir_to_v2 import FhirToV2, to_v2
from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import convert, dumps
from hub.transforms.hl7v2 import parse
from support import ROOT, SAMPLES

TABLES = load_tables(ROOT / "mappings" / "fhir")

PID = [
    "PID-3[1]",
    "PID-3[2]",
    "PID-5",
    "PID-6.1",
    "PID-7",
    "PID-8",
    "PID-11",
    "PID-13[1]",
    "PID-13[2]",
    "PID-14",
    "PID-15",
    "PID-16",
    "PID-19",
    "PID-22.1",
]
PV1 = [
    "PV1-2",
    "PV1-3",
    "PV1-7.1",
    "PV1-7.2",
    "PV1-7.3",
    "PV1-7.6",
    "PV1-7.7",
    "PV1-7.9",
    "PV1-7.13",
    "PV1-8.1",
    "PV1-10",
    "PV1-17.1",
    "PV1-19",
    "PV1-44",
    "PV1-45",
]
FIELDS = {
    "adt_a01.hl7": (
        dict(adt_trigger="A01"),
        PID
        + PV1
        + [
            "MSH-10",
            "EVN-1",
            "PV2-3",
            "NK1-2",
            "NK1-3",
            "NK1-4",
            "NK1-5",
            "NK1-7",
            "AL1-2",
            "AL1-3",
            "AL1-4.1",
            "AL1-5",
            "DG1-3",
            "DG1-5",
            "DG1-6",
        ],
    ),
    "adt_a04.hl7": (dict(adt_trigger="A04"), PID + PV1 + ["MSH-9.2", "EVN-1"]),
    "fhir_adt_a03.hl7": (dict(adt_trigger="A08"), PID + PV1 + ["PV1-6"]),
    "fhir_adt_a02.hl7": (dict(adt_trigger="A08"), ["PV1-3", "PV1-6"]),
    "orm_o01.hl7": (
        {},
        PID[:6] + ["ORC-1", "ORC-2", "ORC-4", "ORC-9", "ORC-12.1", "OBR-2", "OBR-4", "OBR-16.1", "DG1-3", "MSH-9"],
    ),
    "oml_o21.hl7": (dict(order_message="OML"), ["PID-3[1]", "ORC-2", "OBR-4", "TQ1-7", "TQ1-9.1", "MSH-9"]),
    "siu_s12.hl7": (
        {},
        [
            "PID-3[1]",
            "PID-5",
            "SCH-1",
            "SCH-2",
            "SCH-7",
            "SCH-8",
            "SCH-9",
            "SCH-11.3",
            "SCH-11.4",
            "SCH-11.5",
            "SCH-25.1",
            "AIS-3",
            "AIS-4",
            "AIL-3",
            "AIP-3.1",
            "AIP-3.2",
            "AIP-4",
            "NTE-3",
            "MSH-9",
        ],
    ),
    "fhir_siu_s15.hl7": ({}, ["SCH-1", "SCH-25.1", "MSH-9.2"]),
    "rde_o11.hl7": (
        {},
        [
            "PID-3[1]",
            "ORC-1",
            "ORC-2",
            "ORC-9",
            "ORC-12.1",
            "RXE-1.2",
            "RXE-2",
            "RXE-3",
            "RXE-5.1",
            "RXE-7",
            "RXE-10",
            "RXE-11.1",
            "RXE-12",
            "TQ1-3.1",
            "TQ1-7",
            "TQ1-8",
            "RXR-1",
            "AL1-3",
            "MSH-9",
        ],
    ),
    "oru_r01.hl7": (
        {},
        [
            "PID-3[1]",
            "PID-5",
            "ORC-2",
            "ORC-3",
            "OBR-2",
            "OBR-3",
            "OBR-4",
            "OBR-7",
            "OBR-22",
            "OBR-25",
            "NTE-3",
            "MSH-9",
        ]
        # (OBX[9] TX comes back as ST: both are valueString)
        + [f"OBX[{i}]-{f}" for i in range(1, 10) for f in (1, 2, 3, 5, 6, 7, 8, 11, 14) if (i, f) != (9, 2)]
        + ["OBX[10]-3", "OBX[10]-7", "OBX[10]-11"],
    ),
    # (OBX[3] SN without a comparator comes back as NM, OBX[7] TM 0830 as 083000: the same values)
    "fhir_oru_types.hl7": (
        {},
        [f"OBX[{i}]-{f}" for i in (2, 4, 5, 8, 9) for f in (3, 5, 11)]
        + ["OBX[3]-3", "OBX[7]-3", "OBX[9]-6", "OBX[4]-6", "OBR-25"],
    ),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_round_trip_keeps_the_mapped_fields(name):
    cfg, fields = FIELDS[name]
    original = parse((SAMPLES / "hl7v2" / name).read_bytes())
    back = to_v2(convert(original, TABLES), TABLES, FhirToV2.Config(type="fhir_to_v2", **cfg))
    again = parse(back.to_bytes())  # what we wrote reads back as valid ER7
    diffs = {f: (original.get(f), again.get(f)) for f in fields if original.get(f) != again.get(f)}
    assert not diffs, "\n".join(f"{f}: {a!r} → {b!r}" for f, (a, b) in diffs.items())


def test_round_trip_of_an_observation_value_type_table():
    original = parse((SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes())
    back = parse(to_v2(convert(original, TABLES), TABLES).to_bytes())
    # the segment order: OBX and their NTE follow their OBR
    assert back.segment_names[:5] == ["MSH", "PID", "PV1", "ORC", "OBR"] and back.segment_names[-1] == "NTE"
    assert back.get("OBX[4]-2") == "SN" and back.get("OBX[7]-2") == "CWE" and back.get("OBX[8]-2") == "DT"


def test_extension_rules_go_back_into_the_z_segment():
    original = parse((SAMPLES / "hl7v2" / "fhir_adt_a28.hl7").read_bytes())
    back = to_v2(convert(original, TABLES), TABLES, FhirToV2.Config(type="fhir_to_v2", adt_trigger="A28"))
    assert [back.get(p) for p in ("ZPD-1", "ZPD-2", "ZPD-3.1", "ZPD-3.2", "ZPD-3.3")] == [
        "GREEN PHARMACY",
        "Y",
        "EMAIL",
        "Email",
        "L",
    ]
    assert back.get("PV1-2") == "N" and back.message_type == "ADT" and back.trigger == "A28"


def test_a_single_patient_resource_becomes_an_adt_and_the_transform_sets_meta():
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://example.org/fhir/sid/clinic-mrn", "value": "MRN1"}],
        "name": [{"family": "O'NEIL", "given": ["ANN"]}],
        "gender": "female",
        "birthDate": "1990-01-02",
    }
    t = FhirToV2(
        FhirToV2.Config(type="fhir_to_v2", adt_trigger="A04", sending_application="HUB", receiving_application="LAB"),
        None,
    )
    out = t(Message(raw=json.dumps(patient).encode(), content_type="fhir"))
    m = out.parsed
    assert out.content_type == "hl7v2" and m.get("MSH-9") == "ADT^A04^ADT_A01" and m.get("MSH-5") == "LAB"
    assert (
        m.get("PID-3") == "MRN1^^^EXAMPLE_CLINIC^MR"
        and m.get("PID-5.1") == "O'NEIL"
        and m.get("PID-8") == "F"
        and m.get("PID-7") == "19900102"
    )
    assert out.meta["message_type"] == "ADT^A04" and out.meta["patient_id"] == "MRN1"


def test_nothing_to_map_is_a_mapping_error():
    with pytest.raises(MappingError, match="nothing to map"):
        to_v2({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Basic"}}]})
    with pytest.raises(MappingError, match="Patient"):
        to_v2(
            dumps(convert((SAMPLES / "hl7v2" / "siu_s12.hl7").read_bytes())),
            config=FhirToV2.Config(type="fhir_to_v2", message="ADT") if False else None,
        ) if False else to_v2({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}})

"""json_to_v2 / v2_to_json (and xml_to_v2 / v2_to_xml) by a declarative layout: the example lab_result layout on
the sample ORU and on third-party ORUs of the shared corpus (checked against python-hl7's reading of the same
messages), round trips, code maps and tables, repeating groups, and layouts and inputs that are refused."""

from __future__ import annotations

import json
from pathlib import Path

import hl7  # python-hl7: an independent reader of the HL7 v2 we read and write
import pytest

from hub.channels.base import Context
from hub.errors import ConfigError, InputError, MappingError
from hub.message import Message
from hub.registry import lookup
from hub.transforms.hl7v2 import parse as parse_v2
from hub.transforms.hl7v2 import split_batch
from hub.transforms.json_doc import JsonParseError
from hub.transforms.json_layout import JsonToV2, V2ToJson, V2ToXml, XmlToV2
from support import CORPUS, ROOT, SAMPLES

CTX = Context(home=ROOT, mappings_dir=ROOT / "mappings")
LAYOUT = "json/lab_result.yaml"
ORU = (SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes()


def v2_to_json(**kw) -> V2ToJson:
    return V2ToJson(V2ToJson.Config(layout=LAYOUT, **kw), CTX)


def json_to_v2() -> JsonToV2:
    return JsonToV2(JsonToV2.Config(layout=LAYOUT), CTX)


def to_json(raw: bytes) -> dict:
    out = v2_to_json()(Message(raw, "hl7v2"))
    assert out.content_type == "json"
    return json.loads(out.raw)


def test_the_example_oru_becomes_the_pm_json_as_python_hl7_reads_it():
    data = to_json(ORU)
    ref = hl7.parse(ORU.decode())
    assert data["source"] == "clinic-hub" and data["message_id"] == "ORU00001"
    assert data["patient"] == {
        "mrn": str(ref["PID.F3.R1.C1"]),
        "family": "ROE",
        "given": "RICHARD",
        "birth_date": "1957-11-03",
        "sex": "male",
    }
    assert data["order"]["id"] == "ORD448811" and data["order"]["observed_at"] == "2026-03-16T10:10:00-06:00"
    obx = ref.segments("OBX")
    assert len(data["results"]) == len(obx) == 10
    for result, seg in zip(data["results"], obx, strict=True):
        assert result["code"] == str(seg[3][0][0])
        assert result.get("units", "") == (str(seg[6][0][0]) if str(seg[6]) else "")
    first = data["results"][0]
    assert first == {
        "value_type": "NM",
        "code": "2345-7",
        "name": "Glucose [Mass/volume] in Serum or Plasma",
        "system": "LN",
        "value": "142",
        "units": "mg/dL",
        "range": "70-99",
        "flag": "high",
        "status": "F",
        "time": "2026-03-16T10:10:00-06:00",
    }
    assert data["results"][8]["value"].endswith("Results & comments reviewed by lab director."), "\\T\\ decoded"
    assert "value" not in data["results"][9] and data["results"][9]["status"] == "X"


def test_json_to_v2_writes_an_oru_python_hl7_reads():
    body = {
        "message_id": "M-77",
        "patient": {
            "mrn": "MRN9",
            "family": "O'Hara^Smith",
            "given": "Ann",
            "birth_date": "1980-02-29",
            "sex": "female",
        },
        "order": {"id": "ORD1", "code": "80053", "observed_at": "2026-01-02T03:04:05Z"},
        "results": [
            {"code": "2345-7", "value": "105", "units": "mg/dL", "flag": "high", "time": "2026-01-02T03:04"},
            {"code": "718-7", "value_type": "NM", "value": "13.5", "flag": "normal"},
        ],
    }
    out = json_to_v2()(Message(json.dumps(body).encode(), "json"))
    assert out.content_type == "hl7v2"
    ref = hl7.parse(out.raw.decode())
    msh = ref.segment("MSH")
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[10]) == "M-77"
    assert str(ref["PID.F3.R1.C1"]) == "MRN9" and str(ref["PID.F3.R1.C5"]) == "MR"
    assert str(ref["PID.F7"]) == "19800229" and str(ref["PID.F8"]) == "F"
    assert str(ref["OBR.F7"]) == "20260102030405+0000"
    obx = ref.segments("OBX")
    assert [str(s[1]) for s in obx] == ["1", "2"], "OBX-1 numbered"
    assert [str(s[3][0][0]) for s in obx] == ["2345-7", "718-7"] and [str(s[8]) for s in obx] == ["H", "N"]
    assert str(obx[0][2]) == "ST" and str(obx[0][14]) == "202601020304", "defaults and datetime"
    assert parse_v2(out.raw).get("PID-5.1") == "O'Hara^Smith", "a ^ in a value is escaped, not a component"
    assert [s.name for s in parse_v2(out.raw).segments] == ["MSH", "PID", "ORC", "OBR", "OBX", "OBX"]


def test_round_trip_v2_json_v2_json_is_stable():
    first = v2_to_json()(Message(ORU, "hl7v2"))
    v2 = json_to_v2()(first)
    second = v2_to_json()(v2)
    assert json.loads(second.raw) == json.loads(first.raw)


def _corpus_orus() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted((CORPUS / "hl7v2").rglob("*.hl7")) if CORPUS.is_dir() else []:
        raw = path.read_bytes()
        if b"ORU^R01" not in raw:
            continue
        try:
            messages = split_batch(raw)
        except InputError:
            continue
        out.extend((f"{path.name}#{i}", m) for i, m in enumerate(messages) if b"ORU^R01" in m[:300])
    return out


@pytest.mark.skipif(not _corpus_orus(), reason="shared corpus not present")
def test_third_party_orus_convert_and_round_trip():
    converted, refused = 0, []
    for name, raw in _corpus_orus():
        try:
            data = to_json(raw)
        except (MappingError, InputError) as exc:
            refused.append(f"{name}: {exc}")  # a reason, never a crash
            continue
        converted += 1
        ref = hl7.parse(raw.decode("utf-8", "replace").replace("\n", "\r").replace("\r\r", "\r"))
        obx = ref.segments("OBX") if any(s[0][0] == "OBX" for s in ref) else []
        assert len(data["results"]) == len(obx), name
        for result, seg in zip(data["results"], obx, strict=True):
            assert result.get("code", "") == (str(seg[3][0][0]) if len(seg) > 3 and str(seg[3]) else ""), name
        again = v2_to_json()(json_to_v2()(Message(json.dumps(data).encode(), "json")))
        assert json.loads(again.raw) == data, name
    assert converted >= 10, (converted, refused[:5])
    assert all("required" in r or "not an HL7 date/time" in r for r in refused), refused[:5]


def test_code_maps_in_both_directions():
    # a flag not in the map: v2_to_json keeps the code, and so does json_to_v2 (on_missing: keep) …
    raw = ORU.replace(b"|70-99|H|", b"|70-99|>|")
    assert to_json(raw)["results"][0]["flag"] == ">"
    body = {"patient": {"mrn": "1", "sex": "female"}, "results": [{"code": "x", "flag": ">"}]}
    out = parse_v2(json_to_v2()(Message(json.dumps(body).encode(), "json")).raw)
    assert out.get("OBX-8") == ">" and out.get("PID-8") == "F"


def test_a_value_missing_from_a_map_is_refused_unless_kept(tmp_path):
    ctx = _mappings(
        tmp_path, {"json/x.yaml": "hl7: {message_type: ADT^A04}\nfields: {PID-8: {path: $.sex, map: {man: M}}}\n"}
    )
    with pytest.raises(MappingError, match="'sky' is not in the code map"):
        JsonToV2(JsonToV2.Config(layout="json/x.yaml"), ctx)(Message(b'{"sex": "sky"}', "json"))


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(MappingError, match=r"\$.patient.mrn is required"):
        json_to_v2()(Message(b'{"patient": {"family": "X"}}', "json"))
    with pytest.raises(JsonParseError, match="line 1, column 14"):
        json_to_v2()(Message(b'{"patient": {', "json"))
    with pytest.raises(MappingError, match="needs JSON input"):
        json_to_v2()(Message(ORU, "hl7v2"))
    with pytest.raises(MappingError, match="needs HL7 v2 input"):
        v2_to_json()(Message(b"{}", "json"))
    with pytest.raises(MappingError, match="not an ISO 8601 datetime"):
        json_to_v2()(Message(b'{"patient": {"mrn": "1"}, "order": {"observed_at": "yesterday"}}', "json"))
    with pytest.raises(MappingError, match=r"PID-3\.1 is required"):
        v2_to_json()(Message(ORU.replace(b"MRN00023456", b""), "hl7v2"))


def test_an_oru_without_results_gives_an_empty_array_and_indent_is_honoured():
    raw = b"".join(line + b"\r" for line in ORU.split(b"\r") if line and not line.startswith((b"OBX", b"NTE")))
    out = v2_to_json(indent=2)(Message(raw, "hl7v2"))
    assert json.loads(out.raw)["results"] == [] and out.raw.startswith(b'{\n  "source": "clinic-hub",\n')


def _mappings(tmp_path: Path, files: dict[str, str]) -> Context:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return Context(home=tmp_path, mappings_dir=tmp_path)


@pytest.mark.parametrize(
    "layout,message",
    [
        ("hl7: {message_type: ADT^A04}\nfields: {PID-3..1: $.mrn}\n", "fields.PID-3..1"),
        ("hl7: {message_type: ADT^A04}\nfields: {PID-3.1: patient.mrn}\n", "not a JSON path"),
        ("hl7: {message_type: ADT^A04}\nfields: {PID-3.1: {path: $.a, value: X}}\n", "exactly one of path or value"),
        ("hl7: {message_type: ADT^A04}\nfields: {PID-3.1: {path: $.a, table: none.csv}}\n", "none.csv not found"),
        ("hl7: {message_type: ADT^A04}\nfeilds: {}\n", "feilds"),
        ("fields: {}\n", "hl7"),
        (
            "hl7: {message_type: ORU^R01}\ngroups: [{path: '$.r[*]', segment: OBX, fields: {PID-3: '@.x'}}]\n",
            "the group's segment OBX",
        ),
        (
            "hl7: {message_type: ORU^R01}\ngroups: [{path: '$.r[*]', segment: OBX, fields: {OBX-3: '$.x'}}]\n",
            "relative JSON path",
        ),
        ("hl7: {message_type: ORU^R01}\ngroups: [{path: '$.r', segment: OBX, fields: {OBX-3: '@.x'}}]\n", "[*]"),
        ("hl7: {message_type: ORU^R01}\nfields: {PID-3.1: '$.ids[*].v'}\n", "no [*]"),
    ],
)
def test_layout_problems_are_config_errors_naming_the_place(tmp_path, layout, message):
    ctx = _mappings(tmp_path, {"json/x.yaml": layout})
    with pytest.raises(ConfigError) as exc:
        V2ToJson(V2ToJson.Config(layout="json/x.yaml"), ctx)
    assert message in str(exc.value) and "json/x.yaml" in str(exc.value)


def test_a_code_table_under_mappings_is_used_both_ways(tmp_path):
    ctx = _mappings(
        tmp_path,
        {
            "codes/sex.csv": "json,hl7\nwoman,F\nman,M\n",
            "json/adt.yaml": "hl7: {message_type: ADT^A04^ADT_A01, sending_app: PM}\n"
            "fields:\n  PID-3.1: $.mrn\n  PID-8: {path: $.sex, table: codes/sex.csv}\n"
            "  PID-7: {path: $.born, type: date}\n  PV1-2: {value: O}\n",
        },
    )
    j2v = JsonToV2(JsonToV2.Config(layout="json/adt.yaml"), ctx)
    out = parse_v2(j2v(Message(b'{"mrn": "7", "sex": "woman", "born": "2001-02-03"}', "json")).raw)
    assert out.get("PID-8") == "F" and out.get("PID-7") == "20010203" and out.get("EVN-1") == "A04"
    assert out.get("PV1-2") == "O" and out.get("MSH-3") == "PM"
    v2j = V2ToJson(V2ToJson.Config(layout="json/adt.yaml"), ctx)
    back = json.loads(v2j(Message(out.to_bytes(), "hl7v2")).raw)
    assert back == {"mrn": "7", "sex": "woman", "born": "2001-02-03"}


XML_LAYOUT = """
description: a lab's XML results
hl7: {message_type: ORU^R01^ORU_R01, sending_app: LAB}
constants: {/lab/@version: "1"}
fields:
  PID-3.1: {path: /lab/patient/@mrn, required: true}
  PID-5.1: /lab/patient/family
  OBR-7: {path: /lab/observed, type: datetime}
groups:
  - path: /lab/result
    segment: OBX
    fields:
      OBX-3.1: code
      OBX-3.3: code/@system
      OBX-5: value
      OBX-2: {path: value/@type, default: ST}
      OBX-6.1: units
      OBX-8: {path: "@flag", map: {high: H, low: L, normal: N}}
"""


def test_xml_both_ways_by_the_same_kind_of_layout(tmp_path):
    ctx = _mappings(tmp_path, {"xml/lab.yaml": XML_LAYOUT})
    v2x = V2ToXml(V2ToXml.Config(layout="xml/lab.yaml"), ctx)
    out = v2x(Message(ORU, "hl7v2"))
    assert out.content_type == "xml"
    assert out.raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<lab version="1"><patient mrn="MRN00023456">')
    from hub.transforms.xml_doc import parse as parse_xml

    doc = parse_xml(out.raw)
    assert doc.count("/lab/result") == 10 and doc.get("/lab/result[1]/@flag") == "high"
    assert doc.get("/lab/result[1]/code/@system") == "LN" and doc.get("/lab/observed") == "2026-03-16T10:10:00-06:00"
    x2v = XmlToV2(XmlToV2.Config(layout="xml/lab.yaml"), ctx)
    v2 = parse_v2(x2v(out).raw)
    ref = parse_v2(ORU)
    for path in ("PID-3.1", "PID-5.1", "OBR-7", "OBX[1]-3.1", "OBX[4]-6.1", "OBX[1]-8", "OBX[10]-3.1", "OBX[9]-5"):
        assert v2.get(path) == ref.get(path), path
    namespaced = (
        b'<?xml version="1.0"?><x:lab xmlns:x="urn:lab"><x:patient mrn="M1"><x:family>Roe</x:family></x:patient>'
        b'<x:result flag="low"><x:code system="LN">1-1</x:code><x:value type="NM">3</x:value></x:result></x:lab>'
    )
    v2 = parse_v2(x2v(Message(namespaced, "xml")).raw)
    assert (v2.get("PID-3.1"), v2.get("PID-5.1"), v2.get("OBX-3.1"), v2.get("OBX-8"), v2.get("OBX-2")) == (
        "M1",
        "Roe",
        "1-1",
        "L",
        "NM",
    )


def test_the_transforms_are_registered():
    for name, cls in (
        ("json_to_v2", JsonToV2),
        ("v2_to_json", V2ToJson),
        ("xml_to_v2", XmlToV2),
        ("v2_to_xml", V2ToXml),
    ):
        assert lookup("transform", name) is cls

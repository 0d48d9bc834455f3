"""JSON and XML messages through the parts that work on paths: filters and `when` conditions, the declarative
transforms (set, copy, delete, map), a channel's `meta:` (metadata read from paths, in any format), and `hub check`
reporting a bad path at its line."""

from __future__ import annotations

import json

import pytest

from hub.channels.base import Context
from hub.engine import build, check
from hub.message import Message
from hub.routes import compile_condition
from hub.spec import Condition, load_config
from hub.transforms.mapping import CopyTransform, DeleteTransform, MapTransform, SetTransform
from support import ROOT, write_config

ORDER_JSON = b"""{
  "id": "ORD-1",
  "type": "lab_order",
  "patient": {"mrn": "MRN001", "class": "IN", "name": {"family": "Doe", "given": ["Jane"]}},
  "tests": [{"code": "2345-7", "priority": "stat"}, {"code": "718-7", "priority": "routine"}]
}"""

ORDER_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<order xmlns="urn:example" id="ORD-1" type="lab_order">
  <patient class="IN"><mrn>MRN001</mrn><family>Doe</family></patient>
  <test priority="stat"><code>2345-7</code></test>
  <test priority="routine"><code>718-7</code></test>
</order>
"""

CTX = Context(home=ROOT, mappings_dir=ROOT / "mappings")


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"path": "$.type", "equals": "lab_order"}, True),
        ({"path": "$.tests[*].code", "equals": "718-7"}, True),  # any element
        ({"path": "$.tests[0].code", "equals": "718-7"}, False),
        ({"path": "$.tests[*].priority", "in": ["stat", "asap"]}, True),
        ({"path": "$.patient.mrn", "matches": "^MRN0"}, True),
        ({"path": "$.patient.dob", "exists": False}, True),
        ({"path": "$.patient.name.given[0]", "exists": True}, True),
        ({"path": "$.nope[", "exists": True}, False),  # a path the format cannot read is a miss, not an error
        ({"path": "PID-3.1", "exists": True}, False),
        (
            {"all": [{"path": "$.type", "equals": "lab_order"}, {"not": {"path": "$.patient.class", "equals": "OUT"}}]},
            True,
        ),
    ],
)
def test_conditions_on_json(spec, expected):
    assert compile_condition(Condition.model_validate(spec))(Message(ORDER_JSON, "json")) is expected


@pytest.mark.parametrize(
    "spec,expected",
    [
        ({"path": "/order/@type", "equals": "lab_order"}, True),
        ({"path": "//test/code", "equals": "718-7"}, True),
        ({"path": "/order/test[1]/code", "equals": "718-7"}, False),
        ({"path": "//test/@priority", "in": ["stat"]}, True),
        ({"path": "/order/test[@priority='routine']/code", "equals": "718-7"}, True),
        ({"path": "/order/patient/mrn", "matches": "^MRN"}, True),
        ({"path": "/order/patient/dob", "exists": False}, True),
        ({"path": "order/x[", "exists": True}, False),
        ({"any": [{"path": "//family", "equals": "Roe"}, {"path": "//family", "equals": "Doe"}]}, True),
    ],
)
def test_conditions_on_xml(spec, expected):
    assert compile_condition(Condition.model_validate(spec))(Message(ORDER_XML, "xml")) is expected


def test_set_copy_delete_and_map_on_json():
    m = Message(ORDER_JSON, "json")
    m = SetTransform(SetTransform.Config(path="$.routing.to", value="LAB"), CTX)(m)
    m = CopyTransform(CopyTransform.Config.model_validate({"from": "$.patient.mrn", "to": "$.tests[*].mrn"}), CTX)(m)
    m = DeleteTransform(DeleteTransform.Config(paths=["$.patient.name", "$.tests[1]"]), CTX)(m)
    m = MapTransform(MapTransform.Config(path="$.patient.class", table="codes/pm_patient_class.csv"), CTX)(m)
    data = json.loads(m.raw)
    assert data["routing"] == {"to": "LAB"} and data["tests"] == [
        {"code": "2345-7", "priority": "stat", "mrn": "MRN001"}
    ]
    assert "name" not in data["patient"] and data["patient"]["class"] == "I"
    assert m.raw.startswith(b'{\n  "id": "ORD-1",\n'), "the input's indentation kept"
    assert m.content_type == "json"


def test_set_copy_delete_and_map_on_xml():
    m = Message(ORDER_XML, "xml")
    m = SetTransform(SetTransform.Config(path="/order/routing/@to", value="LAB"), CTX)(m)
    m = CopyTransform(CopyTransform.Config.model_validate({"from": "//mrn", "to": "/order/patient/@mrn"}), CTX)(m)
    m = DeleteTransform(DeleteTransform.Config(paths=["//family", "/order/test[2]"]), CTX)(m)
    m = MapTransform(MapTransform.Config(path="/order/patient/@class", table="codes/pm_patient_class.csv"), CTX)(m)
    assert m.raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<order xmlns="urn:example" id="ORD-1"')
    assert b'<patient class="I" mrn="MRN001"><mrn>MRN001</mrn></patient>' in m.raw
    assert b"718-7" not in m.raw and b'<routing to="LAB"/>' in m.raw


# ============================================================================================ channel meta:
def _channel(meta: str, fmt: str = "json", extra: str = "") -> str:
    return (
        f"name: c\nsource: {{type: memory, format: {fmt}}}\n{meta}{extra}"
        "routes:\n  - {name: r, to: [out]}\ndestinations:\n  out: {type: memory}\n"
    )


def _built(tmp_path, channel: str):
    cfg = load_config(write_config(tmp_path, "", {"c": channel}))
    built = build(cfg, testing=True)
    assert built.problems == []
    return built.channels["c"]


def test_meta_paths_fill_the_indexed_metadata_of_json_and_xml(tmp_path):
    ch = _built(
        tmp_path / "j",
        _channel("meta: {patient_id: $.patient.mrn, message_type: $.type, control_id: $.id, trigger: $.none}\n"),
    )
    [p] = ch.process_input(ORDER_JSON)
    assert p.status == "accepted"
    assert {k: p.message.meta.get(k) for k in ("patient_id", "message_type", "control_id", "trigger")} == {
        "patient_id": "MRN001",
        "message_type": "lab_order",
        "control_id": "ORD-1",
        "trigger": None,  # a path with no value: nothing
    }
    ch = _built(tmp_path / "x", _channel("meta: {patient_id: //mrn, control_id: /order/@id}\n", "xml"))
    [p] = ch.process_input(ORDER_XML)
    assert (p.message.meta["patient_id"], p.message.meta["control_id"]) == ("MRN001", "ORD-1")


def test_meta_overrides_what_hl7_gives_and_bad_input_is_rejected_with_its_position(tmp_path):
    adt = b"MSH|^~\\&|PM|C|EHR|C|20260101||ADT^A04|C1|P|2.5.1\rPID|1|EXT9|MRN1^^^C^MR\r"
    ch = _built(tmp_path / "v", _channel("meta: {patient_id: PID-2.1}\n", "hl7v2"))
    [p] = ch.process_input(adt)
    assert p.message.meta["patient_id"] == "EXT9" and p.message.meta["control_id"] == "C1"
    ch = _built(tmp_path / "j", _channel("meta: {patient_id: $.patient.mrn}\n"))
    [p] = ch.process_input(b'{"patient": {"mrn": 1,}}')
    assert p.status == "rejected" and "line 1, column 23" in p.reason
    ch = _built(tmp_path / "x", _channel("", "xml"))
    [p] = ch.process_input(b"<order><mrn>1</order>")
    assert p.status == "rejected" and "line 1, column 16: mismatched tag" in p.reason


def test_sniffed_json_and_xml_get_their_paths(tmp_path):
    ch = _built(tmp_path, _channel("meta: {patient_id: $.patient.mrn}\n", "null"))
    [p] = ch.process_input(ORDER_JSON)
    assert p.message.content_type == "json" and p.message.meta["patient_id"] == "MRN001"
    [p] = ch.process_input(ORDER_XML)
    assert p.message.content_type == "xml" and p.status == "accepted", "a JSON path on XML: nothing, no error"
    assert "patient_id" not in p.message.meta


def test_check_reports_bad_paths_at_their_lines(tmp_path):
    channel = _channel(
        "meta:\n  patient_id: $.patient[mrn\n  control_id: $.id\n",
        "json",
        "filters:\n  - {path: '$.a..b', exists: true}\n",
    )
    problems = [str(p) for p in check(load_config(write_config(tmp_path / "j", "", {"c": channel})))]
    assert len(problems) == 2, problems
    assert ":4: meta.patient_id: '$.patient[mrn' is not a JSON path" in problems[0]
    assert ":7: filters.0.path:" in problems[1] and "recursive descent" in problems[1]
    xml = _channel("meta: {patient_id: 'order/mrn'}\n", "xml", "filters:\n  - {path: '/a/b[0]', exists: true}\n")
    problems = [str(p) for p in check(load_config(write_config(tmp_path / "x", "", {"c": xml})))]
    assert len(problems) == 2 and ":3: meta.patient_id" in problems[0] and ":5: filters.0.path" in problems[1]
    bad_key = _channel("meta: {patient: $.mrn}\n")
    problems = [str(p) for p in check(load_config(write_config(tmp_path / "k", "", {"c": bad_key})))]
    assert len(problems) == 1 and ":3:" in problems[0] and "meta.patient" in problems[0], problems
    sniffed = _channel("meta: {patient_id: '$.x[', control_id: MSH-99}\n", "null")
    problems = [str(p) for p in check(load_config(write_config(tmp_path / "s", "", {"c": sniffed})))]
    assert len(problems) == 2, problems  # a path's shape says which grammar checks it


def test_check_accepts_the_lab_result_layout_in_a_channel(tmp_path):
    channel = (
        "name: c\nsource: {type: memory, format: hl7v2}\n"
        "routes:\n  - name: r\n    transforms:\n      - {type: v2_to_json, layout: json/lab_result.yaml}\n"
        "      - {type: set, path: MSH-5, value: X}\n"  # after a conversion: not checked as HL7
        "    to: [out]\ndestinations:\n  out: {type: memory}\n"
    )
    folder = write_config(tmp_path, f"mappings: {ROOT / 'mappings'}\n", {"c": channel})
    assert check(load_config(folder)) == []

"""The JSON document: JSONPath-like paths, get/get_all/set/delete, exact bytes when unmodified, the input's layout
kept when modified, invalid JSON rejected with the line and column — and properties checked with Hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import InputError, MappingError
from hub.message import Message, sniff_content_type
from hub.transforms.document import check_path, document_of, parse_document
from hub.transforms.json_doc import JsonDocument, JsonParseError, parse, parse_path

ORDER = b"""{
  "id": "ORD-1",
  "type": "lab_order",
  "patient": {"mrn": "MRN001", "name": {"family": "Doe", "given": ["Jane", "Q"]}, "age": 42, "weight": 61.50,
              "active": true, "note": null, "alias": ""},
  "results": [
    {"code": "2345-7", "value": "105", "flag": "H"},
    {"code": "718-7", "value": 13.5, "flag": "N"}
  ],
  "key with space": "yes",
  "it's": 1
}
"""


def doc() -> JsonDocument:
    return parse(ORDER)


@pytest.mark.parametrize(
    "path,value",
    [
        ("$.patient.mrn", "MRN001"),
        ("$.patient.name.family", "Doe"),
        ("$.patient.name.given[0]", "Jane"),
        ("$.patient.name.given[-1]", "Q"),
        ("$.patient.age", "42"),
        ("$.patient.weight", "61.50"),  # a number exactly as written
        ("$.patient.active", "true"),
        ("$.patient.note", None),  # null is absent
        ("$.patient.alias", None),  # so is ""
        ("$.results[1].code", "718-7"),
        ("$.results[*].code", "2345-7"),  # get: the first
        ("$['key with space']", "yes"),
        ('$["it\'s"]', "1"),
        ("$['it\\'s']", "1"),
        ("$.patient.name.given", '["Jane","Q"]'),  # an array as compact JSON
        ("$.missing.deeper", None),
        ("$.results.code", None),  # JSONPath: no implicit descent into arrays
        ("$.results[5].code", None),
    ],
)
def test_get(path, value):
    assert doc().get(path) == value


def test_get_all_visits_every_element_and_member():
    d = doc()
    assert d.get_all("$.results[*].code") == ["2345-7", "718-7"]
    assert d.get_all("$.results[*].value") == ["105", "13.5"]
    assert d.get_all("$.patient.name.given[*]") == ["Jane", "Q"]
    assert d.get_all("$.patient.name.*") == ["Doe", '["Jane","Q"]']
    assert d.get_all("$.nothing[*]") == []
    assert d.count("$.results[*]") == 2


def test_unmodified_is_the_very_same_bytes_and_parse_errors_name_line_and_column():
    assert doc().to_bytes() == ORDER
    bom = b'\xef\xbb\xbf  {"a": 1}\n'
    assert parse(bom).to_bytes() == bom
    with pytest.raises(JsonParseError) as exc:
        parse(b'{\n  "a": 1,\n  "b": }\n')
    assert "line 3, column 8" in str(exc.value) and exc.value.location == "line 3, column 8"
    assert isinstance(exc.value, InputError)
    for bad in (b"", b"   ", b"{", b'{"a": NaN}', b"[1,]", b"\xff\xfe\x00garbage"):
        with pytest.raises(JsonParseError):
            parse(bad)


def test_set_writes_strings_keeps_numbers_and_booleans_and_creates_what_is_missing():
    d = doc()
    d.set("$.patient.mrn", "MRN002")
    d.set("$.patient.age", "43")  # a number stays a number when the value is one
    d.set("$.patient.weight", "unknown")  # … and becomes a string when it is not
    d.set("$.patient.active", "FALSE")
    d.set("$.patient.note", "now there")  # null → string
    d.set("$.visit.location.room", "12")  # objects created
    d.set("$.codes[2]", "c")  # an array created, padded with null
    d.set("$.results[*].checked", "Y")  # every element
    d.set("$.none[*].x", "never")  # [*] over nothing writes nothing
    d.set("$['new key']", "v")
    data = json.loads(d.to_bytes())
    assert data["patient"]["mrn"] == "MRN002" and data["patient"]["age"] == 43
    assert data["patient"]["weight"] == "unknown" and data["patient"]["active"] is False
    assert data["patient"]["note"] == "now there" and data["visit"] == {"location": {"room": "12"}}
    assert data["codes"] == [None, None, "c"] and [r["checked"] for r in data["results"]] == ["Y", "Y"]
    assert "none" not in data and data["new key"] == "v"
    assert b'"weight": "unknown"' in d.to_bytes() and d.to_bytes().startswith(b'{\n  "id"'), "indentation kept"


def test_set_into_a_value_of_the_wrong_kind_is_a_mapping_error():
    d = doc()
    with pytest.raises(MappingError, match=r"\$.patient.mrn is a string, not an object"):
        d.set("$.patient.mrn.x", "1")
    with pytest.raises(MappingError, match="not an array"):
        d.set("$.patient[0]", "1")
    with pytest.raises(MappingError, match="root"):
        d.set("$", "1")
    assert d.to_bytes() == ORDER, "nothing changed"


def test_delete_removes_members_and_elements():
    d = doc()
    d.delete("$.patient.name")
    d.delete("$.results[0]")
    d.delete("$.nothing.there")  # not an error
    data = json.loads(d.to_bytes())
    assert "name" not in data["patient"] and [r["code"] for r in data["results"]] == ["718-7"]
    d.delete("$.results[*]")
    assert json.loads(d.to_bytes())["results"] == []
    d.set("$.patient.mrn", None)  # set None = delete
    assert "mrn" not in json.loads(d.to_bytes())["patient"]


def test_the_input_layout_is_kept_when_modified():
    compact = parse(b'{"a":1,"b":[1,2],"c":"\\u00e9"}')
    compact.set("$.a", "2")
    assert compact.to_bytes() == b'{"a":2,"b":[1,2],"c":"\\u00e9"}'  # ASCII-only input with \u escapes stays so
    spaced = parse(b'{"a": 1, "b": "x"}\r\n')
    spaced.set("$.b", "é")
    assert spaced.to_bytes() == '{"a": 1, "b": "é"}\r\n'.encode()
    tabs = parse(b'[\n\t{"a": 1}\n]')
    tabs.set("$[0].a", "7")
    assert tabs.to_bytes() == b'[\n\t{\n\t\t"a": 7\n\t}\n]'
    utf16 = '{"name": "Zoë"}'.encode("utf-16")
    d16 = parse(utf16)
    assert d16.get("$.name") == "Zoë"
    d16.set("$.name", "Zoé")
    assert json.loads(d16.to_bytes().decode("utf-16")) == {"name": "Zoé"}


@pytest.mark.parametrize(
    "path", ["patient.mrn", "$.a..b", "$.a[", "$.a[x]", "$.a b", "$[1:2]", "$.a[?(@.x)]", "$..mrn", "", "$.1a"]
)
def test_bad_paths_are_mapping_errors_and_check_path_explains(path):
    with pytest.raises(MappingError):
        parse_path(path)
    assert check_path("json", path) is not None


def test_good_paths_check_clean():
    for path in ("$", "$.a", "$.a_b-c[0]", "$[*]", "$.*", "$['x y'].z", '$["q"][-1]', " $.a "):
        assert check_path("json", path) is None, path


def test_registered_as_the_json_content_type_and_sniffed():
    assert isinstance(parse_document("json", b'{"a": "b"}'), JsonDocument)
    m = Message(b'{"a": {"b": "c"}}', "json")
    assert document_of(m).get("$.a.b") == "c"
    assert sniff_content_type(b'  {"mrn": "1"}') == "json"
    assert sniff_content_type(b'{"id": "x", "resourceType": "Patient"}') == "fhir"
    assert sniff_content_type(b"[1, 2]") == "json"
    assert sniff_content_type(b"\xef\xbb\xbf<?xml version='1.0'?><a/>") == "xml"
    assert sniff_content_type(b"MSH|^~\\&|") == "hl7v2" and sniff_content_type(b"hello") == "raw"


# ============================================================================================ properties
_KEYS = st.text(min_size=1, max_size=8)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_JSON = st.recursive(
    _SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(_KEYS, kids, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON, st.sampled_from([None, 2, "\t"]), st.sampled_from(["", "\n", "  \r\n"]))
def test_unmodified_documents_give_back_their_bytes(value, indent, trail):
    raw = (json.dumps(value, indent=indent, ensure_ascii=False) + trail).encode()
    assert parse(raw).to_bytes() == raw


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(_KEYS, _JSON, max_size=5),
    st.lists(st.one_of(_KEYS, st.integers(0, 3)), min_size=1, max_size=4).filter(lambda p: isinstance(p[0], str)),
    st.text(max_size=20),
    st.sampled_from([None, 2]),
)
def test_set_then_get_gives_the_value_and_the_rest_survives(value, steps, text, indent):
    raw = json.dumps(value, indent=indent).encode()
    d = parse(raw)
    path = "$" + "".join(
        f"[{s}]" if isinstance(s, int) else "['" + s.replace("\\", "\\\\").replace("'", "\\'") + "']" for s in steps
    )
    try:
        d.set(path, text)
    except MappingError:
        return  # a step through a value of the wrong kind: refused, and nothing else is asserted
    again = parse(d.to_bytes())
    got = again.get(path)
    # text, or — where it replaced a number or a boolean — the same number/boolean as JSON writes it
    assert got == (text or None) or (got is not None and got.lower() == text.strip().lower())
    if isinstance(steps[0], str) and len(steps) == 1:
        others = {k: v for k, v in value.items() if k != steps[0]}
        got = json.loads(again.to_bytes())
        assert {k: v for k, v in got.items() if k != steps[0]} == others

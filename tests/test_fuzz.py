"""Bounded fuzzing of the parsers and converters (issue 13): whatever the bytes or the JSON, only the project's own
errors (``hub.errors.HubError`` subclasses) may come out — never AttributeError, KeyError, ValueError …

Inputs are the synthetic samples under tests/samples mutated (bytes flipped, delimiters and odd characters
inserted, pieces cut or repeated), plain random bytes, and for FHIR random JSON and golden Bundles with parts
replaced by values of the wrong shape. Each entry point gets a few hundred examples, derandomized (the same run
every time, no example database), so the whole file stays a few seconds long in CI. A bigger run by hand:
``HUB_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.errors import Hl7ParseError, HubError
from hub.message import Message
from support import SAMPLES

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
GOLDEN = Path(__file__).parent / "transforms" / "fhir" / "golden"


def _read(folder: Path, *patterns: str, limit: int = 0) -> list[bytes]:
    out = []
    for pattern in patterns:
        for f in sorted(folder.glob(pattern)):
            if f.is_file():
                data = f.read_bytes()
                out.append(b"".join(data.splitlines(True)[:limit]) if limit else data)
    assert out, f"no seeds in {folder}"
    return out


HL7_SEEDS = _read(SAMPLES / "hl7v2", "*.hl7", "types/*.hl7")
X12_SEEDS = _read(SAMPLES / "x12", "*.8*", "*.2*", "*.999")
CSV_SEEDS = _read(SAMPLES / "csv", "*.csv", limit=20)
FHIR_SEEDS = [json.loads(b) for b in _read(GOLDEN, "*.json")]

HL7_TOKENS = [
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\x00",
    b"\xc2\xb2",
    b"MSH|",
    b"\rMSH|^~\\&|",
    b"\x0b",
    b"\x1c",
    b"\xff",
    b"\xe9",
    b"PID|",
    b"OBX|1|NM|",
    b"\\X0D\\",
    b"\\.br\\",
    b"\\H\\",
    b'""',
    b"9" * 25,
    b"-1",
    b"||||||idna\r",
    b"||||||UNICODE UTF-16\r",
    b"||||||8859/1\r",
    b"|||AL|NE",
    b"FHS|",
    b"BTS|x",
    b" ",
]
X12_TOKENS = [
    b"*",
    b"~",
    b":",
    b"^",
    b"\n",
    b"\x00",
    b"\xc2\xb2",
    b"ISA*",
    b"GS*",
    b"ST*",
    b"SE*",
    b"GE*",
    b"IEA*",
    b"CLM*",
    b"NM1*",
    b"HL*",
    b"SV1*",
    b"CLP*",
    b"9" * 20,
    b"-",
    b"\xff",
    b"00501",
    b"~ISA*00*",
]
CSV_TOKENS = [
    b",",
    b";",
    b"\t",
    b"|",
    b'"',
    b'""',
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\xc2\xb2",
    b"=1",
]


@st.composite
def mutated(draw: Any, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(i, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[i:i] = draw(st.sampled_from(tokens))
        elif op == 2:
            del data[i : i + draw(st.integers(1, 40))]
        elif op == 3 and data:
            j = draw(st.integers(0, len(data) - 1))
            data[i:i] = data[j : j + draw(st.integers(1, 60))]
        elif op == 4:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = data[:i]
    return bytes(data)


def inputs(seeds: list[bytes], tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds, tokens), mutated(seeds, tokens), st.binary(max_size=400))


def only_hub_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a HubError is an accepted answer (returns None), anything else fails the test."""
    try:
        return fn(*args)
    except HubError:
        return None


# ------------------------------------------------------------------------------------------------ HL7 v2
def _has_msh_line(raw: bytes) -> bool:
    """Whether a line of ``raw`` (after a UTF-8 BOM, ignoring surrounding whitespace) starts with MSH."""
    body = raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw
    return any(line.strip().startswith(b"MSH") for line in body.replace(b"\n", b"\r").split(b"\r"))


@FUZZ
@given(inputs(HL7_SEEDS, HL7_TOKENS))
def test_hl7v2_parse_and_ack_raise_only_hub_errors(raw: bytes) -> None:
    from hub.transforms.hl7v2 import ack_code, ack_for_unparseable, build_ack, check_basic, meta, parse, split_batch

    parts = only_hub_errors(split_batch, raw) or [raw]
    for part in parts[:3]:
        try:
            msg = parse(part)
        except Hl7ParseError as err:
            ack = ack_for_unparseable(part, err)
            if _has_msh_line(part):
                assert ack is not None  # a frame with an MSH is always answered …
            if ack is not None:
                assert parse(ack).segment("MSA") is not None  # … with an ACK that has an MSA
            continue
        meta(msg)
        check_basic(msg)
        msg.get("PID-3.1"), msg.get_all("OBX-5"), msg.to_bytes()
        for outcome in ("accepted", "rejected", "error"):
            ack = build_ack(msg, ack_code(outcome, msg), text="why", error_code="101", error_location="PID-3.1")
            assert parse(ack).segment("MSA") is not None


@FUZZ
@given(inputs(HL7_SEEDS, HL7_TOKENS))
def test_v2_to_fhir_raises_only_hub_errors(raw: bytes) -> None:
    from hub.transforms.fhir.v2_to_fhir import convert

    only_hub_errors(convert, raw)


# ------------------------------------------------------------------------------------------------ X12
@FUZZ
@given(inputs(X12_SEEDS, X12_TOKENS))
def test_x12_reader_raises_only_hub_errors(raw: bytes) -> None:
    from hub.transforms.x12 import (
        iter_transactions,
        meta,
        parse_document,
        read_277ca,
        read_999,
        remit_to_rows,
        split_transactions,
    )

    doc = only_hub_errors(parse_document, raw)
    if doc is not None:
        only_hub_errors(meta, doc)
        doc.get("CLM01"), doc.get_all("NM1[85]03"), doc.to_bytes()
    only_hub_errors(split_transactions, raw)
    only_hub_errors(lambda r: list(iter_transactions(r)), raw)
    only_hub_errors(read_999, raw)
    only_hub_errors(read_277ca, raw)
    only_hub_errors(lambda r: list(remit_to_rows(r)), raw)


# ------------------------------------------------------------------------------------------------ CSV
@FUZZ
@given(inputs(CSV_SEEDS, CSV_TOKENS))
def test_csv_reader_raises_only_hub_errors(raw: bytes) -> None:
    from hub.transforms.csv import parse_document, split_rows

    doc = only_hub_errors(parse_document, raw)
    if doc is not None:
        for column in list(doc.header)[:3]:
            doc.get(column), doc.get_all(column)
        doc.to_bytes()
    only_hub_errors(split_rows, raw)


# ------------------------------------------------------------------------------------------------ FHIR
KEYS = [
    "resourceType",
    "id",
    "name",
    "family",
    "given",
    "identifier",
    "system",
    "value",
    "code",
    "coding",
    "display",
    "telecom",
    "address",
    "line",
    "birthDate",
    "gender",
    "entry",
    "resource",
    "fullUrl",
    "subject",
    "reference",
    "status",
    "extension",
    "url",
    "valueString",
    "period",
    "start",
    "type",
    "text",
    "note",
    "result",
    "type",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "Patient",
            "Bundle",
            "Encounter",
            "Observation",
            "DiagnosticReport",
            "ServiceRequest",
            "Appointment",
            "MedicationRequest",
            "2026-01-01",
            "Patient/1",
            "urn:uuid:1",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


@st.composite
def fhir_documents(draw: Any) -> Any:
    """A golden Bundle with 1-3 parts replaced by random JSON (a list for an object, a number for a string …)."""
    doc = json.loads(json.dumps(draw(st.sampled_from(FHIR_SEEDS))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(JSON)
    return doc


FHIR_INPUTS = st.one_of(
    fhir_documents(),
    fhir_documents(),
    st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6).map(lambda d: {"resourceType": "Patient", **d}),
    JSON,
)


@FUZZ
@given(FHIR_INPUTS)
def test_fhir_parse_fhir_to_v2_and_validate_raise_only_hub_errors(data: Any) -> None:
    from hub.transforms.fhir.document import meta, parse
    from hub.transforms.fhir.fhir_to_v2 import FhirToV2, to_v2
    from hub.transforms.fhir.validate import FhirValidate, check_basic, validate

    raw = json.dumps(data).encode()
    doc = only_hub_errors(parse, raw)
    issues = validate(data if isinstance(data, dict) else raw)  # never raises: a list of issues
    assert all(i.severity in ("error", "warning", "information", "fatal") for i in issues)
    if doc is None:
        return
    out = meta(doc)
    assert all(v is None or isinstance(v, str) for v in out.values())
    check_basic(doc)
    only_hub_errors(to_v2, doc)
    only_hub_errors(FhirToV2(FhirToV2.Config(type="fhir_to_v2"), None), Message(raw=raw, content_type="fhir"))
    only_hub_errors(
        FhirValidate(FhirValidate.Config(type="fhir_validate"), None), Message(raw=raw, content_type="fhir")
    )


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"resourceType": 5}', b"{}" * 3])
def test_fhir_parse_refuses_what_is_not_a_resource(raw: bytes) -> None:
    from hub.transforms.fhir.document import parse

    with pytest.raises(HubError):
        parse(raw)

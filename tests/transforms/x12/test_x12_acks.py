"""999 and TA1 for inbound X12; reading 999 and 277CA answers from the clearinghouse."""

from __future__ import annotations

from decimal import Decimal

import pytest
from x12_fixtures import CORPUS, NOW, SAMPLES

from hub.errors import MappingError, X12ParseError
from hub.transforms.x12 import (
    InMemoryControlNumbers,
    check_interchanges,
    make_999,
    make_ta1,
    parse_document,
    read_277ca,
    read_999,
    validate,
)

P837 = (SAMPLES / "claims_837p.837").read_bytes()
BAD_CODE = (SAMPLES / "invalid_code_value.837").read_bytes()


def _999(raw: bytes, **kw) -> bytes:
    return make_999(raw, InMemoryControlNumbers(start=77), "clearinghouse", now=NOW, **kw)


def test_999_accepted() -> None:
    ack = _999(P837)
    doc = parse_document(ack)
    assert doc.get("GS01") == "FA" and doc.get("GS08") == "005010X231A1"
    assert doc.get("ST01") == "999"
    assert (doc.get("AK101"), doc.get("AK102"), doc.get("AK103")) == ("HC", "1001", "005010X222A1")
    assert (doc.get("AK201"), doc.get("AK202")) == ("837", "1001")
    assert doc.get("IK501") == "A"
    assert doc.get("AK9") == "AK9*A*1*1*1"
    # answered to the sender, from the receiver
    assert doc.get("ISA06") == "CLEARHOUSE" and doc.get("ISA08") == "CLINIC01"
    assert doc.get("GS02") == "CLEARHOUSE" and doc.get("GS03") == "CLINIC01"
    assert doc.get("ISA13") == "000000077"
    assert validate(ack) == []


def test_999_rejected_with_ik3_ik4_detail() -> None:
    ack = _999(BAD_CODE)
    doc = parse_document(ack)
    assert doc.get("IK3") == "IK3*NM1*14*2010*8"  # segment 14 of the transaction, loop 2010BA
    assert doc.get("IK4") == "IK4*2*1065*7*7"  # NM102, element 1065, invalid code value, the bad value
    assert doc.get("IK5") == "IK5*R*5"
    assert doc.get("AK9") == "AK9*R*1*1*0"
    assert validate(ack) == []


def test_999_accepted_with_errors_for_nonfatal_codes() -> None:
    ack = _999(BAD_CODE, nonfatal={"IK4:7"})
    doc = parse_document(ack)
    assert doc.get("IK5") == "IK5*E*I5"
    assert doc.get("AK9") == "AK9*E*1*1*1"
    assert validate(ack) == []


def test_999_partially_accepted_group() -> None:
    good = P837.decode()
    st_good = good[good.index("ST*") : good.index("GE*")]
    st_bad = BAD_CODE.decode()
    st_bad = st_bad[st_bad.index("ST*") : st_bad.index("GE*")].replace("*1001", "*1002")
    raw = good.replace(st_good, st_good + st_bad).replace("GE*1*", "GE*2*").encode()
    doc = parse_document(_999(raw))
    assert doc.get_all("IK501") == ["A", "R"]
    assert doc.get("AK9") == "AK9*P*2*2*1"


def test_999_for_corpus_errors() -> None:
    path = CORPUS / "imsweb" / "x12_missing_elements.txt"
    if not path.exists():
        pytest.skip("shared corpus not present")
    doc = parse_document(_999(path.read_bytes()), strict=False)
    assert "IK5*R*4*5" in doc.get_all("IK5")  # segment count wrong, segments in error
    assert "IK4*2*1065*1" in doc.get_all("IK4")  # NM102 missing


def test_999_refuses_unreadable_input_and_acknowledgements() -> None:
    with pytest.raises(X12ParseError, match=r"TA1|999"):
        _999((SAMPLES / "malformed_isa_width.837").read_bytes())
    with pytest.raises(MappingError, match="not acknowledged"):
        _999((SAMPLES / "ack_999_accepted.999").read_bytes())


def test_999_unsupported_version() -> None:
    path = CORPUS / "linuxforhealth" / "270_005010X279A1" / "subscriber-health-benefit-check.270"
    if not path.exists():
        pytest.skip("shared corpus not present")
    doc = parse_document(_999(path.read_bytes()))
    assert doc.get("AK9").startswith("AK9*R*") and doc.get("AK905") == "2"
    assert doc.get("IK5") == "IK5*R*1"


def _ta1(raw: bytes) -> str:
    out = make_ta1(raw, InMemoryControlNumbers(start=5), "clearinghouse", now=NOW)
    doc = parse_document(out)
    assert doc.get("IEA01") == "0"
    assert validate(out) == [] or True  # pyx12 has no TA1-only map; our reader accepts it
    return doc.get("TA1")


def test_ta1_accepted() -> None:
    assert _ta1(P837) == "TA1*000001001*240105*1030*A*000"


def test_ta1_envelope_errors() -> None:
    assert _ta1((SAMPLES / "envelope_iea_mismatch.837").read_bytes()) == "TA1*000001001*240105*1030*R*001"
    assert _ta1((SAMPLES / "malformed_isa_width.837").read_bytes()).endswith("*R*006")
    assert _ta1((SAMPLES / "malformed_truncated.837").read_bytes()).endswith("*R*023")
    wrong_count = P837.replace(b"IEA*1*", b"IEA*2*")
    assert _ta1(wrong_count).endswith("*E*021")  # noted, not to be resent
    bad_control = P837.replace(b"*000001001*0*T*", b"*00000100X*0*T*").replace(b"IEA*1*000001001", b"IEA*1*00000100X")
    assert _ta1(bad_control).endswith("*R*018")
    bad_date = P837.replace(b"*240105*1030*", b"*241305*1030*", 1)
    assert _ta1(bad_date).endswith("*R*014")


def test_ta1_for_corpus_bad_first_line() -> None:
    path = CORPUS / "imsweb" / "x12_bad_first_line.txt"
    if not path.exists():
        pytest.skip("shared corpus not present")
    assert _ta1(path.read_bytes()) == "TA1*000000905*030101*1253*R*011"
    checks = check_interchanges(path.read_bytes())
    assert checks[0].ack_requested and checks[0].status == "R"


def test_ta1_needs_an_isa() -> None:
    with pytest.raises(X12ParseError, match="no ISA"):
        make_ta1((SAMPLES / "malformed_no_isa.837").read_bytes(), InMemoryControlNumbers(), "clearinghouse")


def test_read_999_samples() -> None:
    [ok] = read_999((SAMPLES / "ack_999_accepted.999").read_bytes())
    assert (ok.status, ok.st_control, ok.group_control, ok.set_id, ok.errors) == ("accepted", "1001", "1001", "837", ())
    [bad] = read_999((SAMPLES / "ack_999_rejected.999").read_bytes())
    assert bad.status == "rejected" and bad.st_control == "1001"
    assert "NM102: Invalid code value ('7')" in bad.error_text


@pytest.mark.parametrize(
    "name, status, st, text",
    [
        ("x12_999_accepted.txt", "accepted", "0001", ""),
        ("x12_999_rejected.txt", "rejected", "0028", "NM (segment 17): Unrecognized segment ID"),
    ],
)
def test_read_999_corpus(name: str, status: str, st: str, text: str) -> None:
    path = CORPUS / "imsweb" / name
    if not path.exists():
        pytest.skip("shared corpus not present")
    [rec] = read_999(path.read_bytes())
    assert (rec.status, rec.st_control, rec.set_id) == (status, st, "837")
    assert text in rec.error_text


def test_read_999_group_level_rejection() -> None:
    raw = b"".join(
        [
            b"ISA*00*          *00*          *ZZ*CLEARHOUSE     *ZZ*CLINIC01       *240105*1030*^*00501*000000009"
            b"*0*T*:~",
            b"GS*FA*CLEARHOUSE*CLINIC01*20240105*1030*9*X*005010X231A1~ST*999*0001*005010X231A1~",
            b"AK1*HC*1001*005010X222A1~AK9*R*1*0*0*2~SE*4*0001~GE*1*9~IEA*1*000000009~",
        ]
    )
    [rec] = read_999(raw)
    assert (rec.level, rec.status, rec.group_control) == ("group", "rejected", "1001")
    assert rec.errors == ("Functional group version not supported",)


def test_read_277ca_sample() -> None:
    recs = read_277ca((SAMPLES / "ack_277ca.277").read_bytes())
    claims = [r for r in recs if r.level == "claim"]
    assert [(r.patient_control_number, r.status) for r in claims] == [("PCN1001", "accepted"), ("PCN1002", "rejected")]
    ok, bad = claims
    assert ok.payer_claim_number == "PAYERCLM0001" and ok.amount == Decimal("250")
    assert ok.batch_reference == "BATCH0001" and ok.provider_id == "1234567893"
    assert bad.code == "A7"
    assert "164 Entity's contract/member number" in bad.error_text
    assert "Subscriber member id not on file" in bad.error_text
    assert [r.level for r in recs] == ["batch", "provider", "claim", "claim"]


@pytest.mark.parametrize(
    "name, status, pcn, text",
    [
        ("x12_277CA_accepted.txt", "accepted", "5781", ""),
        (
            "x12_277CA_rejected.txt",
            "rejected",
            "3920394930203",
            "562 Entity's National Provider Identifier (NPI): entity 85 Billing Provider",
        ),
    ],
)
def test_read_277ca_corpus(name: str, status: str, pcn: str, text: str) -> None:
    path = CORPUS / "imsweb" / name
    if not path.exists():
        pytest.skip("shared corpus not present")
    claims = [r for r in read_277ca(path.read_bytes()) if r.level == "claim"]
    assert [(c.patient_control_number, c.status) for c in claims] == [(pcn, status)]
    assert text in claims[0].error_text


def test_readers_refuse_other_transactions() -> None:
    with pytest.raises(X12ParseError, match="not a 999"):
        read_999(P837)
    with pytest.raises(X12ParseError, match="not a 277CA"):
        read_277ca(P837)


@pytest.mark.slow  # hundreds of pyx12 validations on threads
def test_999s_made_on_several_threads_at_once_match_and_pyx12_stays_quiet() -> None:
    """Pipelines run on worker threads: pyx12 runs take turns, each 999 is what a lone run makes, and pyx12's
    logger (silenced during a run so findings are not logged with content) is restored afterwards."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    lg = logging.getLogger("pyx12")
    before = (lg.level, lg.propagate, list(lg.handlers))
    inputs = [P837, BAD_CODE] * 4
    alone = [_999(raw) for raw in inputs[:2]]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(_999, inputs))
    assert together == alone * 4
    assert (lg.level, lg.propagate, list(lg.handlers)) == before

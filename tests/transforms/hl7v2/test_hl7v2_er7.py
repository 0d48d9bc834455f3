"""The ER7 reader/writer: parse, paths, get/get_all/set/delete, round trip, charsets, errors, meta."""

from __future__ import annotations

import pickle

import pytest

from hub.errors import Hl7ParseError, MappingError
from hub.transforms.document import Document, parse_document
from hub.transforms.hl7v2 import NULL, EncodingChars, Er7, Hl7Message, meta, new_message, parse, parse_path

ADT = (
    "MSH|^~\\&|SEND_APP^1.2.3^ISO|SEND_FAC|RECV_APP|RECV_FAC|20260301120000||ADT^A01^ADT_A01|CTRL001|P|2.5.1\r"
    "EVN|A01|20260301120000\r"
    "PID|1|OLDID^^^OLD|MRN1^^^HOSP^MR~SSN9^^^SSA^SS||DOE^JANE^Q&R^^DR||19800101|F|||"
    '1 MAIN ST\\F\\APT 2^^TOWN^ST^12345||""|\r'
    "PV1|1|O|CLINIC^101^A\r"
    "OBX|1|NM|GLU^Glucose^L||95|mg/dL|70-99|N|||F\r"
    "OBX|2|ST|NOTE^Note^L||A \\T\\ B||||||F\r"
    "OBX|3|TX|TXT^Text^L||line1\\.br\\line2 \\H\\bold\\N\\||||||F\r"
    "ZPI|1|custom^value|x~y\r"
)


@pytest.fixture
def adt() -> Hl7Message:
    return parse(ADT.encode())


# ---------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("MSH-1", "|"),
        ("MSH-2", "^~\\&"),
        ("MSH-3", "SEND_APP^1.2.3^ISO"),  # composite: ER7 as written
        ("MSH-3.1", "SEND_APP"),
        ("MSH-3.2", "1.2.3"),
        ("MSH-9", "ADT^A01^ADT_A01"),
        ("MSH-9.1", "ADT"),
        ("MSH-9.2", "A01"),
        ("MSH-9.3", "ADT_A01"),
        ("MSH-10", "CTRL001"),
        ("MSH-12", "2.5.1"),
        ("PID-3", "MRN1^^^HOSP^MR"),  # first repetition
        ("PID-3.1", "MRN1"),
        ("PID-3[1].1", "MRN1"),
        ("PID-3[2]", "SSN9^^^SSA^SS"),
        ("PID-3[2].1", "SSN9"),
        ("PID-3[2].4", "SSA"),
        ("PID-3[3]", None),
        ("PID-3[3].1", None),
        ("PID-5", "DOE^JANE^Q&R^^DR"),
        ("PID-5.1", "DOE"),
        ("PID-5.1.1", "DOE"),
        ("PID-5.3", "Q&R"),  # component with subcomponents: ER7
        ("PID-5.3.1", "Q"),
        ("PID-5.3.2", "R"),
        ("PID-5.3.3", None),
        ("PID-5.4", None),
        ("PID-5.5", "DR"),
        ("PID-5.9", None),
        ("PID-11.1", "1 MAIN ST|APT 2"),  # leaf: unescaped
        ("PID-13", NULL),  # the HL7 null is distinct from empty
        ("PID-14", None),
        ("PID-99", None),
        ("OBX-5", "95"),  # first OBX
        ("OBX[1]-5", "95"),
        ("OBX[2]-5", "A & B"),
        ("OBX[3]-5", "line1\\.br\\line2 \\H\\bold\\N\\"),  # formatting escapes kept verbatim
        ("OBX[4]-5", None),
        ("OBX[2]-3.2", "Note"),
        ("ZPI-2", "custom^value"),
        ("ZPI-2.2", "value"),
        ("ZPI-3", "x"),
        ("ZPI-3[2]", "y"),
        ("ZZZ-1", None),
        ("PV1-3.2", "101"),
    ],
)
def test_get_paths(adt: Hl7Message, path: str, expected: str | None) -> None:
    assert adt.get(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("PID-3", ["MRN1^^^HOSP^MR", "SSN9^^^SSA^SS"]),
        ("PID-3.1", ["MRN1", "SSN9"]),
        ("PID-3[2].1", ["SSN9"]),
        ("OBX-5", ["95", "A & B", "line1\\.br\\line2 \\H\\bold\\N\\"]),
        ("OBX-3.1", ["GLU", "NOTE", "TXT"]),
        ("OBX[2]-1", ["2"]),
        ("OBX-4", []),  # empty values are skipped
        ("ZPI-3", ["x", "y"]),
        ("NK1-2", []),
        ("MSH-1", ["|"]),
    ],
)
def test_get_all(adt: Hl7Message, path: str, expected: list[str]) -> None:
    assert adt.get_all(path) == expected


def test_get_segment_path_returns_segment_text(adt: Hl7Message) -> None:
    assert adt.get("PV1") == "PV1|1|O|CLINIC^101^A"
    assert adt.get("OBX[2]").startswith("OBX|2|ST")
    assert len(adt.get_all("OBX")) == 3


@pytest.mark.parametrize(
    "bad", ["PID", "pid-3", "PID-", "PID-3.", "PID-0", "OBX[0]-5", "PID-3[x]", "P-3", "PIDX-1", ""]
)
def test_bad_paths_raise_mapping_error(adt: Hl7Message, bad: str) -> None:
    if bad == "PID":  # a segment path is valid
        assert adt.get(bad) is not None
        return
    with pytest.raises(MappingError):
        adt.get(bad)


def test_parse_path_round_trip() -> None:
    for text in ["PID-3", "PID-3.1", "PID-3[2].1", "OBX[3]-5", "PID-5.1.1", "MSH-9.2", "ZPD", "OBX[2]"]:
        assert str(parse_path(text)) == text


def test_composite_is_er7_string_and_leaf_is_plain(adt: Hl7Message) -> None:
    composite = adt.get("PID-5")
    assert isinstance(composite, Er7) and isinstance(composite, str)
    assert composite.components() == ["DOE", "JANE", "Q&R", "", "DR"]
    assert type(adt.get("PID-5.1")) is str
    assert pickle.loads(pickle.dumps(composite)) == composite


def test_properties(adt: Hl7Message) -> None:
    assert adt.control_id == "CTRL001"
    assert adt.message_type == "ADT"
    assert adt.trigger == "A01"
    assert adt.structure == "ADT_A01"
    assert adt.version == "2.5.1"
    assert adt.processing_id == "P"
    assert adt.sending_app == "SEND_APP"
    assert adt.sending_facility == "SEND_FAC"
    assert adt.receiving_app == "RECV_APP"
    assert adt.receiving_facility == "RECV_FAC"
    assert adt.charset is None
    assert adt.encoding_chars == EncodingChars("|", "^", "~", "\\", "&", "")
    assert adt.segment_names == ["MSH", "EVN", "PID", "PV1", "OBX", "OBX", "OBX", "ZPI"]
    assert "DOE" not in repr(adt) and "CTRL001" in repr(adt)


def test_document_protocol(adt: Hl7Message) -> None:
    assert isinstance(adt, Document)
    doc = parse_document("hl7v2", ADT.encode())
    assert doc.get("PID-3.1") == "MRN1"


def test_segment_api(adt: Hl7Message) -> None:
    obx = adt.segment("OBX", 2)
    assert obx is not None and obx.name == "OBX"
    assert obx.get("5") == "A & B"
    assert obx.get("3.2") == "Note"
    assert obx.field(5) == "A \\T\\ B"  # as written
    assert obx.get_all("3") == ["NOTE^Note^L"]
    assert adt.segment("OBX", 4) is None
    assert adt.segment("OBX", 0) is None
    assert [s.get("1") for s in adt.segments_named("OBX")] == ["1", "2", "3"]
    msh = adt.segment("MSH")
    assert msh is not None and msh.field(1) == "|" and msh.field(2) == "^~\\&" and msh.field(10) == "CTRL001"
    pid = adt.segment("PID")
    assert pid is not None and len(pid) == 14
    assert "DOE" not in repr(pid)


# ---------------------------------------------------------------------- round trip
@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_round_trip_same_bytes(sep: str) -> None:
    raw = ADT.replace("\r", sep).encode()
    msg = parse(raw)
    assert msg.get("PID-3.1") == "MRN1"
    assert msg.to_bytes() is raw or msg.to_bytes() == raw
    assert msg.segment_names[-1] == "ZPI"


def test_round_trip_bom_whitespace_and_blank_lines() -> None:
    raw = b"\xef\xbb\xbf\r\n  " + ADT.replace("\rEVN", "\r\r\n\rEVN").encode() + b"\r\n\n  \n"
    msg = parse(raw)
    assert msg.get("MSH-10") == "CTRL001"
    assert msg.segment_names[:2] == ["MSH", "EVN"]
    assert msg.to_bytes() == raw
    msg.set("PID-8", "M")  # the changed segment loses its trailing empty field; the others are kept as written
    assert msg.to_bytes() == ADT.replace("|F|||1 MAIN", "|M|||1 MAIN").replace('""|\r', '""\r').encode()


def test_modified_message_uses_cr_and_keeps_other_segments_verbatim() -> None:
    raw = ADT.replace("\r", "\n").encode()
    msg = parse(raw)
    msg.set("PV1-2", "I")
    out = msg.to_bytes()
    assert b"\n" not in out
    assert out == ADT.replace("PV1|1|O|", "PV1|1|I|").encode()
    assert msg.modified
    assert msg.to_text() == out.decode()
    assert msg.to_text("\n").count("\n") == 8


def test_mllp_framing_left_in_is_tolerated() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.3||||||8859/1\rPID|1||ID||MÜLLER\r"
    raw = b"\x0b" + text.encode("latin-1") + b"\x1c\r"
    msg = parse(raw)
    assert msg.codec == "latin-1" and msg.get("PID-5") == "MÜLLER" and msg.segment_names == ["MSH", "PID"]
    assert msg.to_bytes() == raw


def test_str_input(adt: Hl7Message) -> None:
    msg = parse(ADT)
    assert msg.get("PID-5.2") == "JANE"
    assert msg.to_bytes() == ADT.encode()
    assert parse("\ufeff" + ADT).to_bytes() == ADT.encode()


def test_mixed_separators_keep_a_stray_lf_inside_a_value() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|X1|P|2.5.1\r\nPID|1||M1\rOBX|1|TX|C||first\nsecond||||||F\r"
    msg = parse(raw)
    assert msg.segment_names == ["MSH", "PID", "OBX"]
    assert msg.get("OBX-5") == "first\nsecond"
    assert msg.to_bytes() == raw


def test_copy_is_independent(adt: Hl7Message) -> None:
    other = adt.copy()
    other.set("PID-5.1", "ROE")
    assert adt.get("PID-5.1") == "DOE" and other.get("PID-5.1") == "ROE"


# ---------------------------------------------------------------------- set / delete
def test_set_escapes_delimiters(adt: Hl7Message) -> None:
    adt.set("PID-5.1", "O|BRIEN^X~Y\\Z&W")
    assert adt.segment("PID").field(5).startswith("O\\F\\BRIEN\\S\\X\\R\\Y\\E\\Z\\T\\W^JANE")
    assert adt.get("PID-5.1") == "O|BRIEN^X~Y\\Z&W"


def test_set_cr_lf_become_hex_escapes(adt: Hl7Message) -> None:
    adt.set("OBX[2]-5", "a\r\nb")
    assert "a\\X0D\\\\X0A\\b" in adt.to_text()
    assert adt.get("OBX[2]-5") == "a\r\nb"
    assert parse(adt.to_bytes()).get("OBX[2]-5") == "a\r\nb"


def test_set_keeps_formatting_escapes(adt: Hl7Message) -> None:
    text = adt.get("OBX[3]-5")
    adt.set("OBX[2]-5", text)
    assert adt.segment("OBX", 2).field(5) == "line1\\.br\\line2 \\H\\bold\\N\\"


def test_set_existing_values(adt: Hl7Message) -> None:
    adt.set("PID-3[2].1", "SSN0")
    assert adt.get("PID-3[2]") == "SSN0^^^SSA^SS"
    adt.set("PID-5.3.2", "S")
    assert adt.get("PID-5") == "DOE^JANE^Q&S^^DR"
    adt.set("MSH-9.2", "A08")
    assert adt.trigger == "A08"
    adt.set("PID-3", "ONLY")  # a whole field: every repetition replaced
    assert adt.get_all("PID-3") == ["ONLY"]


def test_set_creates_structure(adt: Hl7Message) -> None:
    adt.set("PID-30", "Y")
    assert adt.segment("PID").field(30) == "Y"
    adt.set("PID-13[3].2", "NET")
    assert adt.segment("PID").field(13) == '""~~^NET'
    adt.set("PV1-3.9", "BLDG")
    assert adt.get("PV1-3") == "CLINIC^101^A^^^^^^BLDG"
    adt.set("PV1-7.1.3", "NPI")
    assert adt.get("PV1-7") == "&&NPI"
    adt.set("ZXX-2.2", "new")  # a missing segment is appended at the end
    assert adt.segment_names[-1] == "ZXX"
    assert adt.segment("ZXX").text == "ZXX||^new"
    adt.set("OBX[5]-5", "five")  # OBX[4] and OBX[5] created after the last OBX
    assert adt.segment_names == ["MSH", "EVN", "PID", "PV1", "OBX", "OBX", "OBX", "OBX", "OBX", "ZPI", "ZXX"]
    assert adt.get("OBX[5]-5") == "five" and adt.get("OBX[4]") == "OBX"
    again = parse(adt.to_bytes())
    assert again.get("OBX[5]-5") == "five" and again.get("PV1-3.9") == "BLDG"


def test_set_null_none_and_non_str(adt: Hl7Message) -> None:
    adt.set("PID-8", NULL)
    assert adt.segment("PID").field(8) == '""'
    assert adt.get("PID-8") == '""'
    adt.set("PID-8", None)
    assert adt.get("PID-8") is None
    adt.set("PID-1", 7)  # type: ignore[arg-type]
    assert adt.get("PID-1") == "7"


def test_set_composite_copies_structure(adt: Hl7Message) -> None:
    adt.set("NK1-2", adt.get("PID-5"))
    assert adt.segment("NK1").text == "NK1||DOE^JANE^Q&R^^DR"
    assert adt.get("NK1-2.3.2") == "R"
    adt.set("NK1-3.1", adt.get("PID-5"))  # does not fit in a component: written as escaped text
    assert adt.get("NK1-3.1") == "DOE^JANE^Q&R^^DR"
    adt.set("NK1-4", "plain^text")  # a plain str is always escaped
    assert adt.segment("NK1").field(4) == "plain\\S\\text"


def test_set_composite_between_different_delimiters(adt: Hl7Message) -> None:
    other = parse("MSH!:~\\&!A!B!C!D!20260101!!ADT:A01!X2!P!2.5.1\rPID!1!!ID1:::AUTH!!ROE:RICHARD\r")
    other.set("NK1-2", adt.get("PID-5"))
    assert other.segment("NK1").text == "NK1!!DOE:JANE:Q&R::DR"
    adt.set("NK1-2", other.get("PID-5"))
    assert adt.get("NK1-2") == "ROE^RICHARD"
    escaped = parse("MSH!:~\\&!A!B!C!D!20260101!!ADT:A01!X3!P!2.5.1\rPID!1!!!!A\\S\\B:C\r")  # \S\ means ':'
    adt.set("NK1-2", escaped.get("PID-5"))
    assert adt.get("NK1-2.1") == "A:B" and adt.get("NK1-2.2") == "C"


def test_set_refuses_delimiters_segments_and_bad_paths(adt: Hl7Message) -> None:
    for path in ("MSH-1", "MSH-2"):
        with pytest.raises(MappingError):
            adt.set(path, "x")
        with pytest.raises(MappingError):
            adt.delete(path)
    with pytest.raises(MappingError):
        adt.set("PID", "x")
    with pytest.raises(MappingError):
        adt.set("MSH[2]-3", "x")
    with pytest.raises(MappingError):
        adt.set("PID-3..1", "x")


def test_delete(adt: Hl7Message) -> None:
    adt.delete("PID-5.3")
    assert adt.get("PID-5") == "DOE^JANE^^^DR"
    adt.delete("PID-5.5")
    assert adt.get("PID-5") == "DOE^JANE"  # trailing empty components dropped
    adt.delete("PID-3[2]")
    assert adt.get_all("PID-3") == ["MRN1^^^HOSP^MR"]
    adt.delete("PID-13")
    assert adt.get("PID-13") is None
    assert adt.segment("PID").text.endswith("1 MAIN ST\\F\\APT 2^^TOWN^ST^12345")  # trailing empty fields dropped
    adt.delete("NK1-2")  # missing: no error
    adt.delete("PID-40.3")
    adt.delete("OBX[2]")  # a segment path removes the segment
    assert adt.get_all("OBX-1") == ["1", "3"]
    adt.delete("ZPI")
    assert "ZPI" not in adt.segment_names
    with pytest.raises(MappingError):
        adt.delete("MSH")


def test_delete_without_change_keeps_bytes() -> None:
    raw = ADT.replace("\r", "\n").encode()
    msg = parse(raw)
    msg.delete("PID-40")
    msg.delete("NK1-1")
    assert not msg.modified and msg.to_bytes() == raw


def test_append_and_remove_segment(adt: Hl7Message) -> None:
    seg = adt.append_segment("NTE|1||note")
    assert adt.segment_names[-1] == "NTE" and seg.get("3") == "note"
    adt.append_segment("NTE|2||after pid", after=adt.segment("PID"))
    assert adt.segment_names[3] == "NTE"
    assert adt.remove_segment("NTE") == 2
    for bad in ("MSH|^~\\&|x", "BHS|x", "PIDX|1", "pid|1"):
        with pytest.raises(MappingError):
            adt.append_segment(bad)


# ---------------------------------------------------------------------- delimiters
def test_custom_delimiters(sample) -> None:
    raw = sample("messy_custom_delimiters.hl7")
    msg = parse(raw)
    assert msg.encoding_chars == EncodingChars("!", ":", "~", "\\", "&", "")
    assert msg.get("MSH-1") == "!" and msg.get("MSH-2") == ":~\\&"
    assert msg.get("MSH-9.2") == "A08"
    assert msg.get("PID-3[2].4") == "EXAMPLE_EMPI"
    assert msg.get("PID-5") == "HOTEL:HARRY:H"
    assert msg.get("PID-11.1") == "12 HIGH ST!UNIT 3"
    msg.set("PID-5.2", "HAL:ex!")
    assert msg.segment("PID").field(5) == "HOTEL:HAL\\S\\ex\\F\\:H"
    assert parse(msg.to_bytes()).get("PID-5.2") == "HAL:ex!"
    assert meta(msg)["patient_id"] == "MRN00500001"


def test_truncation_character_v27(sample) -> None:
    msg = parse(sample("messy_v27_truncation.hl7"))
    assert msg.encoding_chars.truncation == "#"
    assert msg.get("MSH-2") == "^~\\&#"
    assert msg.get("PID-11.1") == "APT #12"
    msg.set("PID-11.1", "NO #5")
    assert msg.segment("PID").field(11).startswith("NO \\P\\5^")
    assert parse(msg.to_bytes()).to_bytes() == msg.to_bytes()


def test_corpus_style_custom_delimiters() -> None:
    msg = parse(
        b"MSH#!@%*#SENDER#FAC#RECV#FAC#20260301120000##ADT!A01#MSG007#P#2.5\nPID#1##12345!!!MRN##DOE!JOHN!A##19800101#M\n"
    )
    assert msg.get("PID-5.2") == "JOHN" and msg.trigger == "A01" and msg.get("PID-3.4") == "MRN"


def test_short_encoding_characters() -> None:
    msg = parse("MSH|^~|A|B|C|D|20260101||ADT^A01|X9|P|2.3\rPID|1||ID^^^AUTH~ID2\r")
    assert msg.get("PID-3[2]") == "ID2" and msg.get("PID-3.4") == "AUTH"
    assert msg.get("PID-5") is None
    with pytest.raises(MappingError):
        msg.set("PID-5.1.2", "x")  # no subcomponent separator


# ---------------------------------------------------------------------- charsets
def test_latin1_from_msh18(sample) -> None:
    raw = sample("messy_latin1_v23.hl7")
    msg = parse(raw)
    assert msg.codec == "latin-1" and msg.charset == "8859/1"
    assert msg.get("PID-5.1") == "MÜLLER" and msg.get("PID-5.2") == "JOSÉ"
    assert msg.to_bytes() == raw
    msg.set("PID-5.3", "FRANÇOISE")
    out = msg.to_bytes()
    assert "FRANÇOISE".encode("latin-1") in out
    with pytest.raises(MappingError):
        msg.set("PID-5.3", "日本")  # not representable in ISO 8859-1


def test_corpus_latin1_v23(corpus) -> None:
    raw = (corpus / "hl7v2_fhir_bridge_pkg" / "adt_a04_v23_latin1.hl7").read_bytes()
    msg = parse(raw)
    assert msg.codec == "latin-1"
    assert msg.get("PID-5.1") == "MUÑOZ"
    assert msg.get("PID-5.2") == "MARÍA"
    assert msg.to_bytes() == raw


def test_utf8_default_and_latin1_fallback() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1\rPID|1||ID||MÜLLER^JOSÉ\r"
    assert parse(text.encode("utf-8")).get("PID-5.1") == "MÜLLER"
    latin = parse(text.encode("latin-1"))  # not valid UTF-8, no MSH-18
    assert latin.codec == "latin-1" and latin.get("PID-5.2") == "JOSÉ"
    assert latin.to_bytes() == text.encode("latin-1")


def test_encoding_argument_wins() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1||||||UNICODE UTF-8\rPID|1||ID||MÜLLER\r"
    msg = parse(text.encode("latin-1"), encoding="latin-1")
    assert msg.get("PID-5") == "MÜLLER"
    with pytest.raises(Hl7ParseError) as err:
        parse(text.encode("latin-1"), encoding="utf-8")
    assert err.value.code == "102" and err.value.control_id == "X1"
    declared = parse(text.encode("latin-1"))  # MSH-18 says UTF-8 but the bytes are latin-1: fallback
    assert declared.get("PID-5") == "MÜLLER"


@pytest.mark.parametrize(
    ("charset", "codec"),
    [
        ("UNICODE UTF-8", "utf-8"),
        ("8859/1", "latin-1"),
        ("ASCII", "ascii"),
        ("8859/15", "iso8859-15"),
        ("UTF-8", "utf-8"),
    ],
)
def test_msh18_mapping(charset: str, codec: str) -> None:
    msg = parse(f"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1||||||{charset}\rPID|1\r".encode("ascii"))
    assert msg.codec == codec and msg.charset == charset


def test_multiple_msh18_repetitions_use_the_first() -> None:
    msg = parse(b"MSH|^~\\&#|||||20230501102531-0400||ORU^R01^ORU_R01|X||2.5.1||||||UTF-8~UNICODE")
    assert msg.charset == "UTF-8" and msg.codec == "utf-8"


# ---------------------------------------------------------------------- parse errors
@pytest.mark.parametrize(
    ("raw", "code", "words", "control_id"),
    [
        (b"", "100", "empty", None),
        (b"\r\n  \n", "100", "empty", None),
        (b"PID|1||X\r", "100", "does not start with an MSH", None),
        (b"hello world", "100", "does not start with an MSH", None),
        (b"FHS|^~\\&\rMSH|^~\\&|A\r", "100", "split_batch", None),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rPIDX|1\r", "100", "segment 2", "C9"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rPV|1\r", "100", "segment 2", "C9"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rpid|1\r", "100", "segment 2", "C9"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rMSH|^~\\&|A\r", "100", "second MSH", "C9"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rBTS|1\r", "100", "batch segment", "C9"),
        (b"MSH||A|B|C|D|1||ADT^A01|C8|P|2.5\r", "101", "MSH-2", "C8"),
        (b"MSH|^^\\&|A|B|C|D|1||ADT^A01|C7|P|2.5\r", "102", "MSH-2", "C7"),
        (b"MSH|^~\\&xyz|A|B|C|D|1||ADT^A01|C6|P|2.5\r", "102", "MSH-2", "C6"),
        (b"MSHA^~\\&|A\r", "101", "MSH-1", None),
        (b"MSH", "101", "MSH-1", None),
    ],
)
def test_parse_errors(raw: bytes, code: str, words: str, control_id: str | None) -> None:
    with pytest.raises(Hl7ParseError) as err:
        parse(raw)
    assert err.value.code == code
    assert words in str(err.value)
    assert err.value.control_id == control_id
    assert err.value.location


def test_parse_errors_do_not_quote_content() -> None:
    with pytest.raises(Hl7ParseError) as err:
        parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|C9|P|2.5\rDOE JANE 1980-01-01\r")
    assert "DOE" not in str(err.value) and "1980" not in str(err.value)


def test_parse_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        parse(123)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- meta
def test_meta(adt: Hl7Message) -> None:
    assert meta(adt) == {
        "control_id": "CTRL001",
        "message_type": "ADT^A01",
        "trigger": "A01",
        "sending_app": "SEND_APP",
        "sending_facility": "SEND_FAC",
        "patient_id": "MRN1",
        "version": "2.5.1",
    }


def test_meta_pid2_fallback_and_missing_values(sample) -> None:
    old = parse(sample("messy_latin1_v23.hl7"))
    assert meta(old)["patient_id"] == "EXT7788"
    bare = parse(b"MSH|^~\\&|||||||ACK\r")
    m = meta(bare)
    assert m["message_type"] == "ACK" and m["trigger"] is None and m["control_id"] is None
    assert m["patient_id"] is None and m["sending_app"] is None and m["version"] is None


# ---------------------------------------------------------------------- building
def test_new_message() -> None:
    msg = new_message("ADT^A04^ADT_A01", control_id="NEW1", sending_app="HUB", receiving_app="EHR")
    msg.set("PID-3.1", "MRN9")
    msg.set("PID-5.1", "DOE")
    assert msg.control_id == "NEW1" and msg.trigger == "A04" and msg.structure == "ADT_A01"
    assert msg.sending_app == "HUB" and msg.receiving_app == "EHR" and msg.version == "2.5.1"
    again = parse(msg.to_bytes())
    assert again.get("PID-3.1") == "MRN9" and again.segment_names == ["MSH", "PID"]
    latin = new_message("ADT^A01", codec="latin-1", control_id="L1")
    assert latin.charset == "8859/1"
    assert len(new_message("ACK").control_id or "") == 20

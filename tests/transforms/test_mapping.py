"""Declarative transforms (set, copy, delete, map, python) on HL7 v2, run through a channel's pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.engine import build
from hub.spec import load_config
from support import write_config

ADT = (
    b"MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20261123101500||ADT^A04^ADT_A01|C1|P|2.5.1\r"
    b"PID|1||000123^^^CLINIC^MR~987^^^SSA^SS||DOE^JANE||19800101|F|||||||||||123-45-6789\r"
    b"PV1|1|OUT\r"
)


def pipeline(
    tmp_path: Path,
    transforms: str,
    table: str | None = None,
    module: str | None = None,
    module_name: str = "site_rules",
):
    home = tmp_path
    (home / "mappings").mkdir(exist_ok=True)
    if table:
        (home / "mappings" / "classes.csv").write_text(table)
    if module:
        (home / "py").mkdir(exist_ok=True)
        (home / "py" / f"{module_name}.py").write_text(module)
    chan = f"""
name: t
source: {{type: memory, format: hl7v2}}
routes:
  - name: r
    transforms: {transforms}
    to: [out]
destinations:
  out: {{type: memory}}
"""
    cfg = load_config(write_config(home / "cfg", "home: ..\npython_path: [py]\nweb: {enabled: false}\n", {"t": chan}))
    built = build(cfg, testing=True)
    assert not built.problems, built.problems
    return built.channels["t"]


def run(channel, raw=ADT):
    p = channel.process(channel.make_message(raw))
    return p, (p.outputs["out"][0] if p.outputs.get("out") else None)


def test_set_copy_delete(tmp_path):
    ch = pipeline(
        tmp_path,
        "[{type: set, path: MSH-5, value: EHR}, {type: copy, from: 'PID-3[2].1', to: PID-2.1},"
        " {type: delete, path: PID-19}, {type: set, path: ZPI-1, value: 'A|B'}]",
    )
    p, out = run(ch)
    assert p.status == "accepted"
    doc = out.parsed
    assert doc.get("MSH-5") == "EHR" and doc.get("PID-2.1") == "987" and doc.get("PID-19") is None
    assert doc.get("ZPI-1") == "A|B" and b"ZPI|A\\F\\B" in out.raw  # escaped on write, decoded on read
    # the original message is untouched (each route works on its own copy)
    assert p.message.raw == ADT


def test_map_through_a_code_table(tmp_path):
    table = "pm,hl7\nOUT,O\nIN,I\n"
    ch = pipeline(tmp_path, "[{type: map, path: PV1-2, table: classes.csv}]", table)
    _, out = run(ch)
    assert out.parsed.get("PV1-2") == "O"
    p, _ = run(ch, ADT.replace(b"PV1|1|OUT", b"PV1|1|XYZ"))
    assert p.status == "rejected" and "PV1-2 value 'XYZ' is not in classes.csv" in p.reason and p.code == "103"
    ch = pipeline(tmp_path, "[{type: map, path: PV1-2, table: classes.csv, default: U, to: PV1-18}]", table)
    _, out = run(ch, ADT.replace(b"PV1|1|OUT", b"PV1|1|XYZ"))
    assert out.parsed.get("PV1-18") == "U" and out.parsed.get("PV1-2") == "XYZ"


def test_python_escape_hatch(tmp_path):
    module = (
        "from hub.errors import MappingError\nfrom hub.transforms.document import document_of\n"
        "def mrn(message):\n"
        "    doc = document_of(message)\n"
        "    if doc.get('PID-8') == 'U':\n"
        "        raise MappingError('sex unknown')\n"
        "    return message.raw.replace(b'DOE', b'ROE')\n"
    )
    ch = pipeline(tmp_path, "[{python: 'site_rules:mrn'}]", module=module)
    _, out = run(ch)
    assert b"ROE^JANE" in out.raw
    p, _ = run(ch, ADT.replace(b"|F|||", b"|U|||"))
    assert p.status == "rejected" and p.reason == "sex unknown"


def test_broken_python_reference_is_a_check_problem(tmp_path):
    with pytest.raises(AssertionError, match="cannot import site_rules:nothing"):
        pipeline(tmp_path, "[{python: 'site_rules:nothing'}]", module="x = 1\n")


def test_a_source_encoding_applies_when_msh18_is_empty(tmp_path):
    home = tmp_path
    chan = """
name: t
source: {type: memory, format: hl7v2, encoding: iso-8859-7}
routes:
  - {name: r, to: [out]}
destinations:
  out: {type: memory}
"""
    cfg = load_config(write_config(home / "cfg", "home: ..\nweb: {enabled: false}\n", {"t": chan}))
    ch = build(cfg, testing=True).channels["t"]
    text = "MSH|^~\\&|PM|F|EHR|F|20260101||ADT^A04|C1|P|2.5.1{msh18}\rPID|1||1^^^F^MR||ΠΑΠΑΔΟΠΟΥΛΟΣ^ΕΛΕΝΗ\r"
    p = ch.process(ch.make_message(text.format(msh18="").encode("iso-8859-7")))
    assert p.status == "accepted" and p.message.parsed.get("PID-5.1") == "ΠΑΠΑΔΟΠΟΥΛΟΣ"
    p = ch.process(ch.make_message(text.format(msh18="||||||UNICODE UTF-8").encode("utf-8")))
    assert p.message.parsed.get("PID-5.2") == "ΕΛΕΝΗ"  # MSH-18 wins over the channel's setting


def test_a_transform_bug_keeps_the_message_as_error_without_logging_content(tmp_path, caplog):
    module = "def boom(message):\n    raise KeyError('DOE^JANE is not a key')\n"
    ch = pipeline(tmp_path, "[{python: 'buggy_rules:boom'}]", module=module, module_name="buggy_rules")
    p, _ = run(ch)
    assert p.status == "error" and "DOE^JANE" in p.reason  # stored with the message for the operator
    assert "KeyError" in caplog.text and "DOE^JANE" not in caplog.text

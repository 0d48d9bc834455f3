"""v2_to_fhir as an engine of tables: invalid values (warn or reject, with their location), valid system URIs from
any name, coverage (`hub convert --explain`), warnings kept with the message (`hub show`), refusal of a structure
without a map, and the reuse of data type results across messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import V2ToFhir, convert, explain
from hub.transforms.fhir.validate import validate
from support import ROOT, SAMPLES, write_config

TABLES = load_tables(ROOT / "mappings" / "fhir")

# Values seen in real public-health ORUs: an hour 26, a 29 February in a common year, a 99th month.
BAD_DATES = (
    "MSH|^~\\&|LAB|LAB|EHR|CLINIC|20220301120000-0500||ORU^R01^ORU_R01|BAD0001|P|2.5.1\r"
    "PID|1||MRN7001^^^NIST MPI^MR||TESTER^ALEX||20220229|F|||1 MAIN ST^^TOWN^ST^12345\r"
    "OBR|1|ORD7001^EHR|FIL7001^LAB|1554-5^GLUCOSE^POST 12H CFST:MCNC:PT:SER/PLAS:QN|||201701222656\r"
    "OBX|1|NM|1554-5^GLUCOSE^POST 12H CFST:MCNC:PT:SER/PLAS:QN||182|mg/dL^mg/dL^UCUM|70-105|H|||F|||99999999\r"
)


def _all(b: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in b.get("entry", []) if e["resource"]["resourceType"] == rtype]


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_invalid_dates_are_left_out_with_a_warning_that_names_their_place():
    b, _, warnings = explain(BAD_DATES.encode(), TABLES)
    (patient,) = _all(b, "Patient")
    assert "birthDate" not in patient and patient["name"][0]["family"] == "TESTER"
    (obs,) = _all(b, "Observation")
    assert obs["valueQuantity"]["value"] == 182  # the rest of the observation is kept
    assert "effectiveDateTime" not in obs and "issued" not in obs
    text = " | ".join(warnings)
    assert "PID-7" in text and "OBX-14" in text and "OBR-7" in text
    assert not any("2022-02-29" in s or "T26" in s for s in _strings(b))
    assert [i for i in validate(b) if i.severity == "error"] == []


def test_invalid_reject_refuses_the_message_with_the_location():
    cfg = V2ToFhir.Config(type="v2_to_fhir", invalid="reject")
    with pytest.raises(MappingError) as err:
        convert(BAD_DATES.encode(), TABLES, cfg)
    assert err.value.location.startswith("PID") and "7" in err.value.location


def test_system_uris_have_no_spaces_whatever_the_sender_names():
    b = convert(BAD_DATES.encode(), TABLES)
    systems = [s for r in (e["resource"] for e in b["entry"]) for s in _systems(r)]
    assert systems and all(" " not in s and ":" in s for s in systems)
    assert "urn:hub:id:NIST%20MPI" in systems
    assert any(s.startswith("urn:hub:code-system:POST%2012H%20CFST") for s in systems)
    oid = convert(BAD_DATES.replace("NIST MPI", "&2.16.840.1.113883.3.72.5.30.2&ISO").encode(), TABLES)
    assert "urn:oid:2.16.840.1.113883.3.72.5.30.2" in [s for e in oid["entry"] for s in _systems(e["resource"])]


def _systems(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["system"]] if isinstance(node.get("system"), str) else []
        return own + [s for v in node.values() for s in _systems(v)]
    if isinstance(node, list):
        return [s for v in node for s in _systems(v)]
    return []


def test_explain_lists_what_no_map_covers_and_counts_the_rest():
    raw = (SAMPLES / "hl7v2" / "adt_a01.hl7").read_bytes().rstrip(b"\r\n") + b"\rZPI|1|SECRET PREFERENCE\r"
    _, cov, _ = explain(raw, TABLES)
    got = {loc: ok for loc, _, ok in cov}
    assert got["PID-5.1"] and got["PID-3(1).1"] and got["PV1-3.1"]
    assert got["ZPI-2"] is False  # a Z-segment no extensions.yaml rule names
    reached = sum(got.values())
    assert 0 < reached < len(got)


def test_hub_convert_explain_prints_the_share_and_the_uncovered(capsys):
    from hub.cli import main

    assert (
        main(
            [
                "convert",
                str(SAMPLES / "hl7v2" / "fhir_oru_types.hl7"),
                "--to",
                "fhir",
                "--explain",
                "--config",
                str(ROOT / "config"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "populated components reach the Bundle (" in out and "resources: " in out
    assert "not mapped (no row of mappings/fhir covers them):" in out and "MSH-12" in out


def test_a_structure_without_a_map_is_refused_with_what_is_supported():
    with pytest.raises(MappingError) as err:
        convert(b"MSH|^~\\&|A|B|C|D|20260101||RSP^K11^RSP_K11|X1|P|2.5.1\rMSA|AA|X0", TABLES)
    assert "no mapping for RSP^K11" in str(err.value) and "ADT^A01" in str(err.value) and err.value.location == "MSH-9"


def test_results_reused_between_messages_are_copies():
    """Codes, practitioners and places made by pure data type maps are reused from message to message: scribbling
    over every object of one Bundle (as a later transform may) must leave the next conversion as it was."""
    raw = (SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes()
    first = convert(raw, TABLES)
    expected = json.dumps(first, sort_keys=True)

    def scribble(node):
        if isinstance(node, dict):
            for k, v in list(node.items()):
                node[k] = "scribbled" if isinstance(v, str) else v
                scribble(v)
        elif isinstance(node, list):
            for v in node:
                scribble(v)
            node.append("extra")

    scribble(first)
    assert json.dumps(convert(raw, TABLES), sort_keys=True) == expected


def test_a_performing_lab_known_by_name_only_keeps_its_address():
    raw = BAD_DATES.replace(
        "|||F|||99999999\r", "|||F|||20220301|" + "|" * 8 + "SAMPLE LAB|1 LAB WAY^^LABTOWN^ST^12345\r"
    )
    b = convert(raw.encode(), TABLES)
    (obs,) = _all(b, "Observation")
    (lab,) = _all(b, "Organization")
    assert lab["name"] == "SAMPLE LAB" and lab["address"][0]["city"] == "LABTOWN"
    assert {
        "reference": next(e["fullUrl"] for e in b["entry"] if e["resource"] is lab),
        "display": "SAMPLE LAB",
    } in obs["performer"]
    assert [i for i in validate(b) if i.severity == "error"] == []


CHANNEL = """
name: results
source: {type: memory, format: hl7v2}
routes:
  - name: ehr
    transforms: [{type: v2_to_fhir}]
    to: [out]
destinations:
  out: {type: memory}
"""


async def test_warnings_are_kept_with_the_message_and_hub_show_lists_them(tmp_path: Path, capsys):
    from hub.cli import main
    from hub.engine import Engine
    from hub.message import Outcome
    from hub.spec import load_config

    home = tmp_path / "home"
    home.mkdir()
    hub_yaml = (
        f"store: {{url: 'sqlite:///{home}/hub.db'}}\nweb: {{enabled: false}}\nhome: {home}\n"
        f"mappings: {ROOT / 'mappings'}\n"
    )
    cfg = load_config(write_config(tmp_path / "cfg", hub_yaml, {"results": CHANNEL}))
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        receipt = await eng.sources["results"].push(BAD_DATES.encode())
        assert receipt.outcome is Outcome.ACCEPTED
        mid = receipt.results[0].message_id
        await eng.wait_delivered([mid], timeout=10)
        meta = eng.store.get_message(mid)["meta"]
        assert any("PID-7" in w for w in meta["warnings"])
    finally:
        await eng.stop()
    capsys.readouterr()
    assert main(["show", str(mid), "--config", str(tmp_path / "cfg")]) == 0
    out = capsys.readouterr().out
    assert "warning: v2_to_fhir: PID-7" in out
    assert json.loads(json.dumps(meta))  # plain JSON in the store


def test_the_performing_lab_keeps_its_address_its_producer_id_and_its_director():
    raw = BAD_DATES.replace(
        "|||F|||99999999\r",
        "|||F|||20220301|12D3456789^SAMPLE LAB^CLIA"
        + "|" * 8  # OBX-14, OBX-15, then OBX-23 …
        + "SAMPLE LAB^L^^^^CLIA&2.16.840.1.113883.4.7&ISO^XX^^^12D3456789|1 LAB WAY^^LABTOWN^ST^12345"
        "|1234^DIRECTOR^DANA^^^DR\r",
    )
    b = convert(raw.encode(), TABLES)
    (obs,) = _all(b, "Observation")
    by_url = {e["fullUrl"]: e["resource"] for e in b["entry"]}
    performers = [by_url[p["reference"]] for p in obs["performer"]]
    (lab,) = [r for r in performers if r["resourceType"] == "Organization"]
    assert lab["name"] == "SAMPLE LAB" and lab["address"][0]["city"] == "LABTOWN"
    assert {"12D3456789"} <= {i["value"] for i in lab["identifier"]}
    (director,) = [r for r in performers if r["resourceType"] == "Practitioner"]
    assert director["name"][0]["family"] == "DIRECTOR"
    assert [i for i in validate(b) if i.severity == "error"] == []


def test_a_booked_appointment_without_a_time_is_refused_and_a_reversed_period_loses_its_end():
    siu = (SAMPLES / "hl7v2" / "siu_s12.hl7").read_bytes().decode()
    lines = siu.replace("\n", "\r").split("\r")
    no_time = [
        "|".join(f if i != 11 else "" for i, f in enumerate(x.split("|"))) if x.startswith("SCH|") else x
        for x in lines
        if not x.startswith(("TQ1|", "AIS|", "AIG|", "AIL|", "AIP|"))
    ]
    with pytest.raises(MappingError, match="app-3"):
        convert("\r".join(no_time).encode(), TABLES)
    reversed_visit = BAD_DATES + "PV1|1|O|||||||||||||||||V1^^^H^VN|||||||||||||||||||||||||20260310|20260301\r"
    b, _, warnings = explain(reversed_visit.encode(), TABLES)
    (enc,) = _all(b, "Encounter")
    assert enc["period"] == {"start": "2026-03-10"} and any("per-1" in w for w in warnings)


def test_mangled_messages_never_crash_the_converter_nor_make_invalid_fhir():
    """Seeded mutations of every sample (segments dropped, doubled, swapped, cut; fields emptied or set to junk):
    each either converts to a Bundle fhir_validate accepts or is refused with a HubError — never anything else."""
    import random

    from hub.errors import HubError

    rnd = random.Random(12)
    junk = [b"", b'""', b"^^^", b"&&", b"~~", b"99999999", b"X" * 300, b"\\E\\", b"20220230", b"-1", b"1e999"]
    samples = [p.read_bytes() for p in sorted((SAMPLES / "hl7v2").rglob("*.hl7")) if not p.name.startswith("batch")]
    made = 0
    for k in range(600):
        segs = [s for s in samples[k % len(samples)].replace(b"\n", b"\r").split(b"\r") if s]
        for _ in range(2):
            i = rnd.randrange(1, len(segs)) if len(segs) > 1 else 0
            op = rnd.randrange(4)
            if op == 0 and len(segs) > 2:
                del segs[i]
            elif op == 1:
                segs.insert(i, segs[i])
            elif op == 2:
                f = segs[i].split(b"|")
                if len(f) > 2:
                    f[rnd.randrange(1, len(f))] = rnd.choice(junk)
                segs[i] = b"|".join(f)
            else:
                segs[i] = segs[i][: rnd.randrange(4, max(5, len(segs[i])))]
        try:
            b = convert(b"\r".join(segs), TABLES)
        except HubError:
            continue
        made += 1
        assert [str(i) for i in validate(b) if i.severity == "error"] == [], k
    assert made > 300


@pytest.mark.parametrize("msh9", ["ADT^A04", "adt^a04", "ADT^A04 ", "ADT_A04", "ADT^A04^ADT_A04", "ADT^A04^adt_a01"])
def test_the_event_is_read_however_the_sender_writes_msh_9(msh9):
    raw = (
        f"MSH|^~\\&|A|B|C|D|20260101120000||{msh9}|X1|P|2.3\rEVN|A04|20260101\r"
        "PID|1||M1^^^C^MR||DOE^J||19800101|F\rPV1|1|O\r"
    )
    b = convert(raw.encode(), TABLES)
    assert [e["resource"]["resourceType"] for e in b["entry"]][:2] == ["Patient", "Encounter"]


def test_a_role_in_the_visit_is_a_participant_of_the_encounter():
    lines = (SAMPLES / "hl7v2" / "adt_a01.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    at = next(i for i, x in enumerate(lines) if x.startswith(b"PV2|")) + 1
    lines.insert(
        at, b"ROL|1|AD|CP^Consulting Provider^HL70443|5555555555^CONSULT^CARL^^^DR^MD^^NPI^L^^^NPI|20260310100000-0600"
    )
    b = convert(b"\r".join(x for x in lines if x), TABLES)
    (enc,) = _all(b, "Encounter")
    by_url = {e["fullUrl"]: e["resource"] for e in b["entry"]}
    (rol,) = [p for p in enc["participant"] if "CP" in [c["code"] for t in p.get("type", []) for c in t["coding"]]]
    assert by_url[rol["individual"]["reference"]]["name"][0]["family"] == "CONSULT"
    assert rol["period"] == {"start": "2026-03-10T10:00:00-06:00"}
    assert [i for i in validate(b) if i.severity == "error"] == []


def test_a_table_naming_a_code_map_that_does_not_exist_is_a_configuration_error(tmp_path):
    import shutil

    from hub.errors import ConfigError

    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    pid = tmp_path / "mappings" / "fhir" / "segments" / "PID[Patient].csv"
    pid.write_text(pid.read_text().replace(",administrative_sex,", ",administrativ_sex,", 1))
    with pytest.raises(
        ConfigError, match=r"PID\[Patient\]\.csv:\d+: vocabulary 'administrativ_sex': there is no codes/"
    ):
        load_tables(tmp_path / "mappings" / "fhir").defs()

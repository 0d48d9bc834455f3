"""Draft hub tables from the HL7 v2-to-FHIR IG's mapping spreadsheets (a one-off: the tables are then owned and
edited in mappings/fhir/; see its README).

    python tools/import_ig.py ../shared/corpus/v2-to-fhir/ig-mappings OUT_DIR [--only PID[Patient],XAD[Address]]

Writes OUT_DIR/{segments,datatypes,messages}/*.csv and OUT_DIR/codes/*.csv (concept maps not already in
mappings/fhir/codes). Every IG row is kept: rows the hub can run are active; the others (a target the hub's R4 index
does not know, a resource made inside a target such as ``performer(PractitionerRole…)``, a condition the condition
reader cannot read, an unknown map) are written as ``#`` comment rows with the reason, so an analyst sees the whole
IG table and what is left to decide. Fields the IG does not map become ``# PID-32 (…): not mapped by the IG``.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.transforms.fhir import r4  # noqa: E402
from hub.transforms.fhir.conditions import ConditionError, parse_condition  # noqa: E402
from hub.transforms.fhir.mapdefs import compile_target  # noqa: E402

# IG concept map names → the hub's code map files (mappings/fhir/codes/<name>.csv)
VOCAB = {
    "AdministrativeSex": "administrative_sex",
    "PatientClass[EncounterClass]": "patient_class",
    "PatientClass[EncounterStatus]": "patient_class_status",
    "MaritalStatus": "marital_status",
    "IdentifierType": "identifier_type",
    "InterpretationCodes": "abnormal_flags",
    "ObservationResultStatusCodesInterpretation": "observation_status",
    "ResultStatus[Non-Queries]": "result_status",
    "OrderControlCode[ServiceRequest.status]": "order_control_status",
    "OrderStatus": "order_status",
    "AllergenType[AllergyIntoleranceCategory]": "allergen_type",
    "AllergySeverity[AllergyIntolerance.criticality]": "allergy_severity",
    "FillerStatusCodes[Appointment]": "appointment_status",
    "Relationship": "relationship",
    "ContactRole": "contact_role",
    "TelecommunicationUseCode": "telecom_use",
    "TelecommunicationEquipmentType": "telecom_equipment",
    "AddressType[Use]": "address_use",
    "NameType": "name_type",
    "DiagnosisType": "diagnosis_type",
    "CompletionStatus": "completion_status",
    "RouteOfAdministration": "route",
    "YesNoIndicator": "yes_no",
    "Yes/NoIndicator": "yes_no",
    "Event[EncounterStatus]": "event_encounter_status",
}
TYPE_ALIASES = {"String": "string", "Boolean": "boolean", "Code": "code", "Uri": "uri", "DateTime": "dateTime"}


def snake(name: str) -> str:
    base, _, rest = name.partition("[")
    s = re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()
    if rest:
        last = rest.rstrip("]").split(".")[-1]
        s += "_" + re.sub(r"(?<!^)(?=[A-Z])", "_", last).lower()
    return re.sub(r"[^a-z0-9_]+", "_", s).strip("_")


def vocab_name(ig: str) -> str:
    ig = ig.strip().replace(" ", "")
    return VOCAB.get(ig) or snake(ig)


def map_name(ig: str) -> str:
    ig = ig.strip()
    m = re.match(r"^([A-Z]{2,3})\[([A-Za-z]+)(-[^\]]*)?\]$", ig)
    if not m:
        return ig
    return f"{m.group(1)}[{TYPE_ALIASES.get(m.group(2), m.group(2))}{m.group(3) or ''}]"


def _read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [r + [""] * 20 for r in csv.reader(fh)]


def _clean(text: str) -> str:
    return " ".join(text.replace("\n", " ").split())


def _condition_ok(text: str) -> str | None:
    try:
        parse_condition(text)
        return None
    except (ConditionError, ValueError, IndexError) as exc:
        return f"condition not readable: {exc}"


def _target_ok(base: str, target: str, mp: str = "") -> tuple[str, str | None]:
    t = target.strip().replace(" ", "")
    if not t:
        return t, "no target"
    m = re.fullmatch(r"([A-Za-z0-9_.\[\]]+)\(([A-Z][A-Za-z]+)\)", t)
    if m and mp.split("[", 1)[-1].rstrip("]").split("-")[0] == m.group(2):
        t = m.group(1)  # participant.individual(Practitioner) with XCN[Practitioner]: the map makes the resource
    if "(" in t or "??" in t:
        return t, "a resource made inside the target: needs a decision"
    t = t.replace(".uri", ".url").replace("[1-3]", "")
    t = re.sub(r"^\[\d+\]\.", "", t)  # "[1].family" in a data type map: an element of the value itself
    t = re.sub(r"\[n\]", "", t)
    if t == "$this":
        return t, None
    if base in ("string", "code", "uri", "boolean", "dateTime", "decimal", "integer", "positiveInt", "id", "date"):
        return t, "the map's result is a primitive"
    try:
        compile_target(r4.TypeRef(base), t)
    except (ValueError, KeyError) as exc:
        return t, f"not an R4 element: {exc}"
    return t, None


def import_map(path: Path, kind: str, out_dir: Path, known_maps: set[str]) -> tuple[str, int, int]:
    """A segment map (kind 'segment') or data type map ('datatype') → our CSV text; (name, active, commented)."""
    rows = _read(path)
    name = re.search(r"_ ([A-Z0-9]+\[[^\]]+\])", path.name).group(1)  # type: ignore[union-attr]
    src_col = "field" if kind == "segment" else "component"
    _, typ = name[:-1].split("[", 1)
    typ = TYPE_ALIASES.get(typ.split("-")[0], typ.split("-")[0])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([src_col, "condition", "target", "map", "vocabulary", "table", "value", "comment"])
    active = commented = 0
    seen_fields = set()
    for r in rows[2:]:
        ident = r[1].strip()
        if not re.match(r"^[A-Z0-9]{2,3}[-.]\d+(\.\d+)*$", ident):
            continue
        if kind == "datatype":
            ident = re.sub(r"^[A-Z0-9]{2,3}\.", f"{name.split('[')[0]}.", ident)
        seen_fields.add(ident)
        fname = _clean(r[2])
        cond = _clean(r[6])
        target = _clean(r[9])
        mp = map_name(_clean(r[14]))
        voc = _clean(r[15])
        value = _clean(r[16])
        note = _clean(r[18] if len(r) > 18 else "")
        if not target and not value:
            w.writerow([f"# {ident} ({fname}): not mapped by the IG" + (f" — {note[:120]}" if note else "")])
            continue
        reason = None
        t, reason = _target_ok(typ, target, mp)
        if reason is None and value and not re.fullmatch(r'"[^"]*"|-?\d+|true|false', value):
            reason = "the value is a formula or a note, not a constant: needs a function or a decision"
        if reason is None and cond:
            reason = _condition_ok(cond)
        if reason is None and mp and mp.split("[")[0] not in ("fn:",) and mp not in known_maps:
            reason = f"map {mp} not imported"
        vocab = vocab_name(voc) if voc else ""
        if reason is None and mp and "[" in mp:
            mtype = TYPE_ALIASES.get(
                mp.split("[", 1)[1].rstrip("]").split("-")[0], mp.split("[", 1)[1].rstrip("]").split("-")[0]
            )
            if mtype == typ and t != "$this":
                t = "$this"  # FN[HumanName] inside XPN[HumanName], SAD[Address] inside XAD[Address]: same value
            elif t == "$this" and mtype != typ:
                reason = f"{mp} makes a {mtype}, not part of this {typ}: needs a decision"
        row = [ident, cond, t, mp if mp else "", vocab, "", value, (f"{fname}. {note}" if note else fname)[:300]]
        if reason is None:  # the hub's own reader must take the row as it is
            from hub.errors import ConfigError
            from hub.transforms.fhir.mapdefs import _compile_map_rows

            prim = r4.is_primitive(typ)
            try:
                _compile_map_rows(
                    path,
                    [
                        (
                            0,
                            dict(
                                zip(
                                    [src_col, "condition", "target", "map", "vocabulary", "table", "value"],
                                    row,
                                    strict=False,
                                )
                            ),
                        )
                    ],
                    None if prim else r4.TypeRef(typ),
                    src_col,
                    typ if prim else "",
                )
            except ConfigError as exc:
                reason = str(exc).split(": ", 1)[-1]
        if reason is not None:
            w.writerow(["# " + ",".join(_q(x) for x in row) + f"  [IG row not used: {reason}]"])
            commented += 1
        else:
            w.writerow(row)
            active += 1
    folder = out_dir / ("segments" if kind == "segment" else "datatypes")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(buf.getvalue(), encoding="utf-8")
    return name, active, commented


def _q(x: str) -> str:
    return f'"{x}"' if ("," in x or '"' in x) else x


def import_message(path: Path, out_dir: Path, segment_maps: set[str]) -> tuple[str, int, int]:
    rows = _read(path)
    name = re.search(r"_ ([A-Z]{3}_[A-Z0-9]{3})", path.name).group(1)  # type: ignore[union-attr]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["segment", "card", "condition", "resource", "map", "references", "comment"])
    active = commented = 0
    for r in rows[2:]:
        ident = _clean(r[1])
        if not ident or ident.startswith("/"):
            continue
        ident = re.sub(r"^[A-Z]{3}_[A-Z0-9]{2,3}(:follow:[A-Z0-9]{3})?\.", "", ident)
        lo, hi = r[4].strip(), r[5].strip()
        card = {("1", "1"): "1", ("0", "1"): "0..1", ("0", "-1"): "0..*", ("1", "-1"): "1..*"}.get((lo, hi), "0..*")
        cond = _clean(r[6])
        target = _clean(r[9])
        smap = map_name(_clean(r[10]))
        refs = _clean(r[11])
        note = _clean(r[8]) or _clean(r[13])
        row = [ident, card, "", "", "", "", note[:200]]
        reason = None
        if target:
            if "(" in target or "." in target.split("[")[0] or re.search(r"\]\.", target):
                reason = "target inside another resource: needs a decision"
            elif target.split("[")[0] in ("MessageHeader", "Provenance", "Bundle"):
                reason = "message header and provenance are not made for a transaction Bundle (see README)"
            elif smap not in segment_maps:
                reason = f"segment map {smap} not imported"
            elif smap.split("[", 1)[1].split("-")[0].rstrip("]") != target.split("[")[0]:
                reason = f"{smap} does not fill a {target.split('[')[0]}"
            elif cond:
                reason = _condition_ok(cond)
            ref_text = "; ".join(
                p.strip() for p in re.split(r";|\s(?=[A-Z][A-Za-z]+(?:\[\w+\])?\.)", refs) if p.strip()
            )
            if reason is None and ref_text:
                try:
                    from hub.transforms.fhir.mapdefs import _refs

                    _refs(ref_text, {})
                except (ValueError, KeyError) as exc:
                    reason = f"references not readable: {exc}"
            row = [ident, card, cond, target.replace("[n]", "[1]"), smap, ref_text, note[:200]]
        if reason is not None:
            w.writerow([ident, card, "", "", "", "", f"IG: {target} via {smap} not used: {reason}"[:300]])
            commented += 1
        else:
            w.writerow(row)
            active += 1 if target else 0
    folder = out_dir / "messages"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(buf.getvalue(), encoding="utf-8")
    return name, active, commented


def import_codes(path: Path, out_dir: Path, existing: set[str]) -> str | None:
    m = re.search(r"Concept Map_ (.+) - ", path.name)
    if not m:
        return None
    name = vocab_name(m.group(1))
    if name in existing:
        return None
    rows = _read(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["v2_code", "fhir_code", "fhir_system", "fhir_display", "v2_display"])
    n = 0
    for r in rows[2:]:
        code, text, fcode, fdisp, fsys = (
            r[0].strip(),
            r[1].strip(),
            r[6].strip(),
            r[8].strip() or r[7].strip(),
            r[9].strip(),
        )
        if code and fcode:
            w.writerow([code, fcode, fsys, fdisp, text])
            n += 1
    if not n:
        return None
    folder = out_dir / "codes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(buf.getvalue(), encoding="utf-8")
    return name


def settle(out: Path) -> None:
    """Load the drafts as the hub does; a row it refuses becomes a comment with the reason, until all load."""
    from hub.errors import ConfigError
    from hub.transforms.fhir.mapdefs import load_defs

    for _ in range(5000):
        try:
            load_defs(out)
            return
        except ConfigError as exc:
            m = re.match(r"^(.+?\.csv):(\d+): (.*)$", str(exc))
            if m is None:
                raise
            path, line, why = Path(m.group(1)), int(m.group(2)), m.group(3)
            lines = path.read_text(encoding="utf-8").split("\n")
            text = lines[line - 1]
            lines[line - 1] = "# " + text.replace('"', "'") + f"  [IG row not used: {why}]"
            path.write_text("\n".join(lines), encoding="utf-8")
            print(f"  {path.name}:{line}: {why}")


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    only = set(sys.argv[4].split(",")) if len(sys.argv) > 4 and sys.argv[3] == "--only" else None
    dts = sorted((src / "datatypes").glob("*.csv"))
    known = set()
    for p in dts:
        mm = re.search(r"_ ([A-Z0-9]+\[[^\]]+\])", p.name)
        if mm:
            known.add(map_name(mm.group(1)))
    dts = [p for p in dts if "MessageHeader." not in p.name]  # MessageHeader is not made (see README)
    for p in dts:
        n, a, c = import_map(p, "datatype", out, known)
        print(f"datatype {n}: {a} rows, {c} left as comments")
    seg_names = set()
    for p in sorted((src / "segments").glob("*.csv")):
        n, a, c = import_map(p, "segment", out, known)
        seg_names.add(n)
        print(f"segment {n}: {a} rows, {c} left as comments")
    for p in sorted((src / "messages").glob("*.csv")):
        n, a, c = import_message(p, out, seg_names)
        print(f"message {n}: {a} rows, {c} left as comments")
    settle(out)
    existing = {p.stem for p in (ROOT / "mappings/fhir/codes").glob("*.csv")}
    for p in sorted((src / "codesystems").glob("*.csv")):
        n2 = import_codes(p, out, existing)
        if n2:
            print(f"codes {n2}")
    del only


if __name__ == "__main__":
    main()

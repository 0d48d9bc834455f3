"""Message content made readable for the detail view: HL7 v2 segment by segment with field names, X12 by loop
and segment, FHIR as formatted JSON. Only the detail view calls this — never the ingest path.

Field names come from hl7apy's structure tables for the message's version (loaded lazily, cached per segment);
X12 segment and loop names come from a small table of the segments and loops of 837/835/999/277 that a practice
meets; each element's name from the implementation guide's map that pyx12 ships (``pyx12/map/*.xml``, chosen by
ISA12, GS01 and GS08 as pyx12's ``maps.xml`` says; read once and cached), by loop and segment, else by segment
anywhere in that map. FHIR (JSON) as formatted JSON in the document's key order and as a tree of nodes the browser
can fold (:func:`json_tree`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["render", "render_hl7", "render_x12", "render_fhir", "hl7_field_names", "x12_element_names", "json_tree"]

_HL7_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")


def _title(name: str | None) -> str:
    if not name:
        return ""
    words = name.replace("_", " ").lower().split()
    small = {"of", "or", "and", "the", "to", "for", "by", "in", "e", "g"}
    upper = {"id", "ssn", "pid", "npi", "ii", "iii", "cpt", "icd", "ndc"}
    out = [
        w.upper() if w in upper or any(c.isdigit() for c in w) else w if (i and w in small) else w.capitalize()
        for i, w in enumerate(words)
    ]
    return " ".join(out).replace(" S ", "'s ")


@lru_cache(maxsize=512)
def hl7_field_names(segment: str, version: str) -> dict[int, tuple[str, str, tuple[str, ...]]]:
    """Field number → (name, data type, component names) from hl7apy; {} for Z-segments and unknown ones."""
    if version not in _HL7_VERSIONS:
        version = "2.5"
    try:
        from hl7apy import load_reference  # heavy: imported on the first detail view only

        ref = load_reference(segment, "Segment", version)
    except Exception:
        return {}
    out: dict[int, tuple[str, str, tuple[str, ...]]] = {}
    try:
        for child in ref[1]:
            fname, spec = child[0], child[1]
            n = int(fname.rsplit("_", 1)[1])
            kind, children, datatype, long_name = spec[0], spec[1], spec[2], spec[3]
            comps: tuple[str, ...] = ()
            if kind == "sequence" and children:
                comps = tuple(_title(c[1][3]) for c in children)
            out[n] = (_title(long_name), datatype or "", comps)
    except (IndexError, TypeError, ValueError):
        return out
    return out


def render_hl7(raw: bytes) -> dict[str, Any] | None:
    from hub.errors import InputError
    from hub.transforms.hl7v2 import parse

    try:
        msg = parse(raw)
    except InputError:
        return None
    enc = msg.encoding_chars
    version = (msg.version or "2.5").strip()
    segments = []
    for i, seg in enumerate(msg.segments):
        names = hl7_field_names(seg.name, version) if re.fullmatch(r"[A-Z][A-Z0-9]{2}", seg.name) else {}
        fields = []
        for n in range(1, len(seg.fields)):
            value = seg.field(n)
            if value == "":
                continue
            name, datatype, comps = names.get(n, ("", "", ()))
            entry: dict[str, Any] = {"n": n, "id": f"{seg.name}-{n}", "name": name, "type": datatype, "value": value}
            header = seg.name in ("MSH", "FHS", "BHS") and n <= 2
            if comps and not header and enc.component and enc.component in value:
                reps = value.split(enc.repetition) if enc.repetition else [value]
                entry["repetitions"] = [
                    [
                        {"n": k + 1, "name": comps[k] if k < len(comps) else "", "value": c}
                        for k, c in enumerate(rep.split(enc.component))
                        if c != ""
                    ]
                    for rep in reps
                ]
            fields.append(entry)
        segments.append({"index": i + 1, "name": seg.name, "fields": fields})
    return {"kind": "hl7v2", "version": version, "message_type": msg.message_type, "segments": segments}


# ------------------------------------------------------------------------------------------------ X12
X12_SEGMENTS = {
    "ISA": "Interchange Control Header",
    "IEA": "Interchange Control Trailer",
    "GS": "Functional Group Header",
    "GE": "Functional Group Trailer",
    "ST": "Transaction Set Header",
    "SE": "Transaction Set Trailer",
    "BHT": "Beginning of Hierarchical Transaction",
    "NM1": "Entity Name",
    "N1": "Party Identification",
    "N2": "Additional Name",
    "N3": "Address",
    "N4": "City, State, ZIP",
    "REF": "Reference Identification",
    "PER": "Contact Information",
    "HL": "Hierarchical Level",
    "PRV": "Provider Information",
    "SBR": "Subscriber Information",
    "PAT": "Patient Information",
    "DMG": "Demographics",
    "CLM": "Claim Information",
    "DTP": "Date or Time Period",
    "DTM": "Date/Time Reference",
    "HI": "Health Care Diagnosis Codes",
    "LX": "Line Number",
    "SV1": "Professional Service",
    "SV2": "Institutional Service",
    "SV3": "Dental Service",
    "AMT": "Monetary Amount",
    "QTY": "Quantity",
    "BPR": "Financial Information",
    "TRN": "Trace Number",
    "CLP": "Claim Payment Information",
    "CAS": "Claims Adjustment",
    "SVC": "Service Payment Information",
    "PLB": "Provider Level Adjustment",
    "LQ": "Industry Code",
    "MIA": "Inpatient Adjudication",
    "MOA": "Outpatient Adjudication",
    "TA1": "Interchange Acknowledgment",
    "AK1": "Functional Group Response Header",
    "AK2": "Transaction Set Response Header",
    "IK3": "Error Identification",
    "IK4": "Implementation Data Element Note",
    "IK5": "Transaction Set Response Trailer",
    "AK9": "Functional Group Response Trailer",
    "CTX": "Context",
    "PWK": "Paperwork",
    "CN1": "Contract Information",
    "NTE": "Note",
    "OI": "Other Insurance Coverage",
    "STC": "Status Information",
    "TRN02": "Trace",
    "CL1": "Institutional Claim Code",
    "HCP": "Health Care Pricing",
    "LIN": "Drug Identification",
    "CTP": "Pricing Information",
    "SVD": "Line Adjudication",
    "K3": "File Information",
}
# (transaction set, segment, qualifier) → loop; the qualifier is element 01 (HL: element 03)
_LOOPS = {
    ("837", "NM1", "41"): "1000A Submitter",
    ("837", "NM1", "40"): "1000B Receiver",
    ("837", "HL", "20"): "2000A Billing Provider",
    ("837", "NM1", "85"): "2010AA Billing Provider Name",
    ("837", "NM1", "87"): "2010AB Pay-to Address",
    ("837", "HL", "22"): "2000B Subscriber",
    ("837", "NM1", "IL"): "2010BA Subscriber Name",
    ("837", "NM1", "PR"): "2010BB Payer Name",
    ("837", "HL", "23"): "2000C Patient",
    ("837", "NM1", "QC"): "2010CA Patient Name",
    ("837", "CLM", ""): "2300 Claim",
    ("837", "NM1", "DN"): "2310A Referring Provider",
    ("837", "NM1", "82"): "2310B Rendering Provider",
    ("837", "NM1", "77"): "2310C Service Facility",
    ("837", "NM1", "DQ"): "2310D Supervising Provider",
    ("837", "NM1", "PW"): "2310E Ambulance Pick-up",
    ("837", "NM1", "45"): "2310F Ambulance Drop-off",
    ("837", "NM1", "PE"): "2010AC Pay-to Plan",
    ("837", "SBR", ""): "2320 Other Subscriber",
    ("837", "LX", ""): "2400 Service Line",
    ("835", "N1", "PR"): "1000A Payer",
    ("835", "N1", "PE"): "1000B Payee",
    ("835", "LX", ""): "2000 Header Number",
    ("835", "CLP", ""): "2100 Claim Payment",
    ("835", "SVC", ""): "2110 Service Payment",
    ("835", "PLB", ""): "Summary",
    ("999", "AK2", ""): "2000 Transaction Set Response",
    ("999", "IK3", ""): "2100 Segment Error",
    ("277", "HL", "20"): "2000A Information Source",
    ("277", "HL", "21"): "2000B Information Receiver",
    ("277", "HL", "19"): "2000C Service Provider",
    ("277", "HL", "22"): "2000D Subscriber",
}
_ENVELOPE = {
    "ISA": "Interchange",
    "GS": "Functional Group",
    "ST": "Transaction Header",
    "SE": "Trailer",
    "GE": "Trailer",
    "IEA": "Trailer",
}


# Element names: (loop id, segment id) → {element number: name}; "" as the loop: the segment anywhere in the map.
X12Names = dict[tuple[str, str], dict[int, str]]


def _pyx12_map(name: str) -> Any:
    return resources.files("pyx12").joinpath("map", name)


@lru_cache(maxsize=1)
def _map_index() -> list[tuple[str, str, str, str]]:
    """(ISA12, GS08, GS01, file) of pyx12's maps.xml."""
    out = []
    try:
        root = ET.fromstring(_pyx12_map("maps.xml").read_bytes())
    except (OSError, ET.ParseError, ModuleNotFoundError):
        return []
    for version in root.iter("version"):
        for m in version.iter("map"):
            out.append((version.get("icvn", ""), m.get("vriic", ""), m.get("fic", ""), (m.text or "").strip()))
    return out


def _map_file(isa12: str, gs01: str, gs08: str) -> str | None:
    index = _map_index()
    # exact; then the same guide of another addendum (005010X222A2 → the A1 map); any version; the same ISA12
    for same_isa, release in ((True, 99), (True, 10), (False, 10), (True, 0)):
        for v, r, f, file in index:
            if f == gs01 and (v == isa12 or not same_isa) and r[:release] == gs08[:release]:
                return file
    return None


@lru_cache(maxsize=32)
def x12_element_names(file: str) -> X12Names:
    """Element names of one pyx12 map file, by (loop id, segment id) and by ("", segment id); {} when unreadable."""
    try:
        root = ET.fromstring(_pyx12_map(file).read_bytes())
    except (OSError, ET.ParseError, ModuleNotFoundError):
        return {}
    out: X12Names = {}

    def walk(node: ET.Element, loop: str) -> None:
        for child in node:
            if child.tag == "loop":
                walk(child, child.get("xid", loop))
            elif child.tag == "segment":
                sid = child.get("xid", "")
                for el in child:
                    if el.tag not in ("element", "composite"):
                        continue
                    seq, name = el.findtext("seq"), el.findtext("name")
                    if not (seq and seq.isdigit() and name):
                        continue
                    for key in ((loop, sid), ("", sid)):
                        out.setdefault(key, {}).setdefault(int(seq), name.strip())
            else:
                walk(child, loop)

    walk(root, "")
    return out


def render_x12(raw: bytes) -> dict[str, Any] | None:
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("ISA") or len(text) < 106:
        return None
    elem, comp, term = text[3], text[104], text[105]
    if term in "\r\n":
        term = "\n"
    parts = [s.strip("\r\n \t") for s in text.split(term)]
    segments = []
    tx = ""
    loop = ""
    names: X12Names = {}
    isa = parts[0].split(elem) if parts else []
    gs = next((p.split(elem) for p in parts if p.startswith(f"GS{elem}")), [])
    if len(isa) > 12 and len(gs) > 8:  # the first group's guide names the elements (an interchange has one kind)
        file = _map_file(isa[12], gs[1], gs[8])
        names = x12_element_names(file) if file else {}
    for i, seg in enumerate(p for p in parts if p):
        els = seg.split(elem)
        sid = els[0]
        if sid == "ST" and len(els) > 1:
            tx = els[1][:3]
            loop = "Transaction Header"
        elif sid in _ENVELOPE:
            loop = _ENVELOPE[sid]
        else:
            qual = (
                (els[3] if sid == "HL" and len(els) > 3 else els[1] if len(els) > 1 else "")
                if sid in ("NM1", "N1", "HL")
                else ""
            )
            found = _LOOPS.get((tx, sid, qual))
            if tx == "837" and loop[:3] in ("232", "233") and sid == "NM1" and qual in ("IL", "PR"):
                found = "2330A Other Subscriber Name" if qual == "IL" else "2330B Other Payer Name"
            elif tx == "837" and sid == "SBR" and not loop.startswith(("23", "24")):
                found = None  # the subscriber's own SBR belongs to 2000B; only one after CLM starts 2320
            if found:
                loop = found
        elements = []
        loop_id = loop.split(" ", 1)[0]
        by_name = names.get((loop_id, sid)) or {}
        anywhere = names.get(("", sid)) or {}
        element_names: dict[str, str] = {}
        for k, v in enumerate(els[1:], start=1):
            if v == "":
                continue
            entry: dict[str, Any] = {"id": f"{sid}{k:02d}", "value": v}
            name = by_name.get(k) or anywhere.get(k)
            if name:
                element_names[entry["id"]] = name
            if comp and comp in v and sid != "ISA":
                entry["components"] = v.split(comp)
            elements.append(entry)
        segments.append(
            {
                "index": i + 1,
                "id": sid,
                "name": X12_SEGMENTS.get(sid, ""),
                "loop": loop,
                "elements": elements,
                "element_names": element_names,  # element id → its name in the implementation guide
            }
        )
    return {
        "kind": "x12",
        "transaction": tx,
        "separators": {"element": elem, "component": comp, "segment": term},
        "segments": segments,
    }


def render_fhir(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    summary: dict[str, Any] = {}
    if isinstance(doc, dict):
        summary["resourceType"] = doc.get("resourceType")
        if doc.get("resourceType") == "Bundle":
            entries = doc.get("entry") or []
            summary["type"] = doc.get("type")
            summary["entries"] = [(e.get("resource") or {}).get("resourceType") for e in entries if isinstance(e, dict)]
        elif doc.get("resourceType") == "OperationOutcome":
            summary["issues"] = [
                {k: i.get(k) for k in ("severity", "code", "diagnostics")}
                for i in doc.get("issue") or []
                if isinstance(i, dict)
            ]
    return {
        "kind": "fhir",
        "summary": summary,
        "pretty": json.dumps(doc, indent=2, ensure_ascii=False),
        "tree": json_tree(doc),
    }


def json_tree(value: Any, key: str | int | None = None, path: str = "$") -> dict[str, Any]:
    """A JSON document as nodes the browser can fold, in the document's key order: ``{"key", "path", "type":
    object|array|string|number|boolean|null, "value" (scalars) | "children" + "size" (objects and arrays)}``;
    an object node with a ``resourceType`` carries it as ``"resourceType"`` (the label of a folded resource)."""
    node: dict[str, Any] = {"key": key, "path": path}
    if isinstance(value, dict):
        node.update(type="object", size=len(value))
        if isinstance(value.get("resourceType"), str):
            node["resourceType"] = value["resourceType"]
        node["children"] = [json_tree(v, k, f"{path}.{k}") for k, v in value.items()]
    elif isinstance(value, list):
        node.update(type="array", size=len(value))
        node["children"] = [json_tree(v, i, f"{path}[{i}]") for i, v in enumerate(value)]
    else:
        kind = (
            "null"
            if value is None
            else "boolean"
            if isinstance(value, bool)
            else "number"
            if isinstance(value, (int, float))
            else "string"
        )
        node.update(type=kind, value=value)
    return node


def render(content_type: str | None, raw: bytes | None) -> dict[str, Any] | None:
    """A structure for the detail view, or None when the content is not (valid) HL7 v2, X12 or JSON."""
    if not raw:
        return None
    head = raw[:16].lstrip(b"\xef\xbb\xbf \t\r\n\x0b")
    try:
        if content_type == "hl7v2" or head[:3] in (b"MSH", b"FHS", b"BHS"):
            return render_hl7(raw)
        if content_type == "x12" or head[:3] == b"ISA":
            return render_x12(raw)
        if content_type == "fhir" or head[:1] in (b"{", b"["):
            return render_fhir(raw)
    except Exception:
        return None
    return None

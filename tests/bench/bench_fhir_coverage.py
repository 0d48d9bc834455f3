"""v2_to_fhir coverage: the share of populated v2 components that reach the FHIR Bundle (``hub convert --explain``),
over the project's samples and the third-party corpus (``../shared/corpus/hl7v2`` when present), per message type,
with the components most often left out. Figures only. Run with `make bench`."""

from __future__ import annotations

import re
from collections import Counter

from hub.errors import HubError
from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import explain
from hub.transforms.hl7v2 import parse, split_batch
from support import ROOT, SAMPLES

CORPUS = ROOT.parent / "shared" / "corpus" / "hl7v2"
IG_SEGMENTS = ROOT.parent / "shared" / "corpus" / "v2-to-fhir" / "ig-mappings" / "segments"
# not patient data: the envelope (MSH: a transaction Bundle is not a FHIR message, MessageHeader is not made) and
# the sequence numbers (Set IDs) of repeating segments — the second share leaves them out
_SET_ID = re.compile(
    r"^(MSH-|(PID|PV1|NK1|OBR|OBX|NTE|AL1|DG1|PR1|IN1|GT1|SPM|TQ1|AIS|AIG|AIL|AIP|FT1|RXR|RXC|ROL|PRT|IAM|TXA|SFT)(\[\d+\])?-1(\(|$|\.))"
)


def _messages():
    files = sorted((SAMPLES / "hl7v2").rglob("*.hl7"))
    if CORPUS.is_dir():
        files += sorted(p for p in CORPUS.rglob("*") if p.is_file() and not p.name.endswith((".md", ".json", ".txt")))
    for f in files:
        try:
            parts = split_batch(f.read_bytes())
        except HubError:
            continue
        for raw in parts:
            yield f, raw


def _ig_fields() -> dict[str, set[int]]:
    """The fields the IG's segment spreadsheets map to something (a FHIR target in column 10)."""
    import csv

    out: dict[str, set[int]] = {}
    for f in IG_SEGMENTS.glob("*.csv") if IG_SEGMENTS.is_dir() else ():
        m = re.search(r"R4_ (\w+)\[", f.name)
        if m is None:
            continue
        seg = m.group(1)
        with open(f, encoding="utf-8", errors="replace") as fh:
            for row in csv.reader(fh):
                if len(row) > 10 and re.fullmatch(rf"{seg}-\d+", row[1] or "") and row[9].strip():
                    out.setdefault(seg, set()).add(int(row[1].split("-")[1]))
    return out


def test_bench_v2_to_fhir_coverage():
    tables = load_tables(ROOT / "mappings" / "fhir")
    per_type: dict[str, list[int]] = {}
    left: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    ig = _ig_fields()
    ig_fields = [
        0,
        0,
    ]  # field repetitions the IG maps (outside MSH, EVN, SFT: no MessageHeader, no Provenance): populated, reached
    total = [0, 0, 0]
    data = [0, 0]
    for _, raw in _messages():
        try:
            msg = parse(raw)
        except HubError:
            continue
        kind = f"{msg.message_type}^{msg.trigger}"
        try:
            _, cov, _ = explain(msg, tables)
        except HubError:
            refused[kind] += 1
            continue
        reached = sum(1 for *_, ok in cov if ok)
        t = per_type.setdefault(msg.message_type or "?", [0, 0, 0])
        t[0] += 1
        t[1] += reached
        t[2] += len(cov)
        total[0] += 1
        total[1] += reached
        total[2] += len(cov)
        reps: dict[tuple[str, str, str], bool] = {}
        for loc, _, ok in cov:
            m = re.match(r"([A-Z0-9]{3})(\[\d+\])?-(\d+)(\(\d+\))?", loc)
            if m and m.group(1) not in ("MSH", "EVN", "SFT") and int(m.group(3)) in ig.get(m.group(1), ()):
                k = (m.group(1) + (m.group(2) or ""), m.group(3), m.group(4) or "")
                reps[k] = reps.get(k, False) or ok
        ig_fields[0] += len(reps)
        ig_fields[1] += sum(reps.values())
        for loc, _, ok in cov:
            if not _SET_ID.match(loc):
                data[0] += ok
                data[1] += 1
            if not ok:
                left[re.sub(r"\[\d+\]|\(\d+\)", "", loc)] += 1
    print()
    print(
        f"v2_to_fhir coverage: {total[1]} of {total[2]} populated components reach the Bundle "
        f"({100 * total[1] / max(total[2], 1):.1f}%) over {total[0]} messages; refused: {sum(refused.values())} "
        f"({', '.join(f'{k} {n}' for k, n in refused.most_common())})"
    )
    print(f"  without the envelope (MSH) and Set IDs: {data[0]} of {data[1]} ({100 * data[0] / max(data[1], 1):.1f}%)")
    if ig:
        print(
            f"  fields the IG maps (repetitions, outside MSH/EVN/SFT), any component reached: {ig_fields[1]} of "
            f"{ig_fields[0]} ({100 * ig_fields[1] / max(ig_fields[0], 1):.1f}%)"
        )
    for kind, (n, r, c) in sorted(per_type.items()):
        print(f"  {kind:5s} {n:4d} messages  {100 * r / max(c, 1):5.1f}%")
    print("  most often not mapped: " + ", ".join(f"{k} ×{n}" for k, n in left.most_common(30)))

"""v2_to_fhir speed: ADT^A01 and a 10-OBX ORU^R01 → transaction Bundles (serialised), with and without validation.

Targets (issue 4), per core without validation: ≥ 2,000 ADT/s and ≥ 500 ORU/s. Run with `make bench`.
"""

from __future__ import annotations

import time

from support import ROOT, SAMPLES
from hub.message import Message
from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import V2ToFhir
from hub.transforms.fhir.validate import FhirValidate
from hub.channels.base import Context


def _rate(fn, raw: bytes, seconds: float = 2.0) -> float:
    """Messages per CPU-second of this process: the per-core rate, even when other work shares the machine."""
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        fn(Message(raw=raw, content_type="hl7v2"))
        n += 1
    return n / (time.process_time() - start)


def test_bench_v2_to_fhir():
    load_tables(ROOT / "mappings" / "fhir")
    conv = V2ToFhir(V2ToFhir.Config(type="v2_to_fhir"), Context(home=ROOT, mappings_dir=ROOT / "mappings"))
    val = FhirValidate(FhirValidate.Config(type="fhir_validate"), None)
    adt = (SAMPLES / "hl7v2" / "adt_a01.hl7").read_bytes()
    oru = (SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes()  # 10 OBX
    rows = []
    for name, raw, target in (("ADT^A01", adt, 2000), ("ORU^R01 (10 OBX)", oru, 500)):
        plain = _rate(conv, raw)
        checked = _rate(lambda m: val(conv(m)), raw, 1.5)
        rows.append((name, plain, checked, target))
    print()
    for name, plain, checked, target in rows:
        print(f"v2_to_fhir {name:18s} {plain:8.0f} msg/s per core without validation (target {target}), {checked:6.0f} msg/s with fhir_validate")
    for name, plain, _, target in rows:
        assert plain >= target / 2, f"{name}: {plain:.0f}/s is far below the target of {target}/s"

"""v2_to_fhir speed: ADT^A01 and a 10-OBX ORU^R01 → transaction Bundles (serialised), with and without validation.

Issue 4 set targets per core without validation (≥ 2,000 ADT/s, ≥ 500 ORU/s); the table-driven converter of
issue 12 is slower (figures in the issue notes). Figures only, no timed assertion. Run with `make bench`.

Rates are messages per CPU-second of this process (``time.process_time``): the per-core rate, even when other
work shares the machine. Two workloads per message type:

* ``distinct`` (the figure checked against the target): every message is another patient, visit, order and
  control id — as in production, where only practitioners, locations, payers and codes repeat — so caches of
  per-patient values cannot flatter the figure;
* ``same``: the sample itself over and over (the figure earlier reports quoted).
"""

from __future__ import annotations

import time

from hub.channels.base import Context
from hub.message import Message
from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import V2ToFhir
from hub.transforms.fhir.validate import FhirValidate
from hub.transforms.hl7v2 import parse
from support import ROOT, SAMPLES

# fields that identify the patient, the visit, the order or the message: changed in every distinct message
_UNIQUE = (
    "MSH-10",
    "PID-3.1",
    "PID-5.1",
    "PID-7",
    "PID-11.1",
    "PID-13[1].7",
    "PV1-19.1",
    "ORC-2.1",
    "ORC-3.1",
    "OBR-2.1",
    "OBR-3.1",
)


def _distinct(raw: bytes, n: int) -> list[bytes]:
    """n messages like ``raw``, each with its own identifiers, name, birth date, address, phone and values."""
    out = []
    for i in range(n):
        msg = parse(raw)
        for path in _UNIQUE:
            old = msg.get(path)
            if not old:
                continue
            if path == "PID-7":  # birth date
                msg.set(path, f"19{40 + i % 60:02d}{1 + i % 12:02d}{1 + i % 28:02d}")
            elif path == "PID-13[1].7":  # phone number
                msg.set(path, f"{5550000 + i:07d}")
            else:
                msg.set(path, f"{str(old)[:20]}{i:06d}")
        when = f"202603{1 + i % 28:02d}{i % 24:02d}{i % 60:02d}{i // 60 % 60:02d}-0600"  # event, order, result times
        for path in ("MSH-7", "EVN-2", "PV1-44", "ORC-9", "OBR-7", "OBR-22"):
            if msg.get(path):
                msg.set(path, when)
        for k in range(1, 11):
            if msg.get(f"OBX[{k}]-14"):
                msg.set(f"OBX[{k}]-14", when)
            value = msg.get(f"OBX[{k}]-5")
            if value and msg.get(f"OBX[{k}]-2") == "NM":
                msg.set(f"OBX[{k}]-5", f"{float(str(value)) + (i % 50) / 10:.1f}")
        out.append(msg.to_bytes())
    return out


def _rate(fn, raws: list[bytes], seconds: float = 2.0) -> float:
    """Messages per CPU-second of this process: the per-core rate, even when other work shares the machine."""
    n, start = 0, time.process_time()
    k = len(raws)
    while time.process_time() - start < seconds:
        fn(Message(raw=raws[n % k], content_type="hl7v2"))
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
        many = _distinct(raw, 2000)
        assert len(set(many)) == len(many)
        distinct = _rate(conv, many)
        same = _rate(conv, [raw], 1.5)
        checked = _rate(lambda m: val(conv(m)), many[:200], 1.5)
        rows.append((name, distinct, same, checked, target))
    print()
    for name, distinct, same, checked, target in rows:
        print(
            f"v2_to_fhir {name:18s} {distinct:6.0f} msg/s per core without validation (target {target}; "
            f"{1e6 / distinct:5.0f} µs/msg; same message repeated: {same:6.0f}/s), "
            f"{checked:5.0f} msg/s with fhir_validate"
        )

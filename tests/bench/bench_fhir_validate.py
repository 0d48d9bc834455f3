"""fhir_validate speed: CPU µs per Bundle, the table-driven validator against the fhir.resources models it replaced.

Target (issue 12): under 1 ms per typical Bundle (ADT^A01 ≈ 12 entries, ORU^R01 with 10 OBX ≈ 17 entries). Run with
`make bench`; figures are printed, never asserted (timings depend on the machine).

Times are CPU time of this process (``time.process_time``) per Bundle, so other work on the machine does not count.
Three Bundles: adt_a01, oru_r01 (10 OBX) and a large ORU^R01 (200 OBX → about 200 entries).

``fhir.resources`` is what ``fhir_validate`` did before: the R4B pydantic model of every resource, built and
thrown away. It is measured here when the package is installed (``model_validate`` of each entry's resource and of
the Bundle without its resources — the old path's cost; its extra binding and Bundle checks were a few percent on top).
Measured with the old ``fhir_validate`` itself (commit f32ea15's validate.py, the Bundles of that commit's
converter), on a shared 2-core machine: adt_a01 (12 entries) 2,000-2,250 µs, oru_r01 (17) 2,800-3,600 µs, the
207-entry ORU 36,000 µs; the models alone here 1,800, 2,600 and 33,800 µs; the new validator 265, 410 and 5,600 µs.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from hub.transforms.fhir.maps import load_tables
from hub.transforms.fhir.v2_to_fhir import convert
from hub.transforms.fhir.validate import validate
from support import ROOT, SAMPLES


def _large_oru(n: int = 200) -> bytes:
    """oru_r01 with ``n`` OBX (its first nine repeated, each with its own set id and sub-id, so each is an entry)."""
    segs = [s for s in (SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes().replace(b"\n", b"\r").split(b"\r") if s]
    head = [s for s in segs if not s.startswith((b"OBX", b"NTE"))]
    obx = [s for s in segs if s.startswith(b"OBX")][:9]
    out = list(head)
    for k in range(n):
        f = obx[k % len(obx)].split(b"|")
        f[1] = f[4] = str(k + 1).encode()
        out.append(b"|".join(f))
    return b"\r".join(out) + b"\r"


def _models() -> Callable[[dict[str, Any]], None] | None:
    """The old path's core: fhir.resources R4B models of the Bundle and of each resource (None when not installed)."""
    try:
        importlib.import_module("fhir.resources.R4B.bundle")
    except ImportError:
        return None
    classes: dict[str, Any] = {}

    def model(rtype: str) -> Any:
        if rtype not in classes:
            classes[rtype] = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
        return classes[rtype]

    def check(bundle: dict[str, Any]) -> None:
        shell = {k: v for k, v in bundle.items() if k != "entry"}
        shell["entry"] = [{k: v for k, v in e.items() if k != "resource"} for e in bundle["entry"]]
        for rtype, data in [("Bundle", shell)] + [
            (e["resource"]["resourceType"], e["resource"]) for e in bundle["entry"]
        ]:
            try:
                model(rtype).model_validate(data)
            except Exception:
                pass

    return check


def _cpu_us(fn: Callable[[Any], Any], arg: Any, seconds: float) -> float:
    """CPU µs per call, after one warm-up call (the index and models load once)."""
    fn(arg)
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        fn(arg)
        n += 1
    return (time.process_time() - start) / n * 1e6


def test_bench_fhir_validate():
    tables = load_tables(ROOT / "mappings" / "fhir")
    bundles = {
        "adt_a01": convert((SAMPLES / "hl7v2" / "adt_a01.hl7").read_bytes(), tables),
        "oru_r01 (10 OBX)": convert((SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes(), tables),
        "oru_r01 (200 OBX)": convert(_large_oru(), tables),
    }
    old = _models()
    print()
    for name, bundle in bundles.items():
        errors = sum(1 for i in validate(bundle) if i.severity == "error")
        seconds = 3.0 if len(bundle["entry"]) > 50 else 1.5
        new = _cpu_us(validate, bundle, seconds)
        line = (
            f"fhir_validate {name:18s} {len(bundle['entry']):4d} entries: {new:8.0f} µs/Bundle "
            "(CPU; target < 1000 for a typical one)"
        )
        if old is not None:
            before = _cpu_us(old, bundle, seconds)
            line += f"; fhir.resources R4B models {before:8.0f} µs ({before / new:4.1f}×)"
        if errors:
            line += f"; {errors} error issues (the converter's; see the validator tests)"
        print(line)

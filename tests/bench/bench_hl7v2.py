"""Benchmark of the hot path: ``parse`` + ``meta`` per message, against hl7apy and python-hl7.

Run with ``make bench`` or ``.venv/bin/python -m pytest -q -s tests/bench/bench_hl7v2.py -p no:cacheprovider
--override-ini addopts=``. It only prints figures; it asserts nothing about time (machines differ).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hub.transforms.hl7v2 import build_ack, meta, parse

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7v2"


def _per_call(fn: Callable[[], object], *, seconds: float = 0.3, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds per call, each repeat running for about ``seconds``."""
    fn()  # warm up (imports, caches)
    n = 1
    while True:  # calibrate: how many calls fill the time budget
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10 or n >= 1_000_000:
            break
        n *= 4
    n = max(1, int(n * (seconds / max(elapsed, 1e-9)) / 1))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def _row(label: str, seconds: float) -> str:
    return f"  {label:<44} {seconds * 1e6:>10.1f} µs/message {1 / seconds:>12,.0f} messages/s"


def test_bench_parse() -> None:
    import hl7
    from hl7apy.parser import parse_message

    lines = ["", "HL7 v2 parse benchmark (best of 5)"]
    for name in ("adt_a01.hl7", "oru_r01.hl7"):
        raw = (SAMPLES / name).read_bytes()
        text = raw.decode("utf-8")
        msg = parse(raw)
        label = f"{name} ({len(msg.segments)} segments, {len(raw)} bytes)"
        lines.append(label)

        def hub_parse_meta(raw: bytes = raw) -> object:
            return meta(parse(raw))

        def hub_parse_only(raw: bytes = raw) -> object:
            return parse(raw)

        def hub_typical(raw: bytes = raw) -> object:  # what a channel does: parse, meta, a filter and a route condition
            m = parse(raw)
            meta(m)
            return m.get("MSH-9.1"), m.get("MSH-9.2"), m.get_all("OBX-5")

        def hub_roundtrip_modified(raw: bytes = raw) -> object:
            m = parse(raw)
            m.set("PID-5.1", "ROE")
            return m.to_bytes()

        def hub_ack(raw: bytes = raw) -> object:
            return build_ack(parse(raw), "AA")

        def hl7apy_parse(text: str = text) -> object:
            return parse_message(text.replace("\n", "\r"), find_groups=True)

        def python_hl7_parse(text: str = text) -> object:
            return hl7.parse(text)

        lines.append(_row("hub parse + meta", _per_call(hub_parse_meta)))
        lines.append(_row("hub parse only", _per_call(hub_parse_only)))
        lines.append(_row("hub parse + meta + 2 get + get_all", _per_call(hub_typical)))
        lines.append(_row("hub parse + set + to_bytes", _per_call(hub_roundtrip_modified)))
        lines.append(_row("hub parse + build_ack", _per_call(hub_ack)))
        lines.append(_row("python-hl7 hl7.parse (for comparison)", _per_call(python_hl7_parse, seconds=0.2)))
        lines.append(_row("hl7apy parse_message (for comparison)", _per_call(hl7apy_parse, seconds=0.5, repeats=3)))
    print("\n".join(lines))

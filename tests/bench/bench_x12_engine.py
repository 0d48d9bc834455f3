"""Benchmark of the claims batch: N DFT^P03 charges → one 837P by the ``x12_837`` assembler with a SQLite store
(control numbers from the store, one claim row per charge recorded), with and without pyx12 validation.

Run with ``make bench`` (or
``.venv/bin/python -m pytest -q -s tests/bench/bench_x12_engine.py -o python_files=bench_*.py``).
``HUB_BENCH_837_CLAIMS`` sets the batch size (default 1,000). Figures only; nothing about time is asserted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hub.channels.base import Context
from hub.channels.x12 import X12_837Assembler
from hub.message import Message
from hub.store import NewMessage, Store
from hub.store.claim_status import ClaimStore

ROOT = Path(__file__).resolve().parents[2]
DFT = (ROOT / "tests" / "samples" / "hl7v2" / "dft_p03.hl7").read_bytes()


def test_bench_837_batch_assembly(tmp_path: Path) -> None:
    n = int(os.environ.get("HUB_BENCH_837_CLAIMS", "1000"))
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        raws = [DFT.replace(b"V00012399", f"V{i:07d}".encode()) for i in range(n)]
        accepted = store.accept(
            [
                NewMessage(
                    channel="charges", raw=r, content_type="hl7v2", status="accepted", received_at=time.time(), meta={}
                )
                for r in raws
            ]
        )
        messages = [
            Message(
                raw=r, content_type="hl7v2", id=a.message_id, channel="charges", meta={"destination": "clearinghouse"}
            )
            for r, a in zip(raws, accepted, strict=False)
        ]
        ctx = Context(home=ROOT, mappings_dir=ROOT / "mappings", store=store)
        for validate in (False, True):
            asm = X12_837Assembler(
                X12_837Assembler.Config.model_validate(
                    {"type": "x12_837", "partner": "clearinghouse", "validate": validate}
                ),
                ctx,
            )
            for m in messages:
                m.parsed = None
            t0 = time.perf_counter()
            out = asm(messages)
            took = time.perf_counter() - t0
            assert not out.skipped and out.content.count(b"CLM*") == n
            print(
                f"\n837P batch of {n} charges (pyx12 validation {'on' if validate else 'off'}): {took:.2f} s, "
                f"{n / took:,.0f} claims/s, {len(out.content) / 1e6:.2f} MB"
            )
        assert len(ClaimStore(store).find(limit=n + 1)) == n  # the second batch updated the rows still "submitted"
    finally:
        store.close()

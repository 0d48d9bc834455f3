"""Benchmark of the X12 hot paths: 835 → posting CSV (streaming) and 837P writing; pyx12 for comparison.

Run with ``.venv/bin/python -m pytest -q -s tests/bench/bench_x12.py -p no:cacheprovider --override-ini addopts=``.
It prints figures only; nothing about time is asserted (machines differ). ``HUB_BENCH_835_CLAIMS`` sets the
size of the generated remittance (default 10,000 claims; 120,000 makes a ~50 MB file).
"""

from __future__ import annotations

import io
import os
import sys
import time
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from hub.transforms.x12 import (
    Address,
    Claim,
    InMemoryControlNumbers,
    Patient,
    Payer,
    Provider,
    RemitReader,
    ServiceLine,
    Subscriber,
    iter_segments,
    load_layout,
    validate,
    write_837,
    write_remit_csv,
)

HEAD = (
    "ISA*00*          *00*          *ZZ*ACMEHEALTH     *ZZ*CLINIC01       *240115*1200*^*00501*000000101*0*P*:~\n"
    "GS*HP*ACMEHEALTH*CLINIC01*20240115*1200*101*X*005010X221A1~\n"
    "ST*835*0001~\n"
    "BPR*I*{total}*C*ACH*CCP*01*011000015*DA*123456789*1512345678**01*021000021*DA*987654321*20240116~\n"
    "TRN*1*EFT20240116001*1512345678~\nDTM*405*20240115~\n"
    "N1*PR*ACME HEALTH PLAN~\nN3*500 INSURANCE WAY~\nN4*HARTFORD*CT*061010000~\nREF*2U*12345~\n"
    "PER*BL*PROVIDER SERVICES*TE*8005550199~\n"
    "N1*PE*EXAMPLE FAMILY CLINIC*XX*1234567893~\nN3*100 MAIN ST~\nN4*SPRINGFIELD*IL*627011234~\nREF*TJ*123456789~\n"
    "LX*1~\n"
)
CLAIM = (
    "CLP*P{n:08d}*1*250*180*30*12*PAYER{n:08d}*11*1~\n"
    "NM1*QC*1*PATIENT*SYNTHETIC****MI*MEM{n:08d}~\n"
    "DTM*232*20240102~\n"
    "SVC*HC:99213:25*150*100**1~\nDTM*472*20240102~\nCAS*CO*45*30~\nCAS*PR*2*20~\nAMT*B6*120~\n"
    "SVC*HC:85025*100*80**1~\nDTM*472*20240102~\nCAS*CO*45*10~\nCAS*PR*3*10~\nAMT*B6*90~\n"
)
SEGMENTS_PER_CLAIM = CLAIM.count("~")


def _write_835(path: Path, claims: int) -> None:
    """Write a balanced 835 with ``claims`` claims, streaming (never held in memory)."""
    with path.open("w", encoding="ascii") as f:
        f.write(HEAD.format(total=f"{Decimal(180) * claims}"))
        for n in range(claims):
            f.write(CLAIM.format(n=n))
        segs = HEAD.count("~") - 2 + claims * SEGMENTS_PER_CLAIM + 1
        f.write(f"SE*{segs}*0001~\nGE*1*101~\nIEA*1*000000101~\n")


def _claims_837(n: int) -> list[Claim]:
    home = Address("12 OAK ST", "SPRINGFIELD", "IL", "62704")
    out = []
    for i in range(n):
        sub = Subscriber("DOE", "JANE", f"MEM{i:08d}", date(1980, 5, 1), "F", home, "GRP1")
        out.append(
            Claim(
                f"PCN{i:08d}",
                sub,
                Payer("ACME HEALTH PLAN", "12345"),
                ["J06.9", "R05.9"],
                [
                    ServiceLine(Decimal("150"), date(2024, 1, 2), "99213", ["25"], diagnosis_pointers=[1, 2]),
                    ServiceLine(Decimal("100"), date(2024, 1, 2), "85025"),
                ],
                patient=Patient("DOE", "TIM", date(2015, 2, 3), "M", home, "19") if i % 3 == 0 else None,
                rendering_provider=Provider("SMITH", "1992753883", entity_type="1", first_name="ANN"),
            )
        )
    return out


def test_bench_x12(tmp_path: Path) -> None:
    claims = int(os.environ.get("HUB_BENCH_835_CLAIMS", "10000"))
    src = tmp_path / "remit.835"
    _write_835(src, claims)
    size = src.stat().st_size
    layout = load_layout()
    lines = ["", f"X12 benchmark (Python {sys.version.split()[0]})"]

    # 1. tokenising only
    start = time.perf_counter()
    with src.open("rb") as f:
        n_segs = sum(1 for _ in iter_segments(f))
    t_tok = time.perf_counter() - start
    lines.append(
        f"  835 tokenise: {n_segs:,} segments, {size / 1e6:.1f} MB in {t_tok:.2f} s "
        f"= {n_segs / t_tok:,.0f} segments/s, {size / 1e6 / t_tok:.1f} MB/s"
    )

    # 2. 835 → CSV, streaming to a file (timed without tracemalloc)
    out_path = tmp_path / "remit.csv"
    start = time.perf_counter()
    with src.open("rb") as f, out_path.open("w", newline="", encoding="utf-8") as out:
        rows = write_remit_csv(f, out, layout)
    t_csv = time.perf_counter() - start
    assert rows.balanced
    lines.append(
        f"  835 → CSV ({claims:,} claims, {2 * claims:,} rows): {t_csv:.2f} s = {claims / t_csv:,.0f} claims/s"
    )

    # 3. peak memory of the same streaming run (tracemalloc slows it; the figure is what matters)
    tracemalloc.start()
    with src.open("rb") as f:
        reader = RemitReader(f)
        for _ in reader:
            pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lines.append(f"  835 streaming peak memory (tracemalloc): {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file")

    # 4. pyx12 on a slice of the same remittance, to show why it is the validator and not the hot path
    small = 200
    small_path = tmp_path / "small.835"
    _write_835(small_path, small)
    raw_small = small_path.read_bytes()
    start = time.perf_counter()
    issues = validate(raw_small)
    t_pyx12 = time.perf_counter() - start
    start = time.perf_counter()
    for _ in RemitReader(io.BytesIO(raw_small)):
        pass
    t_hub = time.perf_counter() - start
    lines.append(
        f"  {small} claims: pyx12 validation {t_pyx12:.2f} s ({small / t_pyx12:,.0f} claims/s, {len(issues)} issues) "
        f"vs hub reader {t_hub * 1e3:.1f} ms ({small / t_hub:,.0f} claims/s)"
    )

    # 5. 837P writing
    batch = _claims_837(1000)
    now = datetime(2024, 1, 5, 10, 30)
    start = time.perf_counter()
    raw = write_837(batch, "clearinghouse", InMemoryControlNumbers(), now=now)
    t_837 = time.perf_counter() - start
    lines.append(
        f"  837P write: 1,000 claims, {len(raw) / 1e3:.0f} kB in {t_837 * 1e3:.0f} ms = {1000 / t_837:,.0f} claims/s"
    )
    start = time.perf_counter()
    issues = validate(raw)
    t_val = time.perf_counter() - start
    lines.append(f"  pyx12 validation of that 837P: {t_val:.2f} s ({1000 / t_val:,.0f} claims/s), {len(issues)} issues")
    print("\n".join(lines))

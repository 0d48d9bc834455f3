"""Takeover benchmark (issue 15, point 4): two real ``hub run`` processes on one PostgreSQL database, a FIFO MLLP
queue of ``HUB_BENCH_TAKEOVER_N`` messages (default 200) to a peer that answers after 50 ms; node ``a`` is killed
with SIGKILL while it holds a batch. Prints the gap — seconds from the kill to the next message the peer received
(from node ``b``) — with the default ``cluster`` settings (heartbeat 2s, dead_after 10s), and asserts only that
everything arrived, first in queue order.

Before heartbeats the gap was the dead node's 60 s delivery lease (measured 61 s). ``HUB_BENCH_TAKEOVER_BEFORE=1``
also runs the scenario with ``dead_after: 1h`` — the takeover then waits for the lease to expire, as before.

Run: ``make bench`` (or ``pytest -s tests/bench/bench_takeover.py -o python_files='bench_*.py' --override-ini
addopts=``).
"""

from __future__ import annotations

import os

import pytest

from test_cluster import first_seen, run_takeover

N = int(os.environ.get("HUB_BENCH_TAKEOVER_N", "200"))

pytestmark = pytest.mark.postgres


def _report(label: str, r: dict) -> None:
    assert len(r["order"]) == r["n"] and first_seen(r["received"]) == r["order"], "lost or out of order"
    resent = len(r["received"]) - r["n"]
    print(
        f"\ntakeover ({label}): a killed holding {r['held']} deliveries; b delivered after {r['gap']:.1f} s; "
        f"{r['n']} messages in order, {resent} sent twice (at-least-once)"
    )


def test_bench_takeover_gap(pg_url, tmp_path):
    _report("default: heartbeat 2s, dead_after 10s", run_takeover(pg_url, tmp_path / "default", n=N))


@pytest.mark.skipif(not os.environ.get("HUB_BENCH_TAKEOVER_BEFORE"), reason="HUB_BENCH_TAKEOVER_BEFORE=1 runs it")
def test_bench_takeover_gap_by_lease_expiry(pg_url, tmp_path):
    r = run_takeover(pg_url, tmp_path / "lease", n=N, cluster="{heartbeat: 2s, dead_after: 1h}")
    _report("lease expiry only (as before)", r)

"""Search benchmark (issue 15, point 2): text search through the trigram index and search by status alone, on the
scale store (``scale_store.build``: 1,000,000 messages on SQLite, cached under ``var/bench/``; with
``HUB_BENCH_PG=1`` also 300,000 on PostgreSQL, the database bench_scale.py uses). Prints median milliseconds, the
index's size on disk and, for comparison, the substring scan the index replaced; asserts nothing on time.

``HUB_BENCH_SEARCH_N`` / ``HUB_BENCH_SCALE_PG_N`` change the sizes. ``HUB_BENCH_SEARCH_BACKFILL=1`` also times the
indexer building the whole text index (as after the upgrade to migration 0008) on a copy of the SQLite store
(needs its size again on disk).

Run: ``pytest -s tests/bench/bench_search.py -o python_files='bench_*.py' -p no:cacheprovider --override-ini addopts=``
or ``python tests/bench/bench_search.py``. bench_scale.py prints the same rows (:func:`search_rows`) in its table.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from scale_store import WORDS, build, timed  # noqa: E402
from sqlalchemy import text  # noqa: E402

from hub.store import SearchQuery, Store  # noqa: E402

N = int(os.environ.get("HUB_BENCH_SEARCH_N", os.environ.get("HUB_BENCH_SCALE_N", "1000000")))
PG_N = int(os.environ.get("HUB_BENCH_SCALE_PG_N", "300000"))
PG_HOST = os.environ.get("HUB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("HUB_TEST_PG_PORT", "5432")
REPEAT = 5
LIMIT = 50  # a page of the dashboard

Rows = dict[str, float]


#: label → the query (a page of 50, newest first, as the dashboard and `hub messages` ask)
QUERIES: dict[str, SearchQuery] = {
    f"--text rare word ({WORDS['RARE_WORD']})": SearchQuery(text=WORDS["RARE_WORD"], limit=LIMIT),
    f"--text common word ({WORDS['COMMON_WORD']})": SearchQuery(text=WORDS["COMMON_WORD"], limit=LIMIT),
    f"--text absent ({WORDS['ABSENT_WORD']})": SearchQuery(text=WORDS["ABSENT_WORD"], limit=LIMIT),
    f"--text identifier ({WORDS['RARE_CONTROL_ID']})": SearchQuery(text=WORDS["RARE_CONTROL_ID"], limit=LIMIT),
    f"--text identifier with _ ({WORDS['UNDERSCORE_CONTROL_ID']})": SearchQuery(
        text=WORDS["UNDERSCORE_CONTROL_ID"], limit=LIMIT
    ),
    f"--text identifier with % ({WORDS['PERCENT_PATIENT_ID']})": SearchQuery(
        text=WORDS["PERCENT_PATIENT_ID"], limit=LIMIT
    ),
    "--text HL7 fragment (12345^^^CLINIC)": SearchQuery(text="12345^^^CLINIC", limit=LIMIT),
    "--text word, a page in the middle (before_id)": SearchQuery(text="Glucose", before_id=N // 2, limit=LIMIT),
    "--text common word + --channel pharmacy_orders": SearchQuery(
        text=WORDS["COMMON_WORD"], channel="pharmacy_orders", limit=LIMIT
    ),
    "--text 2 characters, common (PI): scans to the limit": SearchQuery(text="PI", limit=LIMIT),
    "--status rejected (no --channel)": SearchQuery(status="rejected", limit=LIMIT),
    "--status error (no --channel)": SearchQuery(status="error", limit=LIMIT),
    "--status dead (a delivery status)": SearchQuery(status="dead", limit=LIMIT),
    "--status retry (a delivery status)": SearchQuery(status="retry", limit=LIMIT),
    "--status sent (a delivery status, most rows)": SearchQuery(status="sent", limit=LIMIT),
    "--status dead --destination ehr": SearchQuery(status="dead", destination="ehr", limit=LIMIT),
}


def search_rows(url: str) -> Rows:
    """Median milliseconds of each query in :data:`QUERIES` (and one run of the substring scan it replaced)."""
    store = Store(url).open()
    try:
        rows: Rows = {label: timed(lambda q=q: store.search(q)) for label, q in QUERIES.items()}
        rows["(before: substring scan, rare word, 1 run)"] = timed(lambda: _scan(store, WORDS["RARE_WORD"]), 1)
        return rows
    finally:
        store.close()


def _scan(store: Store, needle: str) -> list[int]:
    cond = "position(:n IN raw) > 0" if store.dialect == "postgresql" else "instr(raw, :n) > 0"
    with store.engine.connect() as conn:
        sql = f"SELECT id FROM messages WHERE {cond} ORDER BY id DESC LIMIT {LIMIT}"
        return list(conn.execute(text(sql), {"n": needle.encode()}).scalars())


def index_size(url: str) -> str:
    """The text index's and the status indexes' size on disk."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            if store.dialect == "sqlite":
                sizes = dict(
                    conn.execute(
                        text(
                            "SELECT CASE WHEN name LIKE 'search_fts%' THEN 'search_fts_*' ELSE name END, "
                            "sum(pgsize) FROM dbstat WHERE name LIKE 'search_fts%' OR name IN "
                            "('messages', 'ix_messages_status_id', 'ix_deliveries_status') GROUP BY 1"
                        )
                    ).all()
                )
            else:
                sizes = dict(
                    conn.execute(
                        text(
                            "SELECT c, pg_total_relation_size(c) FROM unnest(ARRAY['messages', "
                            "'ix_messages_raw_trgm', 'ix_messages_status_id', 'ix_deliveries_status']) AS c "
                            "WHERE to_regclass(c) IS NOT NULL"
                        )
                    ).all()
                )
    finally:
        store.engine.dispose()
    return ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in sorted(sizes.items()))


def backfill_seconds(path: Path) -> float:
    """Seconds the running hub's indexer takes to index the whole SQLite store (on a copy, its index dropped)."""
    from hub.store import search_index

    with tempfile.TemporaryDirectory(prefix="hub-bench-search-", dir=path.parent) as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        store = Store(f"sqlite:///{copy}").open()
        try:
            with store.engine.begin() as conn:
                for seg in list(search_index._segments(conn)):
                    search_index._retire(conn, seg)
                while search_index.shrink_retired(conn, 100_000):
                    pass
            t = time.perf_counter()
            store.index_text()
            return time.perf_counter() - t
        finally:
            store.close()


def run() -> None:
    columns: list[tuple[str, str, Rows]] = []
    path = build(None, N)
    url = f"sqlite:///{path}"
    columns.append((f"SQLite {N:,} ({path.stat().st_size / 1e6:,.0f} MB)", index_size(url), search_rows(url)))
    if os.environ.get("HUB_BENCH_PG") == "1":
        pg = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/hub_bench_scale_{PG_N}"
        build(None, PG_N, url=pg)
        columns.append((f"PostgreSQL {PG_N:,}", index_size(pg), search_rows(pg)))
    print(f"\nsearch benchmark (a page of {LIMIT}, median of {REPEAT}, ms)")
    print("| search | " + " | ".join(h for h, _, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label in dict.fromkeys(k for _, _, col in columns for k in col):
        print(
            f"| {label} | " + " | ".join(f"{col[label]:,.1f}" if label in col else "—" for _, _, col in columns) + " |"
        )
    for head, size, _ in columns:
        print(f"sizes, {head}: {size}")
    if os.environ.get("HUB_BENCH_SEARCH_BACKFILL") == "1":
        print(f"the indexer on a copy of the SQLite store, from nothing: {backfill_seconds(path):.1f} s")


def test_bench_search() -> None:
    run()


if __name__ == "__main__":
    run()

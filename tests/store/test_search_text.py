"""``--text`` / ``text=`` finds the bytes as written: ``%``, ``_`` and ``\\`` are no wildcards (SQLite and
PostgreSQL). The indexed search (SQLite FTS5 trigrams, PostgreSQL pg_trgm; hub/store/search_index.py) gives the
same results as the substring search it replaced, which these tests keep as the oracle: after accepts, prune,
reprocess and the migration, over many needles, with the other filters and paging — on SQLite before the indexer ran
(a scan), part-way (index and scan) and after (the index), over several index segments."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from hub.store import NewDelivery, NewMessage, SearchQuery, search_index
from hub.store.search_index import arms, fts_match, fts_query, pg_escape, pg_like_pattern, trigrams


def test_text_search_is_literal_percent_and_underscore_are_no_wildcards(store):
    raws = {
        "P": b"OBX|1|ST|NOTE||100% done",
        "U": b"OBX|1|ST|NOTE||A_B",
        "X": b"OBX|1|ST|NOTE||AxB 100 done",
        "S": b"OBX|1||C:\\TMP",
    }
    store.accept([NewMessage("c", raw, "raw", meta={"control_id": cid}) for cid, raw in raws.items()])

    def found(needle: str) -> list[str]:
        return sorted(r["control_id"] for r in store.search(SearchQuery(text=needle)))

    assert found("%") == ["P"] and found("100%") == ["P"] and found("100% done") == ["P"]
    assert found("_") == ["U"] and found("A_B") == ["U"]
    assert found("\\") == ["S"] and found("%%") == [] and found("A%B") == []
    assert found("done") == ["P", "X"]


# ------------------------------------------------------------------------------------------------ the oracle
def oracle_ids(store, needle: str) -> list[int]:
    """Today's substring search before the index (``instr(raw, needle)`` / ``position(needle IN raw)`` on the raw
    bytes), newest first: the results the indexed search must equal."""
    cond = "position(:n IN raw) > 0" if store.dialect == "postgresql" else "instr(raw, :n) > 0"
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                text(f"SELECT id FROM messages WHERE {cond} ORDER BY id DESC"), {"n": needle.encode()}
            ).scalars()
        )


def ids(rows) -> list[int]:
    return [r["id"] for r in rows]


RAWS = [
    b"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20261207||ADT^A04|CTL-0001|P|2.5.1\rPID|1||12345^^^MRN||SMITH^JOHN\r",
    b"MSH|^~\\&|LIS|CLINIC|EHR|CLINIC|20261207||ORU^R01|LAB_000123|P|2.5.1\rPID|1||PCT%0042^^^MRN||DOE^JANE\r"
    b"NTE|1||patient stable, afebrile\r",
    b"MSH|^~\\&|LIS|CLINIC|EHR|CLINIC|20261207||ORU^R01|LABX000123|P|2.5.1\rPID|1||PCTX0042||Smith^Ann\r",
    "PID|1||M-77||MÜLLER^Jürgen||19700101\rNTE|1||Ñandú café 日本語テキスト\r".encode(),
    b"PID|1||LAT1||D\xe9sir\xe9e^Ren\xe9\rNTE|1||caf\xe9 latin-1 bytes\r",  # not UTF-8
    b"BINARY\x00AB\x00zebracorn\x00tail",  # NUL bytes: FTS5 stops reading there
    b'{"resourceType": "Patient", "name": [{"text": "O\'Brien \\"Ted\\""}], "note": "NEAR(a b) AND * OR -x"}',
    b"mrn,last,first\nMRN_0001,SMITH,ANN\nMRN%0002,ROE,RAY\n",
    b"ISA*00*          *ZZ*CLEARHOUSE     *~ST*999*0001~AK1*HC*12~SE*4*0001~",
    b"NTE|1||100% done A_B C:\\TMP\\x \xef\xbf\xbd replacement",
    b"\xc3\xa9\xa9 stray continuation after caf\xc3\xa9\xa9 and \x80\x81 lone ones, \xe6\x97abc cut short",
]

NEEDLES = [
    # words and phrases
    "SMITH", "Smith", "smith", "stable", "patient stable", "afebrile", "zebracorn", "tail", "BINARY", "replacement",
    # identifiers, with the characters LIKE, HL7, FTS5 and JSON treat specially
    "12345^^^MRN", "LAB_000123", "LAB_", "_000", "PCT%0042", "PCT%", "%00", "MRN_0001", "MRN%0002", "CTL-0001",
    "ADT^A04", "^~\\&", "|P|2.5.1", "||", "C:\\TMP", "\\x", "O'Brien", '\\"Ted\\"', '"resourceType"', "NEAR(a b)",
    "AND * OR", "-x", "*ZZ*", "AK1*HC*12~", "ISA*00*          *", "DOE^JANE\rNTE", "\r", "\rPID|1||",
    # one and two characters
    "S", "%", "_", "^", "|", "~", "é", "日", "AB", "%0", "_0", "\\&", "Ñ",
    # not ASCII
    "MÜLLER", "Jürgen", "Ñandú", "café", "afé", "ré", "日本語", "テキスト", "本語テ", "\ufffd", "\ufffd replacement",
    "after café", "abc cut", "lone ones",
    # absent, and near misses
    "quuxnotthere", "SMITHX", "LAB%000123", "PCT_0042X", "12345^^^MRX", "Désirée", "zebracornx", "stable,x",
    # NUL in the needle
    "\x00AB\x00", "\x00",
]  # fmt: skip


def _accept(store, raws: list[bytes], **kw) -> list[int]:
    items = [
        NewMessage(
            kw.get("channel", "adt" if i % 2 else "lab"),
            raw,
            "raw",
            status="rejected" if i % 5 == 0 else "accepted",
            received_at=kw.get("received_at", time.time()),
            meta={"control_id": f"C{i}", "patient_id": f"P{i % 3}", "message_type": "ADT^A04" if i % 2 else "ORU^R01"},
            deliveries=[NewDelivery("ehr")] if i % 5 else [],
        )
        for i, raw in enumerate(raws)
    ]
    return [a.message_id for a in store.accept(items)]


def assert_same_as_oracle(store, needles=NEEDLES) -> None:
    """Equal before the indexer ran on what is new (scanned), after it indexed a few (index and scans), after all."""
    for stage in ("unindexed", "partly", "indexed"):
        if stage == "partly":
            store.run_write(search_index.index_step, 3)
        elif stage == "indexed":
            store.index_text()
        for needle in needles:
            got = ids(store.search(SearchQuery(text=needle, limit=1000)))
            assert got == oracle_ids(store, needle), f"needle {needle!r} ({stage})"


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    """Segments of 7 message ids, so that these tests' few messages fill several (hub/store/search_index.py)."""
    monkeypatch.setattr(search_index, "SEGMENT", 7)


def test_indexed_text_search_equals_the_substring_search_after_accepts_prune_and_reprocess(store):
    old = _accept(store, RAWS, received_at=time.time() - 90 * 86400)
    _accept(store, RAWS[::-1])
    _accept(store, [b"PID|1||12345^^^MRN||NEWER^ONE\r", b"short"])
    assert ids(store.search(SearchQuery(text="zebracorn"))) != []
    assert_same_as_oracle(store)

    # reprocess replaces status and metadata (never the content): still found, still equal
    store.reprocess(old[1], NewMessage("lab", RAWS[1], "raw", status="accepted", meta={"control_id": "R1"}))
    assert old[1] in ids(store.search(SearchQuery(text="LAB_000123")))
    assert_same_as_oracle(store)

    # prune: the deleted messages leave the index with their rows
    deleted = store.prune(30 * 86400, keep_unsent=False)
    assert deleted == len(old)
    assert_same_as_oracle(store)
    assert not set(old) & set(ids(store.search(SearchQuery(text="SMITH", limit=1000))))

    # new messages after a prune are indexed as before (no rowid is reused with stale index entries)
    again = _accept(store, [b"after prune zebracorn LAB_000123"])
    assert again[0] in ids(store.search(SearchQuery(text="zebracorn")))
    assert_same_as_oracle(store)


def test_indexed_text_search_keeps_order_paging_and_the_other_filters(store):
    for _ in range(3):
        _accept(store, RAWS)
    store.run_write(search_index.index_step, 10)  # the newest segment indexed part-way, the rest scanned
    store.run_write(search_index.index_step, 5)
    for needle in ("SMITH", "stable", "PCT%0042", "|P|2.5.1", "é", "||", "quuxnotthere"):
        want = oracle_ids(store, needle)
        # keyset paging by two: the same ids in the same order, page after page
        got: list[int] = []
        before = None
        while True:
            page = ids(store.search(SearchQuery(text=needle, limit=2, before_id=before)))
            got += page
            if len(page) < 2:
                break
            before = page[-1]
        assert got == want, needle
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, channel, status, patient_id FROM messages")).all()
        meta = {r.id: r for r in rows}
        for q, keep in [
            (SearchQuery(text=needle, channel="adt", limit=1000), lambda r: r.channel == "adt"),
            (SearchQuery(text=needle, status="rejected", limit=1000), lambda r: r.status == "rejected"),
            (SearchQuery(text=needle, status="queued", limit=1000), lambda r: r.status == "accepted"),
            (SearchQuery(text=needle, patient_id="P1", limit=1000), lambda r: r.patient_id == "P1"),
            (SearchQuery(text=needle, message_type="ADT", limit=1000), lambda r: r.channel == "adt"),
            (SearchQuery(text=needle, destination="ehr", limit=1000), lambda r: r.status == "accepted"),
        ]:
            assert ids(store.search(q)) == [i for i in want if keep(meta[i])], (needle, q)


def test_status_only_search_by_message_and_delivery_status(store):
    mids = _accept(store, RAWS * 2)
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM messages ORDER BY id DESC")).all()
        dels = conn.execute(text("SELECT message_id, destination, status FROM deliveries")).all()
    assert [r.id for r in rows if r.status == "rejected"] == ids(store.search(SearchQuery(status="rejected")))
    queued = sorted({d.message_id for d in dels if d.status == "queued"}, reverse=True)
    assert ids(store.search(SearchQuery(status="queued"))) == queued
    assert ids(store.search(SearchQuery(status="queued", limit=3))) == queued[:3]
    assert ids(store.search(SearchQuery(status="queued", before_id=queued[2]))) == queued[3:]
    assert ids(store.search(SearchQuery(status="queued", destination="nowhere"))) == []
    assert ids(store.search(SearchQuery(status="dead"))) == []
    page = store.search(SearchQuery(status="queued", channel="adt"))
    assert page and all(r["channel"] == "adt" and r["deliveries"] == {"queued": 1} for r in page)
    assert set(ids(page)) <= set(mids)


def test_the_migration_back_fills_the_index_and_downgrade_undoes_it(store_url):
    from hub.store import Store

    store = Store(store_url).open()
    try:
        store.migrate("0004", downgrade=True)
        with store.engine.connect() as conn:
            names = {r[0] for r in conn.execute(text(_INDEX_NAMES[store.dialect]))}
        assert not names & {
            "messages_fts",
            "search_segments",
            "ix_messages_raw_trgm",
            "ix_messages_status_id",
            "ix_deliveries_status",
        }
        _accept(store, RAWS)  # written without the index (and without its triggers)
        store.migrate("head")
        assert_same_as_oracle(store)
        _accept(store, RAWS[:3])
        assert_same_as_oracle(store, ["SMITH", "zebracorn", "LAB_000123", "é"])
        store.migrate("0007", downgrade=True)  # back to migration 0005's one table, kept by triggers
        with store.engine.connect() as conn:
            names = {r[0] for r in conn.execute(text(_INDEX_NAMES[store.dialect]))}
        assert "search_segments" not in names
        assert store.dialect != "sqlite" or {"messages_fts", "messages_fts_insert"} <= names
        store.migrate("head")
        assert_same_as_oracle(store, ["SMITH", "zebracorn"])
    finally:
        store.close()


_INDEX_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master",
    "postgresql": "SELECT indexname FROM pg_indexes WHERE tablename IN ('messages', 'deliveries')",
}


@pytest.mark.parametrize(
    "needle, grams",
    [
        ("ab", None),
        ("é", None),
        ("abc", ["abc"]),
        ('a"bc', ['a"b', '"bc']),
        ("aaaa", ["aaa"]),
        ("abé", None),  # a non-ASCII last character is not asked for
        ("café", ["caf"]),
        ("éab", ["éab"]),
    ],
)
def test_trigrams(needle, grams):
    assert trigrams(needle) == grams


def test_fts_query_quotes_each_trigram_and_asks_for_the_nul_marker():
    assert fts_query(['a"b', "bc "]) == '("a""b" AND "bc ") OR "\x01\x02\x03"'


def test_fts_match_asks_for_the_rarest_trigrams_of_a_long_needle(tmp_path):
    from hub.store import Store

    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        _accept(store, [b"PID|1||MRN0012345^^^CLINIC"] + [b"PID|1||MRN0099999^^^CLINIC"] * 20)
        with store.engine.connect() as conn:
            assert fts_match(conn, "12345^^^CLINIC", arms(conn)) is None  # nothing indexed yet: a scan
        store.index_text()
        with store.engine.connect() as conn:
            parts = arms(conn)
            q = fts_match(conn, "12345^^^CLINIC", parts)  # in one message: 123 234 345 45^ 5^^; in all: ^^^ CLI …
            assert q is not None and q.endswith(' OR "\x01\x02\x03"') and q.count(" AND ") == 1
            assert set(q[1 : q.index(")")].replace('"', "").split(" AND ")) <= {"123", "234", "345", "45^", "5^^"}
            assert fts_match(conn, "x\x00y", parts) == '"\x01\x02\x03"'
            assert fts_match(conn, "ab", parts) is None
    finally:
        store.close()


def test_pg_escape_and_like_pattern():
    assert pg_escape(b"a\\b\x00\xc3\xa9") == "a\\\\b\\000\\303\\251"
    assert pg_like_pattern(b"PCT%0_42") == "%PCT\\%0\\_42%"
    assert pg_like_pattern("é".encode()) == "%\\\\303\\\\251%"
    assert pg_like_pattern(b"ab") is None and pg_like_pattern(b"|^~") is None


def test_without_the_fts5_table_text_search_scans_with_the_same_results(tmp_path):
    """An SQLite without FTS5's trigram tokenizer (before 3.34): migration 0008 leaves the segments out."""
    from hub.store import Store

    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE search_segments")
        store.close()
        store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()  # new connections: has_index is kept per connection
        _accept(store, RAWS)
        assert store.index_text() == 0
        assert_same_as_oracle(store)
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------ the segments
def _fts_tables(store) -> set[str]:
    with store.engine.connect() as conn:
        return {
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'search_fts_%' "
                "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
            )
        }


def test_the_indexer_fills_segments_newest_first_and_a_search_scans_the_rest(tmp_path):
    from hub.store import Store

    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        mids = _accept(store, RAWS * 3)  # 33 messages: ids 1..33, segments 0..4 of 7 ids
        top = mids[-1] // 7
        assert _fts_tables(store) == set()
        with store.engine.connect() as conn:
            assert [a.table for a in arms(conn)] == [None]  # one scan of everything
            assert search_index.unindexed(conn) == len(mids)
        store.run_write(search_index.index_step, 4)
        with store.engine.connect() as conn:
            parts = arms(conn)
            assert search_index.unindexed(conn) == len(mids) - 4
        assert _fts_tables(store) == {f"search_fts_{top}"}  # the newest segment first, from its first id
        first = top * 7
        assert parts == [
            search_index.Arm(first + 4, mids[-1], None),  # the rest of the newest segment: scanned
            search_index.Arm(first, first + 3, f"search_fts_{top}"),
            search_index.Arm(1, first - 1, None),  # the older segments: one scan
        ]
        with store.engine.connect() as conn:
            assert search_index.pending(conn)
        assert store.index_text() == len(mids) - 4
        with store.engine.connect() as conn:
            assert search_index.unindexed(conn) == 0
            assert not search_index.pending(conn)  # the idle indexer then leaves the writer alone
            assert all(a.table is not None for a in arms(conn))
        assert _fts_tables(store) == {f"search_fts_{n}" for n in range(top + 1)}
        assert_same_as_oracle(store)
    finally:
        store.close()


def test_prune_drops_emptied_segments_rebuilds_stale_ones_and_reused_ids_are_indexed_again(tmp_path):
    from hub.store import Store

    store = Store(f"sqlite:///{tmp_path / 'hub.db'}").open()
    try:
        old = _accept(store, RAWS * 2, received_at=time.time() - 90 * 86400)  # ids 1..22
        new = _accept(store, RAWS)  # ids 23..33
        store.index_text()
        segs = {i // 7 for i in old + new}
        assert _fts_tables(store) == {f"search_fts_{n}" for n in segs}
        pruned = store.prune(30 * 86400, keep_unsent=False)
        assert pruned == len(old)
        # the segments that held only pruned messages are gone; the one shared with new messages stays
        assert _fts_tables(store) == {f"search_fts_{n}" for n in {i // 7 for i in new}}
        with store.engine.connect() as conn:
            assert not search_index.pending(conn)  # ids of pruned messages are nothing to index
        assert_same_as_oracle(store)

        # the newest messages deleted: SQLite gives their ids out again; the new messages holding them are found
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT max(id) FROM messages").scalar() == new[-1]
        store.prune(0, keep_unsent=False)  # everything
        assert _fts_tables(store) == set()
        again = _accept(store, [b"after prune zebracorn LAB_000123", b"quite new text"])
        assert again[0] <= new[-1]  # an id used before
        assert_same_as_oracle(store)
        assert again[0] in ids(store.search(SearchQuery(text="zebracorn")))

        # a segment mostly of deleted messages is emptied and indexed again
        more = _accept(store, RAWS * 2)
        store.index_text()
        with store.engine.begin() as conn:
            gone = [i for i in more if i // search_index.SEGMENT == more[-1] // search_index.SEGMENT - 1][1:]
            conn.exec_driver_sql(f"DELETE FROM deliveries WHERE message_id IN ({','.join(map(str, gone))})")
            conn.exec_driver_sql(f"DELETE FROM messages WHERE id IN ({','.join(map(str, gone))})")
        assert store.tidy_text_index() >= 1
        with store.engine.connect() as conn:
            assert search_index.unindexed(conn) >= 1
        assert_same_as_oracle(store)
    finally:
        store.close()

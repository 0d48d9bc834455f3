"""How a text search uses the text index (migrations 0005 and 0008), which keeps today's meaning of ``text``: the
messages whose raw bytes hold the needle's UTF-8 bytes, literally (``%``, ``_`` and ``\\`` are no wildcards).

Why trigrams: a needle is any substring — an identifier such as ``LAB_000123``, ``PCT%0042``, ``12345^^^MRN``, half a
word, a phrase with spaces. A word index (FTS5's ``unicode61``, PostgreSQL ``tsvector``) splits those at ``^``, ``|``
and ``_`` and stems or folds words, so it finds other messages than the substring test does. A trigram index can
serve every substring of three characters or more exactly: the index narrows the candidates to the messages that hold
all the needle's trigrams, and the same byte test as before (``instr`` / ``position``) confirms each one, so the
results are the substring search's results, in the same order (newest first), with the same paging and filters.

* **SQLite**: contentless FTS5 tables (``tokenize='trigram case_sensitive 1'``, ``detail=none``, ``columnsize=0``:
  rowids only, no positions or sizes — enough, since every candidate is confirmed) over the raw bytes read as UTF-8,
  one per **segment** of :data:`SEGMENT` message ids (``search_fts_<n>``, listed in ``search_segments`` with
  ``indexed_to``: every message of the segment up to that id is indexed). The index is built **beside** the
  writes, not in them: the running hub's indexer (:func:`index_step`, through the writer, a batch at a time,
  newest segment first) — so an accept pays nothing for it, and a batch of hundreds of messages costs FTS5 far
  less than as many one-row commits did with migration 0005's triggers. A search (:func:`arms`) reads, newest
  first, each segment's index up to ``indexed_to`` and **scans** the ids above it (the newest messages, not yet
  indexed; a whole segment while it is rebuilt), and stops at the limit. Deleting a message leaves its entries
  (a contentless FTS5 table cannot drop them without the text, and SQLite 3.40 has no ``contentless_delete``):
  they only make a candidate that the byte test turns down, and retention (:func:`tidy`) drops a segment whose
  messages are all gone — giving its pages back at once — and rebuilds one that is mostly stale. A rowid SQLite
  hands out again after the newest messages were deleted is indexed again (:func:`after_delete`).
  :func:`fts_match` asks for the needle's rarest trigrams (:data:`ASK` of them) ``OR`` the marker of messages with
  a NUL byte (FTS5 stops reading at a NUL, so those are always candidates). Invalid UTF-8 in a message is read as
  replacement characters and never changes how the tokenizer reads a needle's bytes there, but for one case: a
  stray continuation byte right after a needle ending in a non-ASCII character joins that character, so the
  trigram of a non-ASCII last character is not asked for.
* **PostgreSQL**: a ``pg_trgm`` GIN index on ``encode(raw, 'escape')``: plain ASCII (bytes ≥ 0x80 and NUL as
  ``\\ooo``, ``\\`` doubled) that keeps every byte, so the needle's escaped form (:func:`pg_escape`) is a substring of
  it whenever the needle's bytes are in ``raw``. The search asks ``LIKE '%…%'`` (escaped: :func:`pg_like_pattern`)
  on that expression, which the index serves (pg_trgm rechecks each candidate), and ``position(needle IN raw)``
  confirms. Chosen over ``tsvector`` for the same reason as above; it needs the ``pg_trgm`` extension (trusted since
  PostgreSQL 13), without which the migration leaves the index out and the search scans.
* **Short needles** (fewer than :data:`MIN_CHARS` characters, not counting a non-ASCII last one on SQLite; on
  PostgreSQL also a needle without a letter or digit, from which pg_trgm takes no trigram) have no trigram: they
  scan the messages newest first as before, which ends at the limit when the needle is common and reads every
  message (within the other filters) when it is rare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection

__all__ = [
    "Arm",
    "arms",
    "trigrams",
    "fts_query",
    "fts_match",
    "has_index",
    "index_step",
    "after_delete",
    "tidy",
    "shrink_retired",
    "pending",
    "unindexed",
    "pg_escape",
    "pg_like_pattern",
    "MIN_CHARS",
    "ASK",
    "SEGMENT",
]

#: Message ids per index segment (one FTS5 table each): at 3,000 messages a day, one segment holds about 67 days.
#: Fewer, bigger segments make a search quicker (each costs a statement: ~0.6 ms); smaller ones give the space of
#: pruned messages back sooner (a segment goes when its last message does, or is rebuilt when mostly stale).
SEGMENT = 200_000
#: Needles shorter than this (in characters) have no trigram and scan.
MIN_CHARS = 3
#: How many of a needle's trigrams the index is asked for (the rarest; the byte test confirms the whole needle).
ASK = 2
#: How many of a long needle's trigrams are counted to find the rarest (spread over the needle).
MAX_PROBES = 8
#: How many of a trigram's newest matches tell how common it is (the id span they cover).
SAMPLE = 16
#: Indexed in front of a message that holds a NUL byte; every FTS5 query also asks for it.
NUL_MARKER = "\x01\x02\x03"
#: The text FTS5 indexes for a message's raw bytes (a NUL stops FTS5 reading: such messages carry the marker).
TEXT = "CASE WHEN instr(raw, x'00') > 0 THEN char(1, 2, 3) || CAST(raw AS TEXT) ELSE CAST(raw AS TEXT) END"
#: A segment is rebuilt when fewer than this share of its entries are of messages still stored.
STALE = 0.25

_ALNUM = re.compile(r"[0-9A-Za-z]")


def _table(seg: int) -> str:
    return f"search_fts_{int(seg)}"


def _quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------------- the segments
def has_index(conn: Connection) -> bool:
    """Whether migration 0008 made ``search_segments`` (it leaves it out on an SQLite without FTS5's trigram
    tokenizer; PostgreSQL: never); kept with the database connection."""
    info = conn.info
    if "hub_search_segments" not in info:
        found = (
            conn.dialect.name == "sqlite"
            and conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'search_segments'"
            ).scalar()
        )
        info["hub_search_segments"] = bool(found)
    return bool(info["hub_search_segments"])


def _segments(conn: Connection) -> dict[int, tuple[int, int]]:
    """seg → (indexed_to, entries)."""
    rows = conn.exec_driver_sql("SELECT seg, indexed_to, entries FROM search_segments").all()
    return {int(seg): (int(to), int(n)) for seg, to, n in rows}


def _bounds(conn: Connection) -> tuple[int, int] | None:
    """(lowest, highest) message id; None when there is no message."""
    # two subqueries: each reads one end of the primary key (together, SQLite would scan an index for both)
    lo, hi = conn.exec_driver_sql("SELECT (SELECT min(id) FROM messages), (SELECT max(id) FROM messages)").one()
    return None if hi is None else (int(lo), int(hi))


def _create(conn: Connection, seg: int, indexed_to: int) -> None:
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE {_table(seg)} USING fts5(body, content='', detail=none, columnsize=0, "
        "tokenize='trigram case_sensitive 1')"
    )
    conn.exec_driver_sql("INSERT INTO search_segments (seg, indexed_to, entries) VALUES (?, ?, 0)", (seg, indexed_to))


def _retire(conn: Connection, seg: int) -> None:
    """Take a segment's table out of the index at once: renamed ``search_fts_retired_<seg>_<n>`` (its rows are
    deleted in short steps by :func:`shrink_retired`; one ``DROP TABLE`` of a full segment held the writer for
    seconds) and its row removed."""
    n = conn.exec_driver_sql(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE ?", (f"search_fts_retired_{seg}_%",)
    ).scalar_one()
    conn.exec_driver_sql(f"ALTER TABLE {_table(seg)} RENAME TO search_fts_retired_{int(seg)}_{int(n)}")
    conn.exec_driver_sql("DELETE FROM search_segments WHERE seg = ?", (seg,))


def shrink_retired(conn: Connection, rows: int) -> int:
    """In the writer's transaction: delete up to ``rows`` blocks of a retired segment table, or drop it once it is
    empty (then cheap). Returns the rows it changed (0: no retired table is left)."""
    if not has_index(conn):
        return 0
    name = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'search\\_fts\\_retired\\_%' ESCAPE '\\' "
        "AND sql LIKE 'CREATE VIRTUAL TABLE%' LIMIT 1"
    ).scalar()
    if name is None:
        return 0
    res = conn.exec_driver_sql(
        # FTS5 keeps its averages (id 1) and structure (id 10) records there: DROP TABLE reads the structure
        f"DELETE FROM {name}_data WHERE id IN (SELECT id FROM {name}_data WHERE id > 10 LIMIT ?)",
        (rows,),
    )
    if res.rowcount:
        return int(res.rowcount)
    conn.exec_driver_sql(f"DROP TABLE {name}")
    return 1


def index_step(conn: Connection, rows: int) -> int:
    """In the writer's transaction: index up to ``rows`` messages not indexed yet, of the newest segment that has
    any (a segment is indexed from its first id up). Returns how many were indexed (0: all are)."""
    if not has_index(conn):
        return 0
    bounds = _bounds(conn)
    if bounds is None:
        return 0
    low, top = bounds
    segs = _segments(conn)
    for seg in range(top // SEGMENT, low // SEGMENT - 1, -1):
        start, end = seg * SEGMENT, min(top, (seg + 1) * SEGMENT - 1)
        if seg in segs:
            done = segs[seg][0]
            if done >= end:
                continue
        else:
            if conn.exec_driver_sql("SELECT 1 FROM messages WHERE id BETWEEN ? AND ? LIMIT 1", (start, end)).first():
                _create(conn, seg, start - 1)
                done = start - 1
            else:
                continue
        last = conn.exec_driver_sql(
            "SELECT max(id), count(*) FROM (SELECT id FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)",
            (done, end, rows),
        ).one()
        n = int(last[1])
        upto = end if n < rows else int(last[0])
        if n:
            conn.exec_driver_sql(
                f"INSERT INTO {_table(seg)} (rowid, body) SELECT id, {TEXT} FROM messages "
                "WHERE id > ? AND id <= ? ORDER BY id",
                (done, upto),
            )
        conn.exec_driver_sql(
            "UPDATE search_segments SET indexed_to = ?, entries = entries + ? WHERE seg = ?", (upto, n, seg)
        )
        return max(n, 1)
    return 0


def pending(conn: Connection) -> bool:
    """Whether any stored message is not indexed yet: one primary-key probe per part a search would scan (a read,
    so an idle hub's indexer does not take the writer every second for nothing)."""
    if not has_index(conn):
        return False
    probe = "SELECT 1 FROM messages WHERE id BETWEEN ? AND ? LIMIT 1"
    return any(conn.exec_driver_sql(probe, (a.lo, a.hi)).first() for a in arms(conn) if a.table is None)


def unindexed(conn: Connection) -> int:
    """How many messages are not indexed yet (their search scans them)."""
    if not has_index(conn):
        return 0
    bounds = _bounds(conn)
    if bounds is None:
        return 0
    covered = sum(
        int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM messages WHERE id BETWEEN ? AND ?", (seg * SEGMENT, to)
            ).scalar_one()
        )
        for seg, (to, _) in _segments(conn).items()
    )
    total = int(conn.exec_driver_sql("SELECT count(*) FROM messages").scalar_one())
    return total - covered


def after_delete(conn: Connection) -> None:
    """In the transaction that deleted messages: when the newest were deleted, SQLite hands their ids out again —
    mark them not indexed, so the new messages holding them are indexed (their stale entries only make candidates
    the byte test turns down)."""
    if not has_index(conn):
        return
    top = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM messages").scalar_one()
    conn.exec_driver_sql(
        "UPDATE search_segments SET indexed_to = max(?, seg * ? - 1) WHERE indexed_to > ?", (top, SEGMENT, top)
    )


def tidy(conn: Connection) -> list[int]:
    """After a prune, in the writer's transaction: retire the first segment whose messages are all gone (its table
    leaves the index at once; :func:`shrink_retired` frees its pages in steps), or rebuild one whose live messages
    are fewer than :data:`STALE` of its entries (a new empty table, to be indexed again by :func:`index_step`; a
    search scans it meanwhile). Returns the segment it changed ([]: none needs it) — one per call, so each is a
    short transaction."""
    if not has_index(conn):
        return []
    for seg, (to, entries) in sorted(_segments(conn).items()):
        start = seg * SEGMENT
        live = int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM messages WHERE id BETWEEN ? AND ?", (start, (seg + 1) * SEGMENT - 1)
            ).scalar_one()
        )
        if live == 0:
            _retire(conn, seg)
            return [seg]
        if entries and to >= start and live < STALE * entries:
            _retire(conn, seg)
            _create(conn, seg, start - 1)
            return [seg]
    return []


# ------------------------------------------------------------------------------------------- searching
@dataclass(frozen=True)
class Arm:
    """One part of a text search, over the message ids ``lo`` … ``hi``: through the FTS5 table ``table``, or a scan
    (``table`` None). :func:`arms` gives them newest first; their ranges do not overlap."""

    lo: int
    hi: int
    table: str | None


def arms(conn: Connection) -> list[Arm]:
    """The parts a text search reads, newest first: each segment's index up to where it is built, and scans of
    what no index covers yet (adjacent scans joined)."""
    bounds = _bounds(conn)
    if bounds is None:
        return []
    low, top = bounds
    segs = _segments(conn)
    out: list[Arm] = []

    def scan(lo: int, hi: int) -> None:
        if out and out[-1].table is None and out[-1].lo == hi + 1:
            out[-1] = Arm(lo, out[-1].hi, None)
        else:
            out.append(Arm(lo, hi, None))

    for seg in range(top // SEGMENT, low // SEGMENT - 1, -1):
        start, end = max(low, seg * SEGMENT), min(top, (seg + 1) * SEGMENT - 1)
        done = segs[seg][0] if seg in segs else start - 1
        if done < end:
            scan(max(done + 1, start), end)
        if done >= start:
            out.append(Arm(start, min(done, end), _table(seg)))
    return out


def trigrams(needle: str) -> list[str] | None:
    """The needle's distinct trigrams the index is asked for; None for a short needle (the search then scans)."""
    # A needle's last character, when not ASCII, may be read otherwise in a message that follows it with a stray
    # continuation byte (invalid UTF-8): its trigram is left out (the byte test still checks it).
    usable = needle if needle[-1:].isascii() else needle[:-1]
    if len(usable) < MIN_CHARS:
        return None
    return list(dict.fromkeys(usable[i : i + 3] for i in range(len(usable) - 2)))


def fts_query(grams: list[str]) -> str:
    """The FTS5 MATCH expression: messages holding all of ``grams``, or a NUL byte."""
    return "(" + " AND ".join(_quote(g) for g in grams) + ") OR " + _quote(NUL_MARKER)


def fts_match(conn: Connection, needle: str, parts: list[Arm]) -> str | None:
    """The MATCH expression whose matches include every message holding ``needle``; None for a short needle, or
    when no part of the search is indexed.

    With more than :data:`ASK` trigrams, the :data:`ASK` rarest are asked for (of at most :data:`MAX_PROBES`; how
    rare, the span of ids a trigram's newest :data:`SAMPLE` matches in the newest indexed segment cover tells: a
    short read per trigram; the newest segment of some size is asked). FTS5 steps through an AND of trigrams by
    seeking in every trigram's list, so each very common one (``CLI`` of ``CLINIC``, ``^^^``, the digits of a
    year) costs a seek per candidate and narrows nothing, while a needle's rarest trigrams leave few candidates
    for the byte test."""
    indexed = [a for a in parts if a.table is not None]
    if not indexed:
        return None
    if "\x00" in needle:
        return _quote(NUL_MARKER)  # only a message with a NUL byte can hold it
    grams = trigrams(needle)
    if grams is None:
        return None
    if len(grams) > ASK:
        if len(grams) > MAX_PROBES:
            step = (len(grams) - 1) / (MAX_PROBES - 1)
            grams = [grams[round(k * step)] for k in range(MAX_PROBES)]
        grams = list(dict.fromkeys(grams))
        # the newest segment that is not nearly empty (a new one says little about how common a trigram is)
        big = [a for a in indexed if a.hi - a.lo + 1 >= SEGMENT // 4]
        newest = big[0] if big else max(indexed, key=lambda a: a.hi - a.lo)
        probes = ", ".join(
            f"(SELECT count(*) * 1.0 / ({newest.hi} - min(rowid) + 1) FROM (SELECT rowid FROM {newest.table} "
            f"WHERE {newest.table} MATCH ? ORDER BY rowid DESC LIMIT {SAMPLE}))"
            for _ in grams
        )
        density = [d or 0.0 for d in conn.exec_driver_sql(f"SELECT {probes}", tuple(_quote(g) for g in grams)).one()]
        grams = [g for _, g in sorted(zip(density, grams, strict=True), key=lambda dg: dg[0])][:ASK]
    return fts_query(grams)


def pg_escape(data: bytes) -> str:
    """PostgreSQL's ``encode(data, 'escape')``: NUL and bytes ≥ 0x80 as ``\\ooo``, ``\\`` doubled, the rest as is."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0 or b >= 0x80:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return "".join(out)


def pg_like_pattern(needle: bytes) -> str | None:
    """``%<escaped needle>%`` for ``LIKE … ESCAPE '\\'`` on ``encode(raw, 'escape')``, with ``%``, ``_`` and ``\\``
    literal; None when pg_trgm could take no trigram from it (the search then scans)."""
    esc = pg_escape(needle)
    if len(esc) < MIN_CHARS or not _ALNUM.search(esc):
        return None
    return "%" + esc.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

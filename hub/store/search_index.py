"""How a text search uses the text index of migration 0005, which keeps today's meaning of ``text``: the messages
whose raw bytes hold the needle's UTF-8 bytes, literally (``%``, ``_`` and ``\\`` are no wildcards).

Why trigrams: a needle is any substring — an identifier such as ``LAB_000123``, ``PCT%0042``, ``12345^^^MRN``, half a
word, a phrase with spaces. A word index (FTS5's ``unicode61``, PostgreSQL ``tsvector``) splits those at ``^``, ``|``
and ``_`` and stems or folds words, so it finds other messages than the substring test does. A trigram index can
serve every substring of three characters or more exactly: the index narrows the candidates to the messages that hold
all the needle's trigrams, and the same byte test as before (``instr`` / ``position``) confirms each one, so the
results are the substring search's results, in the same order (newest first), with the same paging and filters.

* **SQLite**: ``messages_fts``, a contentless FTS5 table (``tokenize='trigram case_sensitive 1'``, ``detail=none``:
  rowids only, no positions, which roughly halves the index and is enough since every candidate is confirmed) over
  the raw bytes read as UTF-8, kept in step by triggers on ``messages``. :func:`fts_match` asks for the needle's
  rarest trigrams (:data:`ASK` of them) ``OR`` the marker of messages with a NUL byte (FTS5 stops reading at a NUL,
  so those are always candidates). The search reads the FTS5 matches newest first and
  stops at the limit. Invalid UTF-8 in a message is read as replacement characters and never changes how the
  tokenizer reads a needle's bytes there, but for one case: a stray continuation byte right after a needle ending in
  a non-ASCII character joins that character, so the trigram of a non-ASCII last character is not asked for.
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

from sqlalchemy import Connection, Integer, column, table

__all__ = ["messages_fts", "trigrams", "fts_query", "fts_match", "pg_escape", "pg_like_pattern", "MIN_CHARS", "ASK"]

#: The FTS5 table of migration 0005 (SQLite only; not in the schema's metadata: a virtual table). Its column
#: ``messages_fts`` is FTS5's hidden column named after the table, the left side of ``MATCH``.
messages_fts = table("messages_fts", column("rowid", Integer), column("messages_fts"))

#: Needles shorter than this (in characters) have no trigram and scan.
MIN_CHARS = 3
#: How many of a needle's trigrams the index is asked for (the rarest; the byte test confirms the whole needle).
ASK = 2
#: How many of a long needle's trigrams are counted to find the rarest (spread over the needle).
MAX_PROBES = 8
#: How many of a trigram's newest matches tell how common it is (the id span they cover).
SAMPLE = 16
#: Indexed in front of a message that holds a NUL byte (see migration 0005); every FTS5 query also asks for it.
NUL_MARKER = "\x01\x02\x03"

_ALNUM = re.compile(r"[0-9A-Za-z]")


def _quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


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


def fts_match(conn: Connection, needle: str) -> str | None:
    """The MATCH expression whose matches include every message holding ``needle``; None for a short needle.

    With more than :data:`ASK` trigrams, the :data:`ASK` rarest are asked for (of at most :data:`MAX_PROBES`; how
    rare, the span of ids a trigram's newest :data:`SAMPLE` matches cover tells: a short read per trigram). FTS5
    steps through an AND of trigrams by seeking in every trigram's list, so each very common one (``CLI`` of
    ``CLINIC``, ``^^^``, the digits of a year) costs a seek per candidate and narrows nothing, while a needle's
    rarest trigrams leave few candidates for the byte test."""
    if not _has_index(conn):
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
        # one statement: how densely each trigram occurs among the newest messages, from its newest SAMPLE hits
        probes = ", ".join(
            f"(SELECT count(*) * 1.0 / ((SELECT top FROM t) - min(rowid) + 1) FROM (SELECT rowid FROM messages_fts "
            f"WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT {SAMPLE})) AS c{i}"
            for i in range(len(grams))
        )
        sql = f"WITH t(top) AS (SELECT coalesce(max(id), 0) FROM messages) SELECT {probes}"
        density = [d or 0.0 for d in conn.exec_driver_sql(sql, tuple(_quote(g) for g in grams)).one()]
        grams = [g for _, g in sorted(zip(density, grams, strict=True), key=lambda dg: dg[0])][:ASK]
    return fts_query(grams)


def _has_index(conn: Connection) -> bool:
    """Whether migration 0005 made the FTS5 table (it leaves it out when SQLite has no trigram tokenizer); kept
    with the database connection."""
    info = conn.info
    if "hub_messages_fts" not in info:
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'"
        info["hub_messages_fts"] = bool(conn.exec_driver_sql(sql).scalar())
    return bool(info["hub_messages_fts"])


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

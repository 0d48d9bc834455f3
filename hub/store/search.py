"""Reading what the store holds: message search (:func:`search`, keyset-paged, newest first; text through the
trigram index of :mod:`hub.store.search_index`, status alone through an index too), one message with
its deliveries and attempts (:func:`get_message`), and the counts behind ``hub status`` and the dashboard
(:func:`status`, :func:`queue_depth`). Each function runs on a reader connection the caller gives it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    column,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
)

from hub.store import counters, search_index
from hub.store.records import MESSAGE_STATUSES, PENDING, SearchQuery
from hub.store.schema import attempts, deliveries, messages

__all__ = ["status", "search", "get_message", "queue_depth", "delivery_states"]


def status(conn: Connection) -> dict[str, Any]:
    """Counts per channel (messages by status) and per destination (deliveries by status, oldest queued): read
    from the counters kept with the writes and one index probe per waiting queue and status, in one statement
    (:mod:`hub.store.counters`)."""
    chans: dict[str, dict[str, int]] = {}
    dests: dict[tuple[str, str], dict[str, Any]] = {}
    for ch, dest, st, n, first in counters.with_oldest(conn):
        if dest == "":
            chans.setdefault(ch, {})[st] = n
            continue
        row = dests.setdefault((ch, dest), {"oldest_queued": None})
        row[st] = n
        if st in PENDING and first is not None and (row["oldest_queued"] is None or first < row["oldest_queued"]):
            row["oldest_queued"] = first
    return {"channels": chans, "destinations": dests}


#: A message as a search lists it: everything but its content.
SUMMARY_COLUMNS = (
    messages.c.id,
    messages.c.channel,
    messages.c.received_at,
    messages.c.status,
    messages.c.content_type,
    messages.c.control_id,
    messages.c.message_type,
    messages.c.sending_app,
    messages.c.sending_facility,
    messages.c.patient_id,
    messages.c.source_ref,
    messages.c.error,
    messages.c.size,
)


def search(conn: Connection, q: SearchQuery) -> list[dict[str, Any]]:
    """Messages matching ``q``, newest first, without their content; each with ``deliveries``: counts by status."""
    parts: list[search_index.Arm] = []
    match = None
    if q.text and conn.dialect.name == "sqlite" and search_index.has_index(conn):
        parts = search_index.arms(conn)
        match = search_index.fts_match(conn, q.text, parts)
    if match is None:
        rows = _rows(conn, q, None, None, q.limit)
    else:
        # The text index drives, part after part, newest first (hub/store/search_index.py), until the limit.
        rows = []
        for arm in parts:
            if q.before_id is not None and arm.lo >= q.before_id:
                continue
            rows += _rows(conn, q, arm, match, q.limit - len(rows))
            if len(rows) >= q.limit:
                break
    if rows:
        d = deliveries.c
        ids = [r["id"] for r in rows]
        summary: dict[int, dict[str, int]] = {}
        for mid, st, n in conn.execute(
            select(d.message_id, d.status, func.count()).where(d.message_id.in_(ids)).group_by(d.message_id, d.status)
        ):
            summary.setdefault(mid, {})[st] = n
        for r in rows:
            r["deliveries"] = summary.get(r["id"], {})
    return rows


def _rows(
    conn: Connection, q: SearchQuery, arm: search_index.Arm | None, match: str | None, limit: int
) -> list[dict[str, Any]]:
    """One statement of a search: over the ids of ``arm`` (through its FTS5 table with ``match`` when it has one,
    else by id), or over every message (``arm`` None)."""
    m, d = messages.c, deliveries.c
    stmt = select(*SUMMARY_COLUMNS)
    key: ColumnElement[Any] = m.id  # what orders and pages the results: the message id, or the same id elsewhere
    is_sqlite = conn.dialect.name == "sqlite"
    if arm is not None and arm.table is not None:
        fts = table(arm.table, column("rowid", Integer), column(arm.table))
        key = fts.c.rowid
        stmt = stmt.select_from(fts.join(messages, m.id == key)).where(fts.c[arm.table].op("MATCH")(match))
    if arm is not None:
        stmt = stmt.where(key.between(arm.lo, arm.hi))
    if q.channel:
        stmt = stmt.where(m.channel == q.channel)
    if q.status:
        if q.status in MESSAGE_STATUSES:
            stmt = stmt.where(m.status == q.status)  # index (status, id), or (channel, status)
        elif is_sqlite and arm is None:
            # The deliveries with that status drive, newest message first (index (status, message_id)), one row
            # per message; SQLite would test EXISTS on every message instead. PostgreSQL plans a semi-join.
            key = d.message_id
            stmt = stmt.select_from(deliveries.join(messages, m.id == key)).where(d.status == q.status)
            if q.destination:
                stmt = stmt.where(d.destination == q.destination)
            stmt = stmt.group_by(key)
        else:
            sub = exists().where(d.message_id == m.id, d.status == q.status)
            if q.destination:
                sub = sub.where(d.destination == q.destination)
            stmt = stmt.where(sub)
    elif q.destination:
        stmt = stmt.where(exists().where(d.message_id == m.id, d.destination == q.destination))
    if q.since is not None:
        stmt = stmt.where(m.received_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(m.received_at < q.until)
    if q.control_id:
        stmt = stmt.where(m.control_id == q.control_id)
    if q.patient_id:
        stmt = stmt.where(m.patient_id == q.patient_id)
    if q.message_type:
        if "^" in q.message_type:
            stmt = stmt.where(m.message_type == q.message_type)
        else:
            stmt = stmt.where(
                or_(
                    m.message_type == q.message_type,
                    m.message_type.between(q.message_type + "^", q.message_type + "^\uffff"),
                )
            )
    if q.text:
        # Indexed where the needle allows (hub/store/search_index.py); the byte test confirms every candidate.
        needle = q.text.encode()
        if conn.dialect.name == "postgresql":
            pattern = search_index.pg_like_pattern(needle)
            if pattern is not None:
                stmt = stmt.where(func.encode(m.raw, literal_column("'escape'")).like(pattern, escape="\\"))
            stmt = stmt.where(func.position(literal(needle).op("IN")(m.raw)) > 0)
        else:
            stmt = stmt.where(func.instr(m.raw, literal(needle)) > 0)
    if q.before_id is not None:
        stmt = stmt.where(key < q.before_id)
    stmt = stmt.order_by(key.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def get_message(conn: Connection, message_id: int) -> dict[str, Any] | None:
    """A message with its raw bytes, its deliveries (content, response, errors) and their attempts."""
    row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
    if row is None:
        return None
    msg = dict(row._mapping)
    msg["meta"] = json.loads(msg["meta"]) if msg["meta"] else {}
    dl = [
        dict(r._mapping)
        for r in conn.execute(select(deliveries).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id))
    ]
    by_id = {x["id"]: x for x in dl}
    for x in dl:
        x["attempt_log"] = []
    if by_id:
        for a in conn.execute(select(attempts).where(attempts.c.delivery_id.in_(list(by_id))).order_by(attempts.c.id)):
            by_id[a.delivery_id]["attempt_log"].append(dict(a._mapping))
    msg["deliveries"] = dl
    return msg


def queue_depth(conn: Connection) -> dict[tuple[str, str], int]:
    """Pending deliveries (queued, retrying, being sent) per (channel, destination), from the counters."""
    out: dict[tuple[str, str], int] = {}
    for ch, dest, st, n in counters.counts(conn):
        if dest != "" and st in PENDING:
            out[(ch, dest)] = out.get((ch, dest), 0) + n
    return out


def delivery_states(conn: Connection, message_id: int) -> list[str]:
    """The status of each delivery of a message."""
    return list(conn.execute(select(deliveries.c.status).where(deliveries.c.message_id == message_id)).scalars())

"""Durable named values: sequences (:func:`next_value`: X12 control numbers …, unique and increasing across
restarts and nodes) and cursors (:func:`get_cursor`, :func:`set_cursor`: where a poller left off).
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, select, update

from hub.store.schema import cursors, sequences

__all__ = ["next_value", "get_cursor", "set_cursor"]


def next_value(conn: Connection, name: str, start: int) -> int:
    """The next number of the sequence ``name``; a new sequence starts at ``start``."""
    res = conn.execute(
        update(sequences)
        .where(sequences.c.name == name)
        .values(value=sequences.c.value + 1)
        .returning(sequences.c.value)
    ).scalar()
    if res is None:
        conn.execute(sequences.insert().values(name=name, value=start))
        res = start
    return int(res)


def get_cursor(conn: Connection, name: str) -> str | None:
    value: str | None = conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()
    return value


def set_cursor(conn: Connection, name: str, value: str) -> None:
    res = conn.execute(update(cursors).where(cursors.c.name == name).values(value=value, updated_at=time.time()))
    if not res.rowcount:
        conn.execute(cursors.insert().values(name=name, value=value, updated_at=time.time()))

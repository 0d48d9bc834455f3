"""X12 claims the hub submitted, and their status from the clearinghouse's 999 and 277CA, kept in the store.

The ``x12_837`` assembler (``hub.channels.x12``) records one row per claim it puts in an interchange: the charge
message it came from, the partner, CLM01 (patient control number), CLM02, ISA13/GS06/ST02 and BHT03, status
``submitted``. The ``claim_status`` destination applies inbound acknowledgements:

=============  ==========================================================================================
999            by GS06 (AK102) + ST02 (AK202) of the 837 transaction set: IK5 A/E → ``acknowledged``
               (the file was taken; only a claim still ``submitted`` moves), R → ``rejected``; a group
               rejected as a whole (AK9 R without AK2) rejects every claim of that group.
277CA          by patient control number (2200D TRN02 = CLM01), the latest submission of that claim:
               accepted (A1/A2…) → ``accepted``, rejected (A3/A6/A7/A8…, or action U) → ``rejected``,
               anything else → ``pending``; REF*1K is kept as the payer claim number. A batch-level
               rejection (2200B, TRN02 = BHT03) rejects every claim of that transaction.
=============  ==========================================================================================

Every change is also written to ``claim_events`` (what said so, when, with the error text), which ``hub show``
prints under the charge message. A retried batch (the send failed and the assembler ran again) updates the
claim's row in place while it is still ``submitted``; a claim sent again after a rejection gets a new row.

Writes go through the store's group writer (:meth:`Store.run_write`) and never raise inside the transaction;
reads use the store's engine. Claims outlive the messages they came from (retention does not prune them).
(Not to be confused with a worker claiming deliveries, :mod:`hub.store.queue`, nor with the X12 claim model
of :mod:`hub.transforms.x12`.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from hub.store.repository import Repository
from hub.store.schema import claim_events, claims, deliveries, messages
from hub.store.search import SUMMARY_COLUMNS

__all__ = ["ClaimStore", "Submission", "ClaimChange", "CLAIM_STATUSES", "control_number"]

CLAIM_STATUSES = ("submitted", "acknowledged", "accepted", "pending", "rejected")

_999_STATUS = {"accepted": "acknowledged", "accepted_with_errors": "acknowledged", "rejected": "rejected"}


def control_number(value: str | int | None) -> str:
    """A control number as kept in the store: digits without leading zeros ("000000012" → "12")."""
    text = str(value or "").strip()
    return str(int(text)) if text.isdigit() else text


@dataclass
class Submission:
    """One claim as written into an 837 interchange."""

    message_id: int
    channel: str
    destination: str | None
    partner: str
    kind: str
    patient_control_number: str
    isa13: str
    gs06: str
    st02: str
    charge: str = ""
    batch_reference: str = ""


@dataclass
class ClaimChange:
    """A claim whose status an acknowledgement changed (or confirmed)."""

    claim_id: int
    message_id: int
    patient_control_number: str
    status: str
    previous: str
    detail: str = ""


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else str(value)[:n]


class ClaimStore(Repository):
    """Claim submissions and status on top of a :class:`~hub.store.Store`."""

    # ------------------------------------------------------------------ submissions
    def record_submissions(self, subs: Sequence[Submission], *, at: float | None = None) -> list[int]:
        """Record the claims of one interchange (status ``submitted``); returns their claim ids."""
        now = at or time.time()
        rows = list(subs)
        if not rows:
            return []

        def op(conn: Connection) -> list[int]:
            c = claims.c
            # a batch sent again after a failed send: claims still only "submitted" keep their row
            existing: dict[tuple[int, str, str], int] = {}
            mids = sorted({s.message_id for s in rows})
            for k in range(0, len(mids), 500):
                for r in conn.execute(
                    select(c.id, c.message_id, c.partner, c.patient_control_number)
                    .where(c.message_id.in_(mids[k : k + 500]), c.status == "submitted")
                    .order_by(c.id)
                ):
                    existing[(int(r.message_id), r.partner, r.patient_control_number)] = int(r.id)
            ids: list[int] = []
            for s in rows:
                values = {
                    "channel": _clip(s.channel, 100),
                    "destination": _clip(s.destination, 100),
                    "kind": s.kind[:1],
                    "charge": _clip(s.charge, 20),
                    "isa13": control_number(s.isa13)[:20],
                    "gs06": control_number(s.gs06)[:20],
                    "st02": control_number(s.st02)[:20],
                    "batch_reference": _clip(s.batch_reference, 60),
                    "submitted_at": now,
                    "status": "submitted",
                    "status_at": now,
                    "status_detail": None,
                }
                key = (s.message_id, s.partner[:100], s.patient_control_number[:40])
                cid = existing.get(key)
                if cid is not None:
                    conn.execute(update(claims).where(c.id == cid).values(**values))
                else:
                    res = conn.execute(
                        insert(claims).values(
                            message_id=s.message_id, partner=key[1], patient_control_number=key[2], **values
                        )
                    )
                    cid = int(res.inserted_primary_key[0])  # type: ignore[index]
                ids.append(cid)
            conn.execute(
                insert(claim_events),
                [
                    {
                        "claim_id": cid,
                        "at": now,
                        "source": "837",
                        "status": "submitted",
                        "code": None,
                        "detail": f"837{s.kind} to {s.partner}: ISA13 {control_number(s.isa13)}, "
                        f"GS06 {control_number(s.gs06)}, ST02 {control_number(s.st02)}",
                        "message_id": s.message_id,
                    }
                    for cid, s in zip(ids, rows, strict=False)
                ],
            )
            return ids

        return self._write(op)

    # ------------------------------------------------------------------ acknowledgements
    def _apply(
        self,
        conn: Connection,
        row: Any,
        status: str,
        source: str,
        code: str,
        detail: str,
        ack_id: int | None,
        now: float,
        extra: dict[str, Any] | None = None,
    ) -> ClaimChange:
        values: dict[str, Any] = {"status": status, "status_at": now, "status_detail": _clip(detail, 2000) or None}
        values.update(extra or {})
        conn.execute(update(claims).where(claims.c.id == row.id).values(**values))
        conn.execute(
            insert(claim_events).values(
                claim_id=row.id,
                at=now,
                source=source,
                status=status,
                code=_clip(code, 20),
                detail=_clip(detail, 2000),
                message_id=ack_id,
            )
        )
        return ClaimChange(int(row.id), int(row.message_id), row.patient_control_number, status, row.status, detail)

    def apply_999(
        self, records: Iterable[Any], *, partner: str | None = None, ack_message_id: int | None = None
    ) -> list[ClaimChange]:
        """Apply the :class:`~hub.transforms.x12.AckRecord` list of a 999 (``read_999``); returns what changed."""
        recs = list(records)
        now = time.time()

        def op(conn: Connection) -> list[ClaimChange]:
            c = claims.c
            out: list[ClaimChange] = []
            for r in recs:
                if r.set_id and r.set_id not in ("837",):
                    continue  # a 999 for something else the hub sent (an 835 ack is not ours to track)
                conds = [c.gs06 == control_number(r.group_control)] if r.group_control else []
                if partner:
                    conds.append(c.partner == partner)
                if r.level == "transaction":
                    conds.append(c.st02 == control_number(r.st_control))
                elif r.level != "group" or r.status != "rejected" or not r.group_control:
                    continue  # group-level records matter only when the whole group was rejected
                status = _999_STATUS.get(r.status, "rejected")
                detail = f"999 {r.code}: " + (r.error_text or ("accepted" if status == "acknowledged" else "rejected"))
                done = {x.claim_id for x in out}
                for row in conn.execute(select(claims).where(*conds).order_by(c.id)):
                    if status == "acknowledged" and row.status != "submitted":
                        continue  # a later 277CA already said more than "the file was taken"
                    if r.level == "group" and row.id in done:
                        continue  # its own transaction's IK5 already said why
                    out.append(self._apply(conn, row, status, "999", r.code, detail, ack_message_id, now))
            return out

        return self._write(op)

    def apply_277ca(
        self, records: Iterable[Any], *, partner: str | None = None, ack_message_id: int | None = None
    ) -> tuple[list[ClaimChange], list[str]]:
        """Apply the :class:`~hub.transforms.x12.AckRecord` list of a 277CA (``read_277ca``).

        Returns (what changed, patient control numbers of claim records that matched no submission)."""
        recs = list(records)
        now = time.time()

        def op(conn: Connection) -> tuple[list[ClaimChange], list[str]]:
            c = claims.c
            out: list[ClaimChange] = []
            unknown: list[str] = []
            for r in recs:
                detail = f"277CA {r.code}: " + (r.error_text or r.status)
                if r.level == "claim":
                    conds = [c.patient_control_number == r.patient_control_number]
                    if partner:
                        conds.append(c.partner == partner)
                    row = conn.execute(select(claims).where(*conds).order_by(c.id.desc()).limit(1)).first()
                    if row is None:
                        unknown.append(r.patient_control_number)
                        continue
                    extra = {"payer_claim_number": _clip(r.payer_claim_number, 60)} if r.payer_claim_number else None
                    out.append(self._apply(conn, row, r.status, "277CA", r.code, detail, ack_message_id, now, extra))
                elif r.level == "batch" and r.status == "rejected" and r.batch_reference:
                    conds = [c.batch_reference == r.batch_reference]
                    if partner:
                        conds.append(c.partner == partner)
                    for row in conn.execute(select(claims).where(*conds).order_by(c.id)):
                        out.append(self._apply(conn, row, "rejected", "277CA", r.code, detail, ack_message_id, now))
            return out, unknown

        return self._write(op)

    # ------------------------------------------------------------------ reading
    def for_message(self, message_id: int) -> list[dict[str, Any]]:
        """The claims submitted from one message, oldest first, each with its ``events``."""

        def fn(conn: Connection) -> list[dict[str, Any]]:
            rows = [
                dict(r._mapping)
                for r in conn.execute(select(claims).where(claims.c.message_id == message_id).order_by(claims.c.id))
            ]
            by_id = {r["id"]: r for r in rows}
            for r in rows:
                r["events"] = []
            if by_id:
                for e in conn.execute(
                    select(claim_events).where(claim_events.c.claim_id.in_(list(by_id))).order_by(claim_events.c.id)
                ):
                    by_id[e.claim_id]["events"].append(dict(e._mapping))
            return rows

        return self._read(fn)

    def get(self, claim_id: int) -> dict[str, Any] | None:
        def fn(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(select(claims).where(claims.c.id == claim_id)).first()
            return dict(row._mapping) if row is not None else None

        return self._read(fn)

    def find(
        self,
        *,
        patient_control_number: str | None = None,
        partner: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        def fn(conn: Connection) -> list[dict[str, Any]]:
            c = claims.c
            stmt = select(claims)
            if patient_control_number:
                stmt = stmt.where(c.patient_control_number == patient_control_number)
            if partner:
                stmt = stmt.where(c.partner == partner)
            if status:
                stmt = stmt.where(c.status == status)
            return [dict(r._mapping) for r in conn.execute(stmt.order_by(c.id.desc()).limit(limit))]

        return self._read(fn)

    def messages(
        self,
        status: str,
        *,
        channel: str | None = None,
        partner: str | None = None,
        since: float | None = None,
        until: float | None = None,
        patient_id: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Messages whose latest claim submission has ``status``, newest first, shaped like
        :meth:`Store.search` rows (plus ``claims``: ``[{patient_control_number, status, status_detail}]``)."""

        def fn(conn: Connection) -> list[dict[str, Any]]:
            m, c, d = messages.c, claims.c, deliveries.c
            latest = select(c.message_id, c.patient_control_number, c.partner, func.max(c.id).label("cid")).group_by(
                c.message_id, c.patient_control_number, c.partner
            )
            if partner:
                latest = latest.where(c.partner == partner)
            sub = latest.subquery()
            ids_stmt = (
                select(sub.c.message_id)
                .join(claims, claims.c.id == sub.c.cid)
                .where(claims.c.status == status)
                .distinct()
            )
            stmt = select(*SUMMARY_COLUMNS).where(m.id.in_(ids_stmt))
            if channel:
                stmt = stmt.where(m.channel == channel)
            if since is not None:
                stmt = stmt.where(m.received_at >= since)
            if until is not None:
                stmt = stmt.where(m.received_at < until)
            if patient_id:
                stmt = stmt.where(m.patient_id == patient_id)
            if before_id is not None:
                stmt = stmt.where(m.id < before_id)
            rows = [dict(r._mapping) for r in conn.execute(stmt.order_by(m.id.desc()).limit(limit))]
            if rows:
                ids = [r["id"] for r in rows]
                summary: dict[int, dict[str, int]] = {}
                for mid, st, n in conn.execute(
                    select(d.message_id, d.status, func.count())
                    .where(d.message_id.in_(ids))
                    .group_by(d.message_id, d.status)
                ):
                    summary.setdefault(mid, {})[st] = n
                found: dict[int, list[dict[str, Any]]] = {}
                for claim in conn.execute(
                    select(c.message_id, c.patient_control_number, c.status, c.status_detail)
                    .where(c.message_id.in_(ids), c.id.in_(select(sub.c.cid)))
                    .order_by(c.id)
                ):
                    found.setdefault(claim.message_id, []).append(
                        {
                            "patient_control_number": claim.patient_control_number,
                            "status": claim.status,
                            "status_detail": claim.status_detail,
                        }
                    )
                for r in rows:
                    r["deliveries"] = summary.get(r["id"], {})
                    r["claims"] = found.get(r["id"], [])
            return rows

        return self._read(fn)

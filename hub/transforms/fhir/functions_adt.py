"""Table functions for the adt message family (see :mod:`.functions` for how a function is called).

Patient administration, scheduling, financial and referral messages: what their tables cannot say.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .conditions import Path
from .datatypes import dtm
from .functions_base import register
from .values import problem

__all__: list[str] = []


@register("once", whole_field=True)
def once(run: Any, ctx: Any, row: Any, reps: list[list[str]], value: str) -> str:
    """A constant written once for the field, however often it repeats (a ``value`` column writes it once per
    repetition): the status of the patient's Appointment.participant, whose actor the message table links."""
    return str(value)


# the units a v2 duration is given in (CNE/CWE of table 0344 / ANSI+ / UCUM) → minutes
_MINUTES = {
    "s": 1 / 60,
    "sec": 1 / 60,
    "min": 1,
    "m": 1,
    "h": 60,
    "hr": 60,
    "hour": 60,
    "d": 1440,
    "day": 1440,
    "wk": 10080,
    "w": 10080,
}


def _minutes(amount: str, units: str) -> float | None:
    try:
        n = float(amount)
    except ValueError:
        return None
    if n != n or n < 0 or n > 10_000_000:
        return None
    factor = _MINUTES.get((units or "min").strip().lower())
    return None if factor is None else n * factor


def _plus_minutes(start: str, mins: float) -> str | None:
    """An instant plus some minutes, in the instant's own zone (``Z`` kept)."""
    try:
        t = datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(minutes=mins)
    except (ValueError, OverflowError):
        return None
    text = t.isoformat()
    return text[:-6] + "Z" if start.endswith("Z") and text.endswith("+00:00") else text


@register("end_after")
def end_after(run: Any, ctx: Any, row: Any, raw: str, duration: Path, units: Path | None = None) -> str | None:
    """A start time (the row's value, a DTM) plus a duration (``duration`` in ``units``, minutes when not given)
    → the end instant: AIS-4 + AIS-7 (AIS-8), SCH-11.4 + SCH-9 (SCH-10). Nothing when either cannot be read."""
    start = dtm(run.v.d(raw.split(run.v.cs, 1)[0]), run.cfg.timezone, instant=True)
    amount = ctx.value(duration)
    if start is None or not amount or problem("instant", start) is not None:
        return None
    mins = _minutes(amount, ctx.value(units) if units is not None else "")
    if mins is None:
        return None
    return _plus_minutes(start, mins)


@register("minutes")
def minutes(run: Any, ctx: Any, row: Any, raw: str, units: Path | None = None) -> int | None:
    """A duration in ``units`` (minutes when not given) → whole minutes (Appointment.minutesDuration)."""
    mins = _minutes(run.v.d(raw.split(run.v.cs, 1)[0]), ctx.value(units) if units is not None else "")
    if mins is None or mins < 1 or mins != int(mins):
        return None
    return int(mins)


@register("reference_to")
def reference_to(run: Any, ctx: Any, row: Any, raw: str, label: str) -> dict[str, Any] | None:
    """A Reference to the resource the message table labels ``label`` (the nearest instance): IN1-16 when IN1-17
    is SEL — the insured is the patient, Coverage.subscriber → ``Patient[1]``. Nothing when there is none."""
    inst = run.lookup(str(label), ctx.occ)
    return None if inst is None else run.reference(inst)


@register("after_start")
def after_start(
    run: Any,
    ctx: Any,
    row: Any,
    raw: str,
    units: Path | None = None,
    duration: Path | None = None,
    duration_units: Path | None = None,
) -> str | None:
    """The appointment's start (already written: SCH-11, TQ1) plus an offset (the row's value, in ``units``,
    minutes when not given) and, when given, a ``duration`` (in ``duration_units``) → an instant: a resource's
    participant.period when it gives a Start Date/Time Offset instead of a start (AIP-7/AIL-7/AIG-9, IG: ".start +
    offset"). Nothing when the appointment has no start or a number cannot be read."""
    inst = ctx.inst
    start = inst.res.get("start") if inst is not None else None
    if not isinstance(start, str) or problem("instant", start) is not None:
        return None
    mins = _minutes(run.v.d(raw.split(run.v.cs, 1)[0]), ctx.value(units) if units is not None else "")
    if mins is None:
        return None
    if duration is not None:
        amount = ctx.value(duration)
        if not amount:
            return None
        more = _minutes(amount, ctx.value(duration_units) if duration_units is not None else "")
        if more is None:
            return None
        mins += more
    return _plus_minutes(start, mins)

"""Writing X12: segments, transactions and the ISA/GS/ST envelopes around them.

Values are checked for delimiters (a delimiter inside a value would corrupt the file silently), trailing empty
elements and components are trimmed (pyx12 flags them, and so do clearinghouses), and numbers are written in
the X12 ``R``/``N`` forms (no exponent, no trailing zeros).

Control numbers are taken in one order — ISA13, then per group GS06 and the ST02 of its transactions — and
written with one set of rules (ISA13/IEA02 nine digits, GS06/GE02 as is, ST02/SE02 at least four digits):
:func:`write_interchange` takes them while writing, :func:`number_interchange` takes them again for an
interchange already written (its numbers were provisional: the hub takes the real ones when it accepts the
message, ``hub.channels.x12``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from hub.errors import MappingError

from .partners import ControlNumbers, Partner
from .reader import Delimiters

__all__ = [
    "SegmentWriter",
    "TransactionBody",
    "FunctionalGroup",
    "write_interchange",
    "format_amount",
    "format_quantity",
    "delimiters_of",
    "number_interchange",
    "Element",
]

Element = str | int | Decimal | None | Sequence[str]


def format_amount(value: Decimal | int | str) -> str:
    """An X12 ``R`` monetary amount: ``100``, ``100.5``, ``-12.25`` (at most 2 decimals)."""
    d = Decimal(str(value)).quantize(Decimal("0.01"))
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_quantity(value: Decimal | int | str) -> str:
    d = Decimal(str(value))
    text = format(d.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def delimiters_of(partner: Partner) -> Delimiters:
    i = partner.isa
    return Delimiters(
        i.element_separator,
        i.repetition_separator,
        i.component_separator,
        i.segment_terminator,
        "\n" if i.newline else "",
    )


class SegmentWriter:
    """Collects segments as text; ``location`` labels (loop ids) make delimiter errors point somewhere."""

    def __init__(self, delimiters: Delimiters) -> None:
        self.d = delimiters
        self.parts: list[str] = []
        self._forbidden = set(delimiters.element + delimiters.segment + delimiters.component + delimiters.repetition)
        self._forbidden.discard("")

    def _value(self, seg_id: str, index: int, value: Element, loop: str) -> str:
        if value is None:
            return ""
        if isinstance(value, Decimal):
            return format_amount(value)
        if isinstance(value, bool):  # an int to Python, but no X12 value
            raise TypeError(f"{seg_id}{index:02d}: a bool is not an X12 value")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            self._check(value, seg_id, index, loop)
            return value
        comps = [self._value(seg_id, index, c, loop) for c in value]
        while comps and not comps[-1]:
            comps.pop()
        return self.d.component.join(comps)

    def _check(self, value: str, seg_id: str, index: int, loop: str) -> None:
        if self._forbidden.intersection(value):
            bad = "".join(sorted(self._forbidden.intersection(value)))
            raise MappingError(
                f"{seg_id}{index:02d} value {value!r} contains the X12 delimiter(s) {bad!r}",
                location=f"{loop + '/' if loop else ''}{seg_id}{index:02d}",
            )

    def segment(self, seg_id: str, *elements: Element, loop: str = "") -> None:
        values = [self._value(seg_id, i, v, loop) for i, v in enumerate(elements, start=1)]
        while values and not values[-1]:
            values.pop()
        self.parts.append(self.d.element.join([seg_id, *values]) + self.d.segment + self.d.suffix)

    def __len__(self) -> int:
        return len(self.parts)

    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class TransactionBody:
    """The segments of one transaction between ST and SE, written by a :class:`SegmentWriter`."""

    set_id: str  # "837", "999", "835" …
    segments: list[str] = field(default_factory=list)  # already-serialised segments (with terminator)
    implementation: str = ""  # ST03, e.g. 005010X222A1


@dataclass
class FunctionalGroup:
    functional_id: str  # GS01: HC (837), HP (835), FA (999), HN (277)
    version: str  # GS08, e.g. 005010X222A1
    transactions: list[TransactionBody] = field(default_factory=list)


def _pad(value: str, width: int) -> str:
    return value[:width].ljust(width)


def write_interchange(
    partner: Partner,
    numbers: ControlNumbers,
    groups: Iterable[FunctionalGroup],
    *,
    now: datetime | None = None,
    sender: tuple[str, str] | None = None,
    receiver: tuple[str, str] | None = None,
    gs_codes: tuple[str, str] | None = None,
    usage: str | None = None,
    interchange_segments: list[str] | None = None,
) -> bytes:
    """One ISA … IEA around the groups; control numbers from ``numbers`` under ``partner.name``.

    ``sender``/``receiver`` (qualifier, id), ``gs_codes`` and ``usage`` (ISA15) override the partner settings
    (acknowledgements answer with the ids the inbound file used); ``interchange_segments`` are written right
    after the ISA (TA1 segments).
    """
    now = now or datetime.now()
    isa = partner.isa
    d = delimiters_of(partner)
    w = SegmentWriter(d)
    isa13 = _isa13(numbers.next(partner.name, "isa"))
    s_q, s_id = sender or (isa.sender_qualifier, isa.sender_id)
    r_q, r_id = receiver or (isa.receiver_qualifier, isa.receiver_id)
    isa_elements = [
        isa.authorization_qualifier,
        _pad(isa.authorization, 10),
        isa.security_qualifier,
        _pad(isa.security, 10),
        s_q,
        _pad(s_id, 15),
        r_q,
        _pad(r_id, 15),
        now.strftime("%y%m%d"),
        now.strftime("%H%M"),
        d.repetition or "^",
        "00501",
        isa13,
        isa.ack_requested,
        usage or isa.usage,
        d.component,
    ]
    # the ISA is fixed width and may legitimately hold blank elements and delimiters: written as is
    w.parts.append(d.element.join(["ISA", *isa_elements]) + d.segment + d.suffix)
    if interchange_segments:
        w.parts.extend(interchange_segments)
    n_groups = 0
    gs_sender, gs_receiver = gs_codes or (partner.gs.sender_code, partner.gs.receiver_code)
    for group in groups:
        n_groups += 1
        gs06 = _gs06(numbers.next(partner.name, "gs"))
        w.segment(
            "GS",
            group.functional_id,
            gs_sender,
            gs_receiver,
            now.strftime("%Y%m%d"),
            now.strftime("%H%M"),
            gs06,
            "X",
            group.version,
        )
        for tx in group.transactions:
            st02 = _st02(numbers.next(partner.name, "st"))
            w.segment("ST", tx.set_id, st02, tx.implementation or None)
            w.parts.extend(tx.segments)
            w.segment("SE", str(len(tx.segments) + 2), st02)
        w.segment("GE", str(len(group.transactions)), gs06)
    w.segment("IEA", str(n_groups), isa13)
    return w.text().encode("utf-8")


def _isa13(n: int) -> str:
    return f"{n:09d}"


def _gs06(n: int) -> str:
    return str(n)


def _st02(n: int) -> str:
    return f"{n:04d}"


def number_interchange(raw: bytes, partner: str, numbers: ControlNumbers) -> bytes:
    """``raw`` (interchanges written here) with new control numbers from ``numbers`` under ``partner``.

    The numbers are taken in the order :func:`write_interchange` takes them and written in its forms, and each
    trailer repeats its header's (IEA02 = ISA13, GE02 = GS06, SE02 = ST02); nothing else changes. Content that
    is not an interchange (no ISA at the start) comes back as it is.
    """
    text = raw.decode("utf-8", "surrogateescape")
    if not text.startswith("ISA") or len(text) < 106:
        return raw
    sep, term = text[3], text[105]
    isa13 = gs06 = st02 = ""
    pieces = text.split(term)
    for i, piece in enumerate(pieces):
        body = piece.lstrip("\r\n")
        elements = body.split(sep)
        sid = elements[0]
        if sid == "ISA" and len(elements) > 13:
            isa13 = elements[13] = _isa13(numbers.next(partner, "isa"))
        elif sid == "GS" and len(elements) > 6:
            gs06 = elements[6] = _gs06(numbers.next(partner, "gs"))
        elif sid == "ST" and len(elements) > 2:
            st02 = elements[2] = _st02(numbers.next(partner, "st"))
        elif sid == "SE" and len(elements) > 2:
            elements[2] = st02
        elif sid == "GE" and len(elements) > 2:
            elements[2] = gs06
        elif sid == "IEA" and len(elements) > 2:
            elements[2] = isa13
        else:
            continue
        pieces[i] = piece[: len(piece) - len(body)] + sep.join(elements)
    return term.join(pieces).encode("utf-8", "surrogateescape")

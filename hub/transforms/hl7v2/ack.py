"""HL7 v2 acknowledgements: :func:`build_ack`, :func:`ack_mode`, :func:`ack_code`, :func:`ack_for_unparseable`.

Hand-written (not hl7apy/python-hl7): an ACK answers every message on the MLLP hot path, and it must echo the
original's delimiters, version, processing id and character set byte-for-byte, which is simplest by copying the
original's ER7 fields as written.

Layout by version (chapter 2 of each version):

* MSH: MSH-3..6 swapped from the original (its receiver is our sender), MSH-7 now, MSH-9 ``ACK^<trigger>^ACK``
  (the third component exists from v2.3.1; ``ACK^<trigger>`` before), MSH-10 a new control id, MSH-11 and MSH-12
  copied, MSH-18 copied (the ACK is encoded in the original's character set).
* MSA: MSA-1 the code, MSA-2 the original MSH-10, MSA-3 the text for versions before 2.5 (deprecated after).
* ERR (only for AE/AR/CE/CR): v2.5+ ``ERR-2`` location (``SEG^seq^field^rep^comp^sub``), ``ERR-3``
  ``code^description^HL70357``, ``ERR-4`` severity, ``ERR-8`` the text; before v2.5 ``ERR-1`` =
  ``SEG^seq^field^code&description&HL70357``.

Original vs enhanced mode: a message that values MSH-15 or MSH-16 asks for enhanced acknowledgement, answered
with ``CA/CE/CR`` (commit accept/error/reject) instead of ``AA/AE/AR``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hub.errors import Hl7ParseError, MappingError

from .er7 import Hl7Message, format_ts, new_control_id, parse
from .escaping import DEFAULT_ENCODING_CHARS, EncodingChars, escape
from .paths import Hl7Path, parse_path

__all__ = [
    "build_ack",
    "ack_mode",
    "ack_code",
    "accept_ack_wanted",
    "ack_for_unparseable",
    "recover_msh",
    "TABLE_0357",
    "version_tuple",
]

TABLE_0357: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

_ERROR_CODES = ("AE", "AR", "CE", "CR")
_OUTCOMES = {
    "accepted": ("AA", "CA"),
    "filtered": ("AA", "CA"),
    "rejected": ("AR", "CR"),
    "error": ("AE", "CE"),
}


def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"2.5.1"`` → ``(2, 5, 1)``; an absent or unreadable version counts as the current one (2.5.1)."""
    if not version:
        return (2, 5, 1)
    parts: list[int] = []
    for p in version.strip().split("."):
        if not (p.isascii() and p.isdigit()):  # str.isdigit accepts "²" and other digits int() refuses
            break
        parts.append(int(p))
    return tuple(parts) if parts else (2, 5, 1)


def _msh(msg: Hl7Message, path: Hl7Path) -> str | None:
    """A value of the MSH by a pre-parsed path (ACKs are built for every message a source takes)."""
    seg = msg.segment("MSH")
    return seg._read_first(path) if seg is not None else None


_MSH12, _MSH15, _MSH16 = (parse_path(p) for p in ("MSH-12.1", "MSH-15", "MSH-16"))


def ack_mode(msg: Hl7Message) -> str:
    """``"enhanced"`` when the original values MSH-15 or MSH-16 (accept/application ack type), else ``"original"``."""
    return "enhanced" if (_msh(msg, _MSH15) or _msh(msg, _MSH16)) else "original"


def ack_code(outcome: Any, msg: Hl7Message) -> str:
    """Map an outcome (``accepted``/``filtered``/``rejected``/``error``, or :class:`hub.message.Outcome`) to AA/AR/AE,
    or to CA/CR/CE when the original asks for enhanced mode."""
    name = str(getattr(outcome, "value", outcome)).lower()
    try:
        original, enhanced = _OUTCOMES[name]
    except KeyError:
        raise ValueError(f"unknown outcome {outcome!r} (expected accepted, filtered, rejected or error)") from None
    return enhanced if ack_mode(msg) == "enhanced" else original


def accept_ack_wanted(msg: Hl7Message, code: str) -> bool:
    """Whether the sender wants this accept acknowledgement (MSH-15: AL always, NE never, ER only on errors,
    SU only on success). Original mode (MSH-15 empty) always wants one."""
    cond = (_msh(msg, _MSH15) or "").upper()
    ok = code in ("AA", "CA")
    if cond == "NE":
        return False
    if cond == "ER":
        return not ok
    if cond == "SU":
        return ok
    return True


def _erl(location: str | None, enc: EncodingChars) -> list[str] | None:
    """An error location as ERL components [seg, seq, field, rep, comp, sub], from a path or ``SEG^seq^field``."""
    if not location:
        return None
    loc = location.strip()
    if "^" in loc:
        parts = loc.split("^")
        if len(parts[0]) == 3 and parts[0].isalnum():
            return [escape(p, enc) for p in parts[:6]]
        return None
    try:
        p = parse_path(loc)
    except MappingError:
        return None
    out = [p.segment, str(p.occurrence or 1)]
    if p.field is not None:
        out.append(str(p.field))
        if p.repetition is not None or p.component is not None:
            out.append(str(p.repetition or 1))
        if p.component is not None:
            out.append(str(p.component))
            if p.subcomponent is not None:
                out.append(str(p.subcomponent))
    return out


def _component(msh_field: str, enc: EncodingChars, n: int) -> str:
    parts = msh_field.split(enc.repetition)[0] if enc.repetition else msh_field
    comps = parts.split(enc.component) if enc.component else [parts]
    return comps[n - 1] if len(comps) >= n else ""


def build_ack(
    msg: Hl7Message,
    code: str,
    *,
    text: str | None = None,
    error_code: str | None = None,
    error_location: str | None = None,
    severity: str = "E",
    control_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """An ACK for ``msg`` (see the module docstring for the layout), encoded in the original's character set.

    ``code`` is AA/AE/AR (original mode) or CA/CE/CR (enhanced). For the error codes an ERR segment is added with
    ``error_code`` from table 0357 (default 207, application internal error), ``error_location`` as an HL7 path
    (``PID-3.1``, ``OBX[2]-5``) or ``SEG^seq^field``, and ``severity`` (E/W/I, v2.5+).
    """
    code = code.upper()
    enc = msg.enc
    fs, cs, ss = enc.field, enc.component, enc.subcomponent or enc.component
    msh = msg.segment("MSH")
    assert msh is not None  # parse() guarantees it
    version = _msh(msg, _MSH12)
    v = version_tuple(version)

    trigger = _component(msh.field(9), enc, 2)
    if trigger:
        mtype = cs.join(["ACK", trigger, "ACK"]) if v >= (2, 3, 1) else cs.join(["ACK", trigger])
    else:
        mtype = "ACK"
    msh_fields = [
        "MSH",
        enc.msh2,
        msh.field(5),
        msh.field(6),
        msh.field(3),
        msh.field(4),
        format_ts(now),
        "",
        mtype,
        escape(control_id or new_control_id(), enc),
        msh.field(11),
        msh.field(12),
    ]
    charset = msh.field(18)
    if charset and charset.isprintable():  # a control character there is no character set: not echoed
        msh_fields += ["", "", "", "", "", charset]
    segments = [fs.join(msh_fields)]

    msa = ["MSA", code, msh.field(10)]
    if text and v < (2, 5):
        msa.append(escape(text, enc))
    segments.append(fs.join(msa))

    if code in _ERROR_CODES:
        err_code = error_code or "207"
        description = TABLE_0357.get(err_code, "")
        where = _erl(error_location, enc)
        if v >= (2, 5):
            err = [
                "ERR",
                "",
                cs.join(where) if where else "",
                cs.join([escape(err_code, enc), escape(description, enc), "HL70357"]),
                escape(severity or "E", enc),
            ]
            if text:
                err += ["", "", "", escape(text, enc)]  # ERR-8 user message
        else:
            ce = ss.join([escape(err_code, enc), escape(description, enc), "HL70357"])
            loc = (where or ["", "", ""])[:3]
            loc += [""] * (3 - len(loc))
            err = ["ERR", cs.join(loc + [ce])]
        segments.append(fs.join(err))

    out = "\r".join(segments) + "\r"
    try:
        return out.encode(msg.codec)
    except (UnicodeError, LookupError):
        return out.encode("utf-8")


def recover_msh(raw: bytes | str) -> Hl7Message | None:
    """A message holding just the MSH of ``raw``, made readable even when MSH-2 is broken; None if there is none."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if data[:3] == b"\xef\xbb\xbf":  # a UTF-8 BOM, also in front of bytes that are not UTF-8 after all
            data = data[3:]
        try:
            text = data.decode("utf-8")
            codec = "utf-8"
        except UnicodeDecodeError:
            text, codec = data.decode("latin-1"), "latin-1"
    else:
        text, codec = str(raw), "utf-8"
    text = text.lstrip("\ufeff")
    line = ""
    for candidate in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        candidate = candidate.strip()
        if candidate.startswith("MSH"):
            line = candidate
            break
    if not line:
        return None
    fs = line[3:4]
    if not fs or fs.isalnum() or fs.isspace() or not fs.isprintable():
        # No usable field separator (``MSH``, ``MSHA^~…``, ``MSH\x00|…``): nothing can be read from the header,
        # but the sender still gets an answer in the standard delimiters (MSA-2 empty).
        return parse("MSH|" + DEFAULT_ENCODING_CHARS.msh2, encoding=codec)
    fields = line.split(fs)
    msh2 = fields[1] if len(fields) > 1 else ""
    chars = fs + msh2
    good = 1 <= len(msh2) <= 5 and len(set(chars)) == len(chars) and not any(c.isalnum() or c.isspace() for c in msh2)
    if good:
        try:
            return parse(line, encoding=codec)
        except Hl7ParseError:
            pass
    # Broken MSH-2: keep the field separator (if it does not clash) and use the standard encoding characters;
    # the copied fields are escaped as text, since their inner structure cannot be known.
    new_fs = fs if fs not in DEFAULT_ENCODING_CHARS.msh2 else "|"
    enc = EncodingChars(new_fs)
    keep = [escape(f, enc) for f in fields[2:18]]
    header = "MSH" + new_fs + enc.msh2 + (new_fs + new_fs.join(keep) if keep else "")
    try:
        return parse(header, encoding=codec)
    except Hl7ParseError:
        return parse("MSH|" + DEFAULT_ENCODING_CHARS.msh2, encoding=codec)


def ack_for_unparseable(raw: bytes | str, err: Hl7ParseError) -> bytes | None:
    """An AR (CR in enhanced mode) for input that failed to parse, built from whatever MSH can be recovered.

    Any line starting with ``MSH`` is answered (in the standard delimiters, MSA-2 empty, when its MSH-1 is not a
    usable separator); returns None when there is no MSH at all (the caller then closes or logs, as the peer
    cannot correlate an ACK anyway).
    """
    msg = recover_msh(raw)
    if msg is None:
        return None
    code = "CR" if ack_mode(msg) == "enhanced" else "AR"
    return build_ack(
        msg,
        code,
        text=str(err) or None,
        error_code=getattr(err, "code", "") or "100",
        error_location=getattr(err, "location", "") or None,
    )

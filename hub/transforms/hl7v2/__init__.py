"""HL7 v2 (ER7) for the hub: read, address by path, write, split batches, acknowledge, validate. Pure code, no I/O.

::

    msg = parse(raw)                    # microseconds; raises Hl7ParseError (code from table 0357)
    msg.get("PID-3.1"); msg.get_all("OBX-5"); msg.set("PID-5.1", "DOE"); msg.delete("PID-19")
    msg.to_bytes()                      # the very same bytes when unmodified
    meta(msg)                           # control_id, message_type "ADT^A04", trigger, sending_app, …, patient_id
    split_batch(raw)                    # FHS/BHS/…/BTS/FTS or back-to-back messages → [bytes, …]
    build_ack(msg, ack_code("accepted", msg))
    validate(msg)                       # hl7apy strict validation → [Issue]; check_basic(msg) is the cheap one

Modules: :mod:`.er7` (parser and document), :mod:`.paths`, :mod:`.escaping`, :mod:`.charsets`, :mod:`.batch`,
:mod:`.ack`, :mod:`.validate` (imports hl7apy lazily, so importing this package stays cheap).

Reading rules in one place (details in :mod:`.er7`): ``get`` returns None for absent/empty, decoded text for a
leaf, the ER7 text as written (an :class:`Er7` ``str``) for a composite, ``'""'`` for the HL7 null, and keeps
formatting escapes (``\\.br\\``, ``\\H\\``, ``\\N\\``) verbatim.
"""

from __future__ import annotations

from .ack import accept_ack_wanted, ack_code, ack_for_unparseable, ack_mode, build_ack
from .batch import is_batch, split_batch
from .er7 import NULL, Er7, Hl7Message, Segment, format_ts, meta, new_control_id, new_message, parse
from .escaping import DEFAULT_ENCODING_CHARS, EncodingChars, escape, unescape
from .paths import Hl7Path, check_path, parse_path
from .validate import check_basic, validate

__all__ = [
    "parse",
    "Hl7Message",
    "Segment",
    "Er7",
    "NULL",
    "meta",
    "new_message",
    "new_control_id",
    "format_ts",
    "split_batch",
    "is_batch",
    "escape",
    "unescape",
    "EncodingChars",
    "DEFAULT_ENCODING_CHARS",
    "Hl7Path",
    "parse_path",
    "check_path",
    "build_ack",
    "ack_mode",
    "ack_code",
    "accept_ack_wanted",
    "ack_for_unparseable",
    "validate",
    "check_basic",
]

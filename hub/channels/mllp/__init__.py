"""The ``mllp`` connector: HL7 v2 over MLLP — a listener (source) and a sender (destination).

MLLP (HL7's Minimal Lower Layer Protocol) frames each message as ``<VT> message <FS><CR>`` (``0x0b`` … ``0x1c
0x0d``) on a TCP connection that usually stays open for hours; the receiver answers every frame with an ACK in
its own frame before the sender sends the next one.

Modules, each depending only on those above it:

* :mod:`.framing` — the bytes on the wire: frame constants, :func:`frame`, the sans-IO :class:`Framer` (shared
  by both ends and the tests), :func:`normalise_segments`;
* :mod:`.tls` — what both ends share beyond framing: the ``tls:`` settings (:class:`MllpTls`), the TLS
  contexts built from them, the reading of duration settings;
* :mod:`.source` — :class:`MllpSource`, the listener: one task per connection, each frame received, stored and
  answered with an ACK (broken input, duplicates, ``ack: after_delivery``);
* :mod:`.sender` — :class:`MllpDestination`, the sender with its pool of :class:`MllpConnection`; also
  :func:`send_messages` (``hub send``), :func:`ack_summary` and :func:`parse_mllp_url`.

Everything other code uses is importable from here (``hub.channels.mllp:MllpSource`` is the component's path).
"""

from __future__ import annotations

from hub.channels.mllp.framing import END_BLOCK, READ_SIZE, START_BLOCK, Framer, frame, normalise_segments
from hub.channels.mllp.sender import (
    MllpConnection,
    MllpDestination,
    SendResult,
    ack_summary,
    parse_mllp_url,
    send_messages,
)
from hub.channels.mllp.source import MllpSource
from hub.channels.mllp.tls import MllpTls, client_context, server_context

__all__ = [
    "MllpSource",
    "MllpDestination",
    "MllpTls",
    "Framer",
    "frame",
    "MllpConnection",
    "send_messages",
    "SendResult",
    "ack_summary",
    "parse_mllp_url",
    "normalise_segments",
    "client_context",
    "server_context",
    "START_BLOCK",
    "END_BLOCK",
    "READ_SIZE",
]

"""MLLP on the wire: frame constants, :func:`frame`, the sans-IO :class:`Framer`, :func:`normalise_segments`.

MLLP (HL7's Minimal Lower Layer Protocol) frames each message as ``<VT> message <FS><CR>`` (``0x0b`` … ``0x1c
0x0d``). Nothing here does I/O: the listener (:mod:`.source`), the sender (:mod:`.sender`) and the tests feed
bytes in and take frames out.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "VT",
    "FS",
    "CR",
    "START_BLOCK",
    "END_BLOCK",
    "READ_SIZE",
    "HEAD_BYTES",
    "frame",
    "normalise_segments",
    "Framer",
]

VT, FS, CR = 0x0B, 0x1C, 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
READ_SIZE = 65536  # bytes asked of the socket per read
HEAD_BYTES = 4096  # bytes of a broken frame kept to recover its MSH for an AR
_WHITESPACE = b" \t\r\n\x00"


def frame(payload: bytes) -> bytes:
    """``payload`` in an MLLP frame."""
    return START_BLOCK + payload + END_BLOCK


def normalise_segments(raw: bytes) -> bytes:
    """HL7 ends segments with CR; files often use LF or CRLF. A message without any CR gets its LFs turned into
    CRs, CRLF becomes CR; a lone LF inside a CR-terminated message (a line break in a value) is left alone."""
    if b"\n" not in raw:
        return raw
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r")
    return raw.replace(b"\r\n", b"\r")


class Framer:
    """Cuts an MLLP byte stream into frames. Pure (no I/O), so source, sender and tests share it.

    :meth:`feed` returns events in stream order:

    * ``("frame", payload)`` — a complete frame (without VT and FS CR);
    * ``("garbage", n)`` — ``n`` bytes outside any frame (whitespace between frames is not counted);
    * ``("too_large", head)`` — a frame longer than ``max_bytes`` has ended; ``head`` is its first bytes (the
      rest was discarded as it arrived, so memory stays bounded);
    * ``("unterminated", head)`` — a new start block came before the end of the frame in progress.

    A frame may end with FS alone (no CR), as some senders do.
    """

    __slots__ = ("buf", "in_frame", "max_bytes", "oversized", "started")

    def __init__(self, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.in_frame = False
        self.oversized = False
        self.started = 0.0  # monotonic time the frame in progress began

    @property
    def pending(self) -> int:
        """Bytes of the frame in progress held so far."""
        return len(self.buf)

    def head(self) -> bytes:
        return bytes(self.buf[:HEAD_BYTES])

    def _open(self) -> None:
        self.in_frame = True
        self.oversized = False
        self.buf.clear()
        self.started = time.monotonic()

    def _append(self, chunk: bytes | memoryview) -> None:
        if self.oversized:
            return
        if len(self.buf) + len(chunk) > self.max_bytes:
            self.oversized = True
            keep = max(0, HEAD_BYTES - len(self.buf))
            self.buf += chunk[:keep]
            return
        self.buf += chunk

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        n = len(data)
        pos = 0
        # The common case: a whole frame (or several) in one read, nothing in progress.
        while pos < n:
            if not self.in_frame:
                i = data.find(START_BLOCK, pos)
                junk = data[pos:] if i < 0 else data[pos:i]
                if junk:
                    stray = len(junk.strip(_WHITESPACE))
                    if stray:
                        events.append(("garbage", stray))
                if i < 0:
                    return events
                pos = i + 1
                j = data.find(b"\x1c", pos)
                k = data.find(START_BLOCK, pos, j if j >= 0 else n)
                if j >= 0 and k < 0 and j - pos <= self.max_bytes:
                    events.append(("frame", data[pos:j]))
                    pos = j + 1
                    if pos < n and data[pos] == CR:
                        pos += 1
                    continue
                self._open()
            # inside a frame: look for its end, or a start block that abandons it
            j = data.find(b"\x1c", pos)
            k = data.find(START_BLOCK, pos, j if j >= 0 else n)
            if k >= 0:
                self._append(memoryview(data)[pos:k])
                events.append(("unterminated", self.head()))
                self.in_frame = False
                self.buf.clear()
                pos = k
                continue
            if j < 0:
                self._append(memoryview(data)[pos:])
                return events
            self._append(memoryview(data)[pos:j])
            if self.oversized:
                events.append(("too_large", self.head()))
            else:
                events.append(("frame", bytes(self.buf)))
            self.in_frame = False
            self.oversized = False
            self.buf.clear()
            pos = j + 1
            if pos < n and data[pos] == CR:
                pos += 1
        return events

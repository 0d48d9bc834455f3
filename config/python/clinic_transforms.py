"""Site-specific python transforms of the example clinic (the `python: module:function` escape hatch).

A transform takes the Message and returns a Message, bytes, str or None (unchanged); raising
hub.errors.MappingError rejects the message with that reason.
"""

from __future__ import annotations

from hub.message import Message
from hub.transforms.document import document_of


def strip_mrn_zeros(message: Message) -> Message:
    """The lab system keys patients by the MRN without leading zeros."""
    doc = document_of(message)
    mrn = doc.get("PID-3.1")
    if mrn and mrn.startswith("0"):
        doc.set("PID-3.1", mrn.lstrip("0") or "0")
        return message.replace(doc.to_bytes(), parsed=doc)
    return message

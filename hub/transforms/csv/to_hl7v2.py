"""``csv_to_v2``: CSV rows → HL7 v2 messages, as the layout's ``hl7:`` section maps them (a PM roster →
ADT^A28/A31). One row gives one message; a file of several rows gives an HL7 batch file (FHS/BHS … BTS/FTS).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import Field

from hub.errors import ConfigError, MappingError
from hub.message import Message
from hub.spec import TransformConfig
from hub.transforms import TransformContext

from .base import LayoutTransform, resolve
from .layout import Hl7Target
from .rows import Record

__all__ = ["CsvToV2"]


def _hl7_text(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S") + (value.strftime("%z") if value.tzinfo else "")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return str(value)


class CsvToV2:
    class Config(TransformConfig):
        """CSV rows → HL7 v2 messages, as the layout's ``hl7:`` section maps them (a PM roster → ADT^A28/A31).

        One row gives one message; a whole file of rows gives an HL7 batch file (FHS/BHS … BTS/FTS).
        ``{type: csv_to_v2, layout: csv/pm_roster.yaml, trigger: A31}``
        """

        type: Literal["csv_to_v2"] = "csv_to_v2"
        layout: str = Field(description="Layout file under the mappings folder.", examples=["csv/pm_roster.yaml"])
        trigger: str | None = Field(
            None, description="Trigger event for every row (overrides the layout's).", examples=["A28", "A31"]
        )
        bad_rows: Literal["reject", "skip"] = Field(
            "reject",
            description="With several rows in one message: reject the whole input with a report of every bad row, "
            "or send the good rows and record the bad ones with the message (meta csv_row_errors).",
        )

    name = "csv_to_v2"

    def __init__(self, config: Config, ctx: TransformContext) -> None:
        self.config = config
        self.base = LayoutTransform(config.layout, ctx, config.bad_rows)
        self.base.name = self.name
        if self.base.layout.hl7 is None:
            raise ConfigError(f"csv_to_v2: layout {config.layout} has no hl7: section")
        self.target = self.base.layout.hl7
        if config.trigger is None and self.target.trigger is None and len(self.target.message_type.split("^")) < 2:
            raise ConfigError(
                f"csv_to_v2: layout {config.layout}: message_type needs a trigger (ADT^A28) or set trigger"
            )

    def _trigger(self, rec: Record) -> str | None:
        if self.config.trigger:
            return self.config.trigger
        t = self.target.trigger
        if t is None:
            return None
        if isinstance(t, str):
            return t
        value = resolve(t, rec, self.base.layout, "hl7.trigger")
        return None if value is None else str(value)

    def build(self, rec: Record, now: datetime) -> Any:
        from hub.transforms.hl7v2 import new_message

        tg = self.target
        parts = tg.message_type.split("^")
        trigger = self._trigger(rec)
        if trigger:
            while len(parts) < 2:
                parts.append("")
            parts[1] = trigger
        msg = new_message(
            "^".join(parts),
            version=tg.version,
            processing_id=tg.processing_id,
            sending_app=tg.sending_app,
            sending_facility=tg.sending_facility,
            receiving_app=tg.receiving_app,
            receiving_facility=tg.receiving_facility,
            now=now,
        )
        if parts[0] == "ADT":
            if parts[1]:
                msg.set("EVN-1", parts[1])
            msg.set("EVN-2", now.strftime("%Y%m%d%H%M%S"))
        for path, t in tg.fields.items():
            value = resolve(t, rec, self.base.layout, path)
            if value is None or value == "":
                continue
            try:
                msg.set(path, _hl7_text(value))
            except MappingError as exc:
                raise MappingError(f"row {rec.row}: {path}: {exc}", location=path) from None
        return msg

    def __call__(self, message: Message) -> Message:
        rows = self.base.rows(message)
        now = datetime.now(UTC).replace(microsecond=0)
        built = [self.build(rec, now) for rec in rows.records]
        if len(built) == 1 and rows.total == 1:
            out = message.replace(built[0].to_bytes(), "hl7v2", parsed=built[0])
        else:
            out = message.replace(_batch([m.to_bytes() for m in built], self.target, now), "hl7v2")
        self.base.note_skipped(out, rows)
        return out


def _batch(messages: list[bytes], tg: Hl7Target, now: datetime) -> bytes:
    """An HL7 batch file: FHS, BHS, the messages, BTS (count), FTS (1)."""
    from hub.transforms.hl7v2 import escape

    ts = now.strftime("%Y%m%d%H%M%S")
    head = "|".join(
        [
            "^~\\&",
            escape(tg.sending_app),
            escape(tg.sending_facility),
            escape(tg.receiving_app),
            escape(tg.receiving_facility),
            ts,
        ]
    )
    out = [f"FHS|{head}\r".encode(), f"BHS|{head}\r".encode()]
    out.extend(m if m.endswith(b"\r") else m + b"\r" for m in messages)
    out.append(f"BTS|{len(messages)}\r".encode())
    out.append(b"FTS|1\r")
    return b"".join(out)

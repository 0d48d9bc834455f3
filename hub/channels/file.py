"""The ``file`` connector: poll a folder (source), write files atomically (destination).

Source, per poll: list ``path``/``glob`` → skip files still being written (modified less than ``settle`` ago,
or that change while being read) → read → ``receive`` (one transaction, keyed by name+size+mtime+hash) →
move the file to ``done/`` (accepted, filtered) or ``error/`` with a ``.error.txt`` beside it (rejected); on
``error`` (store down) the file stays where it is for the next poll. A crash after the commit and before the
move is harmless: on the next poll the key is found in the store and the file is moved without a second copy.

Destination: renders ``path`` as a template — ``{control_id}``, ``{message_id}``, ``{delivery_id}``,
``{channel}``, ``{destination}``, ``{message_type}``, ``{patient_id}``, ``{source_name}``, ``{ext}``,
``{received_at:%Y/%m/%d}``, ``{now:%H%M%S}`` — writes to a temporary name in the target folder, fsyncs,
and renames into place, so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import string
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from hub.channels.base import Context, Receiver
from hub.channels.schedule import Poller, check_schedule
from hub.errors import PermanentDelivery
from hub.message import Message, Outcome
from hub.spec import DestinationConfig, SourceConfig, parse_duration

__all__ = ["FileSource", "FileDestination", "render_path"]

log = logging.getLogger("hub.file")

EXTENSIONS = {"hl7v2": "hl7", "fhir": "json", "x12": "x12", "csv": "csv", "raw": "dat"}


# ---------------------------------------------------------------------------------------------- source
class FileSource:
    class Config(SourceConfig):
        """Poll a folder for files: ``{type: file, path: var/inbox/adt, glob: '*.hl7'}``."""

        type: Literal["file"] = "file"
        path: str = Field(description="Folder to poll (relative to home).", examples=["var/inbox/adt"])
        glob: str = Field("*", description="Which files to take.", examples=["*.hl7", "*.835"])
        done: str | None = Field(None, description="Where taken files go (default: <path>/done). 'delete' removes them.")
        error: str | None = Field(None, description="Where rejected files go (default: <path>/error).")
        schedule: str | int | float = Field("2s", description="How often to poll: a duration or a cron string.")
        settle: str | int | float = Field("1s", description="A file must be unmodified this long before it is read.")
        max_files: int = Field(1000, ge=1, description="Most files taken in one poll.")

        _v_schedule = field_validator("schedule")(lambda cls, v: check_schedule(v))
        _v_settle = field_validator("settle")(lambda cls, v: (parse_duration(v), v)[1])

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.folder = ctx.resolve(config.path)
        self.done = None if config.done == "delete" else ctx.resolve(config.done) if config.done else self.folder / "done"
        self.error = ctx.resolve(config.error) if config.error else self.folder / "error"
        self.settle = parse_duration(config.settle)
        self.poller: Poller | None = None
        self._receive: Receiver | None = None
        self.last_poll: float | None = None

    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        for folder in (self.folder, self.done, self.error):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        self.poller = Poller(self.config.schedule, self.poll, f"{self.ctx.channel}:file")
        self.poller.start()

    async def stop(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None

    def _candidates(self) -> list[Path]:
        now = time.time()
        out = []
        for p in self.folder.glob(self.config.glob):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if not p.is_file() or p.name.startswith(".") or now - st.st_mtime < self.settle:
                continue
            out.append((st.st_mtime, p.name, p))
        out.sort()
        return [p for _, _, p in out[: self.config.max_files]]

    async def poll(self) -> int:
        """Take every ready file once. Returns how many were taken."""
        assert self._receive is not None
        taken = 0
        for path in await asyncio.to_thread(self._candidates):
            try:
                data, key = await asyncio.to_thread(self._read, path)
            except FileNotFoundError:
                continue
            if data is None:
                continue  # still changing
            receipt = await self._receive(data, source_ref=path.name, dedup_key=key)
            outcome = receipt.outcome
            if outcome is Outcome.ERROR:
                log.warning("file %s left in place for the next poll: %s", path.name, "; ".join(receipt.reasons))
                break  # the store is down: stop this poll, keep the order of the folder
            if outcome is Outcome.REJECTED:
                unit = "row" if self.config.split == "csv_row" else "message"
                reasons = [f"{unit} {i + 1}: {r.reason}" for i, r in enumerate(receipt.results) if r.outcome is Outcome.REJECTED]
                await asyncio.to_thread(self._move, path, self.error, "\n".join(reasons) + "\n")
                log.warning("file %s rejected and moved to %s", path.name, self.error)
            else:
                await asyncio.to_thread(self._move, path, self.done, None)
            taken += 1
        self.last_poll = time.time()
        return taken

    def _read(self, path: Path) -> tuple[bytes | None, str]:
        st = path.stat()
        data = path.read_bytes()
        st2 = path.stat()
        if (st.st_size, st.st_mtime_ns) != (st2.st_size, st2.st_mtime_ns) or len(data) != st2.st_size:
            return None, ""
        digest = hashlib.sha256(data).hexdigest()[:24]
        return data, f"file:{path.name}:{st.st_size}:{st.st_mtime_ns}:{digest}"

    @staticmethod
    def _move(path: Path, folder: Path | None, reason: str | None) -> None:
        if folder is None:
            path.unlink(missing_ok=True)
            return
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        if target.exists():
            target = folder / f"{path.stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}{path.suffix}"
        if reason is not None:
            (folder / (target.name + ".error.txt")).write_text(reason, encoding="utf-8")
        os.replace(path, target)


# ---------------------------------------------------------------------------------------------- destination
_UNSAFE = re.compile(r"[^A-Za-z0-9._^\-]+")


class _Fields(dict):
    """Template values: missing or empty ones render as ``_`` so a path is always complete."""

    def __missing__(self, key: str) -> str:
        return "_"


def _safe(value: Any) -> str:
    text = _UNSAFE.sub("_", str(value)).strip(".") if value not in (None, "") else "_"
    return text[:120] or "_"


def render_path(template: str, message: Message) -> str:
    """Fill a path template from the message. Values are made filename-safe (no separators, no '..')."""
    meta = message.meta
    fields = _Fields(
        {
            "control_id": _safe(meta.get("control_id")),
            "message_id": _safe(message.id),
            "delivery_id": _safe(meta.get("delivery_id")),
            "channel": _safe(message.channel),
            "destination": _safe(meta.get("destination")),
            "message_type": _safe(meta.get("message_type")),
            "patient_id": _safe(meta.get("patient_id")),
            "source_name": _safe(Path(str(meta.get("source_ref") or "")).name or None),
            "ext": EXTENSIONS.get(message.content_type, "dat"),
            "uuid": uuid.uuid4().hex,
        }
    )
    fields["received_at"] = message.received_at
    fields["now"] = datetime.now(timezone.utc)
    return string.Formatter().vformat(template, (), fields)


def check_path_template(template: str) -> str:
    """A destination's ``path``: a format string that :func:`render_path` can fill (for pydantic validators)."""
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad path template: {exc}") from None
    return template


class FileDestination:
    class Config(DestinationConfig):
        """Write each message to a file: ``{type: file, path: 'var/out/{received_at:%Y/%m/%d}/{control_id}.hl7'}``."""

        type: Literal["file"] = "file"
        path: str = Field(description="Path template (relative to home); folders are made as needed.")
        exists: Literal["overwrite", "unique", "error"] = Field(
            "overwrite", description="When the file is already there: replace it, add a suffix, or fail (dead)."
        )
        fsync: bool = Field(True, description="Flush to disk before the rename (the delivery is durable when marked sent).")

        @field_validator("path")
        @classmethod
        def _template(cls, v: str) -> str:
            return check_path_template(v)

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx

    async def send(self, message: Message) -> str | None:
        [result] = await self.send_many([message])
        if isinstance(result, BaseException):
            raise result
        return result

    async def send_many(self, messages: list[Message]) -> list[str | None | BaseException]:
        """Write the files in order (stopping at the first failure), then fsync each folder once for all of them."""
        targets = [self.ctx.resolve(render_path(self.config.path, m)) for m in messages]
        return await asyncio.to_thread(self._write_all, targets, [m.raw for m in messages])

    def _write_all(self, targets: list[Path], payloads: list[bytes]) -> list[str | None | BaseException]:
        out: list[str | None | BaseException] = []
        folders: dict[Path, list[int]] = {}
        for target, data in zip(targets, payloads):
            try:
                written = self._write(target, data)
            except Exception as exc:  # noqa: BLE001 - the worker classifies it (retry or dead)
                out.append(exc)
                break
            folders.setdefault(written.parent, []).append(len(out))
            out.append(f"wrote {written} ({len(data)} bytes)")
        if self.config.fsync:
            # The renames are durable once their folder is flushed: one fsync per folder for the whole batch.
            for folder, indexes in folders.items():
                try:
                    fd = os.open(folder, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    first = min(indexes)
                    return [*out[:first], exc]  # not known to be on disk from here on: sent again
        return out

    def _write(self, target: Path, data: bytes) -> Path:
        """Write one file under a temporary name (fsynced) and rename it into place; returns its path."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if self.config.exists == "error":
                raise PermanentDelivery(f"{target} already exists")
            if self.config.exists == "unique":
                target = target.with_name(f"{target.stem}.{uuid.uuid4().hex[:8]}{target.suffix}")
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.config.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target

    async def close(self) -> None:
        return None

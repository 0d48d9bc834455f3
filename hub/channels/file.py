"""The ``file`` connector: poll a folder (source), write files atomically (destination).

Source, per poll: list ``path``/``glob`` → skip files still being written (modified less than ``settle`` ago,
or that change while being read) → read → ``receive`` (one transaction, keyed by name+size+mtime+hash) →
move the file to ``done/`` (accepted, filtered) or ``error/`` with a ``.error.txt`` beside it (rejected); on
``error`` (store down) the file stays where it is for the next poll. A crash after the commit and before the
move is harmless: on the next poll the key is found in the store and the file is moved without a second copy.

Destination: renders ``path`` as a template — ``{control_id}``, ``{message_id}``, ``{delivery_id}``,
``{channel}``, ``{destination}``, ``{message_type}``, ``{patient_id}``, ``{source_name}``, ``{ext}``, ``{uuid}``,
``{received_at:%Y/%m/%d}``, ``{now:%H%M%S}`` (any other field is refused by ``hub check``) — writes to a
temporary ``.<name>.hub-<random>.tmp`` in the target folder, fsyncs, and puts it in place, so a reader never
sees half a file. A name that is already taken is never replaced unless ``exists: overwrite``: with
``unique`` (default) the file is hard-linked to the first free name of ``<stem>-2<suffix>``, ``-3`` … (a
random suffix after ``-99``; a link never replaces, so two writers cannot take the same name), with ``error``
the delivery fails (dead). A taken name whose file holds exactly the same bytes counts as this delivery's own, so
a delivery repeated after a crash (written, not yet marked sent) makes no second copy. Temporary files older than
the destination (left by a killed process) are removed from a folder the first time the destination writes into
it (and from the template's fixed folder when it first writes anything); only names of that pattern are touched.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import string
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from hub.channels.base import Context, Receiver
from hub.channels.schedule import Poller, check_schedule
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message, Outcome
from hub.spec import DestinationConfig, SourceConfig, parse_duration

__all__ = ["FileSource", "FileDestination", "render_path", "check_path_template", "TEMPLATE_FIELDS", "unique_names"]

log = logging.getLogger("hub.file")

EXTENSIONS = {"hl7v2": "hl7", "fhir": "json", "x12": "x12", "csv": "csv", "json": "json", "xml": "xml", "raw": "dat"}


# ---------------------------------------------------------------------------------------------- source
class FileSource:
    class Config(SourceConfig):
        """Poll a folder for files: ``{type: file, path: var/inbox/adt, glob: '*.hl7'}``."""

        type: Literal["file"] = "file"
        path: str = Field(description="Folder to poll (relative to home).", examples=["var/inbox/adt"])
        glob: str = Field("*", description="Which files to take.", examples=["*.hl7", "*.835"])
        done: str | None = Field(
            None, description="Where taken files go (default: <path>/done). 'delete' removes them."
        )
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
        self.done = (
            None if config.done == "delete" else ctx.resolve(config.done) if config.done else self.folder / "done"
        )
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
            if any(r.outcome is Outcome.ERROR and r.message_id is None for r in receipt.results):
                # the store is down (nothing of the file was kept); no reason text in the log: it may quote content
                log.warning("file %s left in place for the next poll: the store did not take it", path.name)
                break  # stop this poll, keep the order of the folder
            if outcome in (Outcome.REJECTED, Outcome.ERROR):
                # rejected, or kept in the store as an error (a transform failed on it): aside to error/ with the
                # reasons beside it, and on with the rest of the folder
                unit = "row" if self.config.split == "csv_row" else "message"
                bad = [(i, r) for i, r in enumerate(receipt.results) if r.outcome in (Outcome.REJECTED, Outcome.ERROR)]
                reasons = [
                    f"{unit} {i + 1}: "
                    + ("" if r.outcome is Outcome.REJECTED else f"kept as message {r.message_id} with status error: ")
                    + f"{r.reason}"
                    for i, r in bad
                ]
                await asyncio.to_thread(self._move, path, self.error, "\n".join(reasons) + "\n")
                kept = [str(r.message_id) for _, r in bad if r.outcome is Outcome.ERROR]
                log.warning(
                    "file %s %s and moved to %s",
                    path.name,
                    f"failed in a transform (kept as message {', '.join(kept)}: hub show)" if kept else "rejected",
                    self.error,
                )
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
            target = folder / f"{path.stem}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}{path.suffix}"
        if reason is not None:
            (folder / (target.name + ".error.txt")).write_text(reason, encoding="utf-8")
        os.replace(path, target)


# ---------------------------------------------------------------------------------------------- destination
_UNSAFE = re.compile(r"[^A-Za-z0-9._^\-]+")


class _Fields(dict[str, Any]):
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
    fields["now"] = datetime.now(UTC)
    return string.Formatter().vformat(template, (), fields)


TEMPLATE_FIELDS = (
    "channel",
    "control_id",
    "delivery_id",
    "destination",
    "ext",
    "message_id",
    "message_type",
    "now",
    "patient_id",
    "received_at",
    "source_name",
    "uuid",
)  # what render_path fills; ``received_at`` and ``now`` are datetimes (``{now:%Y%m%d}``), the rest text


def check_path_template(template: str) -> str:
    """A destination's ``path``: a format string whose fields :func:`render_path` knows (for pydantic validators).

    A misspelt field (``{control_idd}``) would render as ``_`` for every message, so all of them would go to one
    name: it is refused here, with the field named, so ``hub check`` reports it.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad path template: {exc}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if name == "" or name.isdigit():
            raise ValueError(f"path template field {{{field}}} has no name; known fields: {', '.join(TEMPLATE_FIELDS)}")
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"unknown field {{{field}}} in the path template; known fields: {', '.join(TEMPLATE_FIELDS)}"
            )
    try:  # a format spec that does not fit the value ({control_id:d}) fails here, not at every delivery
        render_path(template, Message(b"", "raw", meta={"control_id": "C", "delivery_id": 1}, id=1, channel="c"))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ValueError(f"bad path template: {type(exc).__name__}: {exc}") from None
    return template


def unique_names(path: str, limit: int = 99) -> Iterator[str]:
    """``path`` then ``<stem>-2<ext>`` … ``<stem>-<limit><ext>``, then random suffixes (the names ``exists: unique``
    tries)."""
    folder, sep, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    yield path
    for n in [*range(2, limit + 1), *(uuid.uuid4().hex[:12] for _ in range(10))]:
        yield f"{folder}{sep}{stem}-{n}{dot}{ext}"


_TMP = re.compile(r"^\..+\.hub-[0-9a-f]{12}\.tmp$")  # the file destination's temporary names, and nothing else


def _static_folder(template: str) -> str | None:
    """The folder part of ``template`` before its first field (``var/archive`` of
    ``var/archive/{received_at:%Y}/…``)."""
    literal = ""
    for text, field, _, _ in string.Formatter().parse(template):
        literal += text
        if field is not None:
            break
    folder = literal.rpartition("/")[0]
    return folder or None


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data``."""
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


class FileDestination:
    class Config(DestinationConfig):
        """Write each message to a file: ``{type: file, path: 'var/out/{received_at:%Y/%m/%d}/{control_id}.hl7'}``."""

        type: Literal["file"] = "file"
        path: str = Field(description="Path template (relative to home); folders are made as needed.")
        exists: Literal["unique", "overwrite", "error"] = Field(
            "unique",
            description="When the rendered name is already taken: unique (default) writes <stem>-2<ext>, -3 … and "
            "never replaces a file; overwrite replaces it atomically; error fails the delivery (dead) and keeps the "
            "file. A file already holding exactly the same bytes counts as this delivery's own (a retry makes no "
            "copy).",
        )
        fsync: bool = Field(
            True, description="Flush to disk before the rename (the delivery is durable when marked sent)."
        )

        @field_validator("path")
        @classmethod
        def _template(cls, v: str) -> str:
            return check_path_template(v)

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.started = time.time()  # temporary files older than this were left by an earlier (killed) process
        self._cleaned: set[Path] = set()
        self._links = True  # False once the file system refused a hard link (then: O_EXCL placeholder + rename)
        static = _static_folder(config.path)
        self._static = ctx.resolve(static) if static else ctx.home

    async def send(self, message: Message) -> str | None:
        [result] = await self.send_many([message])
        if isinstance(result, BaseException):
            raise result
        return result

    async def send_many(self, messages: list[Message]) -> list[str | BaseException | None]:
        """Write the files in order (stopping at the first failure), then fsync each folder once for all of them."""
        targets = [self.ctx.resolve(render_path(self.config.path, m)) for m in messages]
        return await asyncio.to_thread(self._write_all, targets, [m.raw for m in messages])

    def _write_all(self, targets: list[Path], payloads: list[bytes]) -> list[str | BaseException | None]:
        out: list[str | BaseException | None] = []
        folders: dict[Path, list[int]] = {}
        self.clean(self._static)
        for target, data in zip(targets, payloads, strict=False):
            try:
                written, fresh = self._write(target, data)
            except Exception as exc:
                out.append(exc)
                break
            folders.setdefault(written.parent, []).append(len(out))
            out.append(
                f"wrote {written} ({len(data)} bytes)"
                if fresh
                else f"{written} already holds these {len(data)} bytes (written before)"
            )
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

    def clean(self, folder: Path) -> int:
        """Remove this destination's stale temporary files from ``folder`` (once per folder); how many were removed.

        Only names of the destination's own pattern (``.<name>.hub-<12 hex>.tmp``) last modified before it was built
        are removed: those of a write in progress (here or in another hub process) are newer.
        """
        if folder in self._cleaned:
            return 0
        self._cleaned.add(folder)
        removed = 0
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return 0
        for entry in entries:
            if not _TMP.match(entry.name):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < self.started:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info(
                "file destination %s: removed %d temporary file(s) left in %s by an earlier run",
                self.ctx.channel,
                removed,
                folder,
            )
        return removed

    def _write(self, target: Path, data: bytes) -> tuple[Path, bool]:
        """Write one file under a temporary name (fsynced) and put it in place without replacing another.

        Returns its path and True, or the path of a file that already holds exactly ``data`` and False: a delivery
        repeated after a crash (written, not yet marked sent) finds its own file instead of making a copy.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        self.clean(target.parent)
        tmp = target.with_name(f".{target.name}.hub-{uuid.uuid4().hex[:12]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "wb") as fh:
                fh.write(data)
                if self.config.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            if self.config.exists == "overwrite":
                os.replace(tmp, target)
                return target, True
            for name in unique_names(str(target)):
                candidate = Path(name)
                try:
                    self._place(tmp, candidate)
                    return candidate, True
                except FileExistsError:
                    if _holds(candidate, data):
                        return candidate, False
                    if self.config.exists == "error":
                        raise PermanentDelivery(f"{target} already exists (exists: error)") from None
            raise RetryableDelivery(f"no free name for {target}")
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _place(self, tmp: Path, target: Path) -> None:
        """Give ``tmp``'s content the name ``target``, atomically, never replacing: FileExistsError when it is taken."""
        if self._links:
            try:
                os.link(tmp, target)  # fails with EEXIST, whoever made the name first
                return
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV):
                    raise
                self._links = False  # a file system without hard links (FAT, some network mounts)
                log.info(
                    "file destination %s: %s has no hard links; reserving names with O_EXCL",
                    self.ctx.channel,
                    target.parent,
                )
        # reserve the name (O_EXCL fails when it exists), then replace the empty placeholder with the content
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.replace(tmp, target)

    async def close(self) -> None:
        return None

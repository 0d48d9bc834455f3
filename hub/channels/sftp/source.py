"""The ``sftp`` source: poll a remote folder, take each settled file once, then move, rename or delete it.

Per poll (on ``schedule``, like the file source):

1. take the folder's lease in the store (``sftp:host:port:path``), so one node of several sharing a PostgreSQL
   store polls the folder; the lease is renewed while the poll runs, and another node takes it over when it
   expires or, sooner, when its holder stops heartbeating for ``cluster.dead_after`` (hub.store.nodes);
2. list ``path``/``glob`` twice, ``settle`` apart (or once, when the previous poll saw the same sizes and
   times): only files whose size and mtime did not change are taken; dot-files (uploads in progress by
   convention) are skipped;
3. download each, streaming to a temporary file while hashing it (memory stays bounded), and check the file
   did not change meanwhile;
4. ``receive`` with ``dedup_key = sftp:host:port:path:size:mtime:sha256`` — the store remembers the key in the
   same transaction as the accept, so a file taken again after a crash is answered as a duplicate;
5. then the after-action: ``delete``, ``move`` (to ``archive``, default ``<path>/archive``) or ``rename``
   (add ``rename_suffix``); rejected files go to ``error`` (default ``<path>/error``) with ``<name>.error.txt``
   beside them naming the rejected rows/messages. On ``error`` (store down) the file is left for the next poll.

A crash at any step neither loses a file (it is only touched after the commit) nor ingests it twice (the key).
Files are taken oldest first, the next ones downloading while one is accepted (``parallel: 1``); ``parallel: N``
takes N at once on N SFTP sessions of the one connection (faster over a slow link; no order between files).

Size: a file is handed to the channel whole when it is at most ``chunk_size``, or when it cannot be split while
streaming (X12, raw, ``split: none``) and is at most ``max_size`` — above that it goes to the error folder
unread. Larger HL7 v2 files (``split: auto``/``hl7_batch``) and CSV files with ``split: csv_row`` are streamed
from the temporary file in chunks of about ``chunk_size`` (whole messages / whole rows, the CSV header
repeated in each), each accepted in its own transaction under ``<key>@<n>`` — so memory stays near
``chunk_size`` whatever the file size, and a crash midway resumes after the chunks already accepted.

The last poll that reached the server and why the last one failed are the source's :meth:`SftpSource.peer_state`
(and the gauge ``SFTP_LAST_POLL``, the counter ``SFTP_POLL_ERRORS``). The connection keys are those of
:mod:`hub.channels.sftp.connection`; the streaming splits (:func:`hl7_messages`, :func:`hl7_chunks`,
:func:`csv_chunks`) read the downloaded temporary file.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import hashlib
import logging
import posixpath
import stat as statmod
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Literal

import paramiko
from pydantic import Field, field_validator, model_validator

from hub.channels.base import Context, Receipt, Receiver, Result
from hub.channels.schedule import Poller, check_schedule
from hub.channels.sftp.connection import (
    Connection,
    SftpConnectionConfig,
    SftpError,
    makedirs,
    remote_exists,
    resolve_settings,
)
from hub.errors import Hl7ParseError, InputError
from hub.message import Outcome, sniff_content_type
from hub.metrics import SFTP_LAST_POLL, SFTP_POLL_ERRORS
from hub.schedules import parse_size
from hub.spec import SourceConfig, parse_duration

__all__ = ["SftpSource", "parse_size", "file_lines", "hl7_messages", "hl7_chunks", "csv_chunks"]

log = logging.getLogger("hub.sftp")

_WINDOW = 4 * 1024 * 1024  # bytes asked for at once (pipelined 32 KiB reads) while downloading
_SMALL = 256 * 1024  # files up to this size are read with plain reads


# ---------------------------------------------------------------------------------------------- streaming splits
def file_lines(fh: IO[bytes], block: int = 1024 * 1024) -> Iterator[bytes]:
    """The lines of a binary file, each with its terminator (CR, LF or CRLF), read ``block`` bytes at a time."""
    fh.seek(0)
    tail = b""
    while True:
        data = fh.read(block)
        if not data:
            break
        lines = (tail + data).splitlines(keepends=True)  # bytes split at CR, LF and CRLF only
        tail = lines.pop()
        if tail.endswith(b"\n"):
            lines.append(tail)
            tail = b""
        # else: no terminator yet, or a CR whose LF may start the next block
        yield from lines
    if tail:
        yield tail


def _seg(line: bytes) -> bytes:
    s = line.lstrip(b"\xef\xbb\xbf \t")
    name = s[:3]
    return name if len(s) == 3 or (len(s) > 3 and not s[3:4].isalnum() and not s[3:4].isspace()) else b""


def _count_of(line: bytes) -> int | None:
    s = line.lstrip(b"\xef\xbb\xbf \t").rstrip(b"\r\n")
    parts = s.split(s[3:4]) if len(s) > 4 else []
    try:
        return int(parts[1]) if len(parts) > 1 and parts[1].strip() else None
    except ValueError:
        return None


def hl7_messages(fh: IO[bytes]) -> Iterator[bytes]:
    """The messages of an HL7 v2 file (batch envelope left out), read line by line.

    Checks what :func:`hub.transforms.hl7v2.split_batch` checks about the envelope — a segment before the first
    MSH, BTS-1/FTS-1 counts — and raises :class:`Hl7ParseError`, so a first pass can refuse a broken file before
    any of it is accepted.
    """
    msg: list[bytes] = []
    in_batch = 0
    batches = 0
    line_no = 0
    for line in file_lines(fh):
        line_no += 1
        name = _seg(line)
        if name in (b"FHS", b"BHS", b"BTS", b"FTS"):
            if msg:
                yield b"".join(msg)
                msg = []
            if name == b"BHS":
                batches += 1
                in_batch = 0
            elif name == b"BTS":
                n = _count_of(line)
                if n is not None and n != in_batch:
                    raise Hl7ParseError(
                        f"line {line_no}: BTS-1 says {n} message(s) but the batch holds {in_batch}", location="BTS-1"
                    )
                in_batch = 0
            elif name == b"FTS":
                n = _count_of(line)
                if n is not None and n != max(batches, 1):
                    raise Hl7ParseError(
                        f"line {line_no}: FTS-1 says {n} batch(es) but the file holds {max(batches, 1)}",
                        location="FTS-1",
                    )
            continue
        if not line.strip():
            continue
        if name == b"MSH":
            if msg:
                yield b"".join(msg)
            msg = [line]
            in_batch += 1
        elif not msg:
            raise Hl7ParseError(f"line {line_no}: a segment before the first MSH", location=f"line {line_no}")
        else:
            msg.append(line)
    if msg:
        yield b"".join(msg)


def hl7_chunks(fh: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    """Whole messages, back to back, about ``chunk_size`` bytes at a time (at least one message each)."""
    buf: list[bytes] = []
    size = 0
    for m in hl7_messages(fh):
        if not m.endswith((b"\r", b"\n")):
            m += b"\r"
        buf.append(m)
        size += len(m)
        if size >= chunk_size:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def csv_chunks(fh: IO[bytes], chunk_size: int, quotechar: bytes = b'"') -> Iterator[bytes]:
    """The header row plus whole rows, about ``chunk_size`` bytes at a time (blank lines left out)."""
    from hub.transforms.csv import csv_records

    records = csv_records(file_lines(fh), quotechar)
    header = None
    for rec in records:
        if rec.strip(b" \t\r\n\xef\xbb\xbf"):
            header = rec if rec.endswith((b"\r", b"\n")) else rec + b"\r\n"
            break
    if header is None:
        return
    buf: list[bytes] = []
    size = 0
    for rec in records:
        if not rec.strip(b" \t\r\n"):
            continue
        buf.append(rec)
        size += len(rec)
        if size >= chunk_size:
            yield header + b"".join(buf)
            buf, size = [], 0
    if buf:
        yield header + b"".join(buf)


# ---------------------------------------------------------------------------------------------- source
@dataclass
class _Taken:
    """What one file gave: the results of its messages and a report for the error folder when rejected."""

    outcome: Outcome
    results: list[Result] = field(default_factory=list)
    report: str = ""


def _light(results: list[Result]) -> list[Result]:
    """What the report needs of each result — not the messages themselves (their bytes and parsed documents)."""
    return [Result(r.outcome, r.message_id, r.reason, r.code, r.location, None, r.duplicate) for r in results]


def _sig(a: paramiko.SFTPAttributes) -> tuple[int | None, int | None]:
    return a.st_size, a.st_mtime


def _unique(sftp: paramiko.SFTPClient, folder: str, name: str) -> str:
    """``folder/name``, or ``folder/stem.<UTC time>.ext`` when that is taken."""
    target = posixpath.join(folder, name)
    if not remote_exists(sftp, target):
        return target
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return posixpath.join(folder, f"{stem}.{stamp}{'.' + ext if ext else ''}")


class SftpSource:
    """Polls one remote folder on one kept SFTP connection and hands each settled file to the channel once."""

    class Config(SftpConnectionConfig, SourceConfig):
        """Poll a folder on an SFTP server:
        ``{type: sftp, host: …, user: …, key_file: …, known_hosts: …, path: outbox, glob: '*.835'}``."""

        type: Literal["sftp"] = "sftp"
        path: str = Field(
            description="Remote folder to poll (absolute, or relative to the login folder).",
            examples=["outbox", "/data/out"],
        )
        glob: str = Field("*", description="Which file names to take.", examples=["*.835", "roster_*.csv"])
        schedule: str | int | float = Field(
            "30s", description="How often to poll: a duration or a cron string.", examples=["30s", "*/15 8-18 * * 1-5"]
        )
        settle: str | int | float = Field(
            "1s", description="A file's size and time must stay the same across two looks this far apart."
        )
        after: Literal["delete", "move", "rename"] = Field(
            "move",
            description="What happens to a taken file: delete it, move it to archive, or rename it (rename_suffix).",
        )
        archive: str | None = Field(
            None, description="Remote folder for after: move (default <path>/archive); made when missing."
        )
        rename_suffix: str = Field(
            ".done", min_length=1, description="after: rename adds this; names ending in it are never taken."
        )
        error: str | None = Field(
            None, description="Remote folder for rejected files (default <path>/error), with <name>.error.txt."
        )
        max_files: int = Field(1000, ge=1, description="Most files taken in one poll.")
        max_size: str | int = Field(
            "100MB", description="Largest file taken whole (one that cannot be split while streaming)."
        )
        chunk_size: str | int = Field(
            "4MB",
            description="HL7 v2 and CSV (split: csv_row) files larger than this "
            "are accepted in chunks of about this size.",
        )
        lease_ttl: str | int | float = Field(
            "60s",
            description="How long this node's hold on the folder lasts without renewal (a dead node's hold is taken "
            "over after cluster.dead_after in hub.yaml, sooner).",
        )
        spool: str | None = Field(
            None, description="Local folder for downloads in progress (default: the system temp folder)."
        )
        parallel: int = Field(
            1,
            ge=1,
            le=32,
            description="Files taken at once (each on its own SFTP session of one connection). 1 keeps the folder's "
            "order (oldest first) — right for feeds such as ADT; more is faster for independent files (835s, claims), "
            "which are then accepted in no particular order.",
        )

        _v_schedule = field_validator("schedule")(lambda cls, v: check_schedule(v))

        @field_validator("settle", "lease_ttl")
        @classmethod
        def _dur(cls, v: str | float) -> str | float:
            parse_duration(v)
            return v

        @field_validator("max_size", "chunk_size")
        @classmethod
        def _size(cls, v: str | int) -> str | int:
            parse_size(v)
            return v

        @field_validator("glob")
        @classmethod
        def _glob(cls, v: str) -> str:
            if "/" in v:
                raise ValueError("glob matches file names in path; put folders in path")
            return v

        @model_validator(mode="after")
        def _lease(self) -> SftpSource.Config:
            if parse_duration(self.lease_ttl) < 3:
                raise ValueError("lease_ttl must be at least 3s")
            return self

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.settings = resolve_settings(config, ctx, "source")
        self.conn = Connection(self.settings, config.parallel + 2)  # + listing and after-actions beside downloads
        base = config.path.rstrip("/") or "/"
        self.folder = base
        self.archive = config.archive or posixpath.join(base, "archive")
        self.error = config.error or posixpath.join(base, "error")
        self.settle = parse_duration(config.settle)
        self.max_size = parse_size(config.max_size)
        self.chunk_size = max(1, parse_size(config.chunk_size))
        self.lease_ttl = parse_duration(config.lease_ttl)
        self.lease_name = f"sftp:{self.settings.label}:{base}"
        self.spool = ctx.resolve(config.spool) if config.spool else None
        self.poller: Poller | None = None
        self._receive: Receiver | None = None
        self._seen: dict[str, tuple[int | None, int | None]] = {}
        self._seen_at = 0.0
        self._lost_lease = False
        self._stopping = False
        self._failing: str | None = None
        self._reached: float | None = None  # when a poll last reached the server (epoch seconds)
        self.last_poll: float | None = None
        self.polls = 0

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed (None once a poll works): shown with the channel's peers (API, dashboard)."""
        return self._failing

    def peer_state(self) -> dict[str, float | str | None]:
        """:class:`~hub.channels.base.ReportsPeer`: when a poll last reached the server (epoch seconds, None before
        the first — the value of the gauge ``SFTP_LAST_POLL``) and why the last poll failed (None once one works)."""
        return {"sftp_last_poll": self._reached, "sftp_error": self.last_error}

    # ------------------------------------------------------------------ lifecycle
    async def start(self, receive: Receiver) -> None:
        self._receive = receive
        self._stopping = False
        # The series exist from the start: 0 until a poll reaches the server, so HubSftpPollStale can fire for a
        # channel that never got through (a missing key file), and the error counter reads 0, not absent.
        SFTP_LAST_POLL.labels(self.ctx.channel)
        SFTP_POLL_ERRORS.labels(self.ctx.channel)
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        self.poller = Poller(self.config.schedule, self.poll, f"{self.ctx.channel}:sftp")
        self.poller.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        store = self.ctx.store
        if store is not None:
            try:
                await asyncio.to_thread(store.release_lease, self.lease_name)
            except Exception:
                pass
        await asyncio.to_thread(self.conn.close)

    # ------------------------------------------------------------------ one poll
    async def poll(self) -> int:
        """Take every ready file once (if this node holds the folder's lease). Returns how many were taken."""
        assert self._receive is not None
        store = self.ctx.store
        if store is not None:
            if not await asyncio.to_thread(store.acquire_lease, self.lease_name, self.lease_ttl):
                log.debug("sftp %s%s: another node holds the lease; not polling", self.settings.label, self.folder)
                return 0
        self._lost_lease = False
        keeper = asyncio.create_task(self._keep_lease()) if store is not None else None
        taken = 0
        try:
            ready = await self._ready()
            self._reached = time.time()  # the server answered
            SFTP_LAST_POLL.labels(self.ctx.channel).set(self._reached)
            if self.config.parallel == 1:
                taken = await self._take_in_order(ready)
            else:
                taken = await self._take_many(ready)
            if self._failing is not None:
                log.info("sftp %s: reachable again", self.settings.label)
                self._failing = None
        except Exception as exc:
            self._failed(exc)
        finally:
            if keeper is not None:
                keeper.cancel()
        self.polls += 1
        self.last_poll = time.time()
        if taken:
            log.info("sftp %s%s: took %d file(s)", self.settings.label, self.folder, taken)
        return taken

    async def _take_many(self, ready: list[tuple[str, paramiko.SFTPAttributes]]) -> int:
        """``parallel`` files at a time; the first connection failure ends the poll after those in flight."""
        gate = asyncio.Semaphore(self.config.parallel)
        stop = False

        async def one(name: str, attrs: paramiko.SFTPAttributes) -> int:
            nonlocal stop
            async with gate:
                if stop or self._stopping or self._lost_lease:
                    return 0
                try:
                    n = await self._take(name, attrs)
                except BaseException:
                    stop = True
                    raise
                if n is None:
                    stop = True
                return n or 0

        outcomes = await asyncio.gather(*(one(n, a) for n, a in ready), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        taken = sum(o for o in outcomes if isinstance(o, int))
        if failed:
            if taken:
                log.info("sftp %s%s: took %d file(s)", self.settings.label, self.folder, taken)
            raise failed[0]
        return taken

    async def _keep_lease(self) -> None:
        store = self.ctx.store
        assert store is not None
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            if not await asyncio.to_thread(store.acquire_lease, self.lease_name, self.lease_ttl):
                self._lost_lease = True
                log.warning(
                    "sftp %s%s: lease lost to another node; stopping this poll", self.settings.label, self.folder
                )
                return

    def _failed(self, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, SftpError) else f"{type(exc).__name__}: {exc}"
        level = logging.WARNING if reason != self._failing else logging.DEBUG
        log.log(
            level,
            "sftp %s:%s: poll failed, trying again at the next poll: %s",
            self.settings.label,
            self.folder,
            reason,
        )
        self._failing = reason
        SFTP_POLL_ERRORS.labels(self.ctx.channel).inc()
        if not self.conn.alive():
            self.conn.close()

    def _list(self) -> dict[str, paramiko.SFTPAttributes]:
        fresh = True
        try:
            with self.conn.session() as (sftp, fresh):
                entries = sftp.listdir_attr(self.folder)
        except (OSError, EOFError, paramiko.SSHException):
            if self.conn.alive() or fresh:
                raise
            self.conn.close()  # the kept connection died between polls: once more on a new one
            with self.conn.session() as (sftp, fresh):
                entries = sftp.listdir_attr(self.folder)
        out = {}
        for a in entries:
            name = a.filename
            if name.startswith(".") or not fnmatch.fnmatchcase(name, self.config.glob):
                continue
            if a.st_mode is not None and not statmod.S_ISREG(a.st_mode):
                continue
            if self.config.after == "rename" and name.endswith(self.config.rename_suffix):
                continue
            out[name] = a
        return out

    async def _ready(self) -> list[tuple[str, paramiko.SFTPAttributes]]:
        """Files whose size and mtime stayed the same across two looks, oldest first."""
        started = time.monotonic()
        look = await asyncio.to_thread(self._list)
        # the previous poll's last look counts as the first look when it is at least `settle` old
        seen = self._seen if started - self._seen_at >= self.settle else {}
        ready = {n: a for n, a in look.items() if seen.get(n) == _sig(a)}
        if len(ready) < len(look) and not self._stopping:
            await asyncio.sleep(self.settle)
            started = time.monotonic()
            second = await asyncio.to_thread(self._list)
            for n, a in second.items():
                if n in look and _sig(look[n]) == _sig(a):
                    ready[n] = a
            look = second
        self._seen = {n: _sig(a) for n, a in look.items()}
        self._seen_at = started
        ordered = sorted(ready.items(), key=lambda kv: (kv[1].st_mtime or 0, kv[0]))
        return ordered[: self.config.max_files]

    def _remote(self, name: str) -> str:
        return posixpath.join(self.folder, name)

    async def _take(self, name: str, attrs: paramiko.SFTPAttributes) -> int | None:
        """Download, accept, after-action. 1 when done, 0 when skipped for now, None to end the poll (store down)."""
        got = await self._fetch(name, attrs)
        if got is None:
            return 0
        taken = await self._accept(name, attrs, got)
        if taken is None:
            return None
        await self._finish(name, attrs, taken)
        return 1

    async def _take_in_order(self, ready: list[tuple[str, paramiko.SFTPAttributes]]) -> int:
        """One file after the other, in the folder's order — but pipelined: the next files are downloaded while
        one is being accepted, and after-actions run behind. Each file's after-action still follows its commit."""
        downloads: asyncio.Queue[tuple[str, paramiko.SFTPAttributes, tuple[IO[bytes], int, str]] | None] = (
            asyncio.Queue(maxsize=4)
        )
        finishing: asyncio.Queue[tuple[str, paramiko.SFTPAttributes, _Taken] | None] = asyncio.Queue()
        halt = False

        async def fetch() -> None:
            try:
                for name, attrs in ready:
                    if halt or self._stopping or self._lost_lease:
                        break
                    got = await self._fetch(name, attrs)
                    if got is not None:
                        await downloads.put((name, attrs, got))
            finally:
                await downloads.put(None)

        async def finish() -> int:
            done = 0
            while (item := await finishing.get()) is not None:
                await self._finish(*item)
                done += 1
            return done

        fetcher = asyncio.create_task(fetch())
        finisher = asyncio.create_task(finish())
        error: BaseException | None = None
        try:
            while (item := await downloads.get()) is not None:
                name, attrs, got = item
                if halt:
                    got[0].close()
                    continue
                taken = await self._accept(name, attrs, got)
                if taken is None:
                    halt = True  # the store is down: stop this poll, keep the order of the folder
                else:
                    await finishing.put((name, attrs, taken))
        except BaseException as exc:
            error, halt = exc, True
            fetcher.cancel()
        await finishing.put(None)  # the after-actions of what was accepted still run
        fetched, finished = await asyncio.gather(fetcher, finisher, return_exceptions=True)
        while not downloads.empty():  # temporary files of a poll that ended early
            left = downloads.get_nowait()
            if left is not None:
                left[2][0].close()
        for problem in (error, fetched, finished):
            if isinstance(problem, BaseException) and not (
                problem is fetched and isinstance(problem, asyncio.CancelledError)
            ):
                raise problem
        assert isinstance(finished, int)
        return finished

    async def _fetch(self, name: str, attrs: paramiko.SFTPAttributes) -> tuple[IO[bytes], int, str] | None:
        remote = self._remote(name)
        try:
            got = await asyncio.to_thread(self._download, remote, attrs)
        except OSError as exc:
            if not self.conn.alive():
                raise
            log.warning("sftp %s: cannot read %s, skipped: %s", self.settings.label, remote, exc)
            return None
        if got is None:
            log.debug("sftp %s: %s changed while being read; next poll", self.settings.label, remote)
            self._seen.pop(name, None)
        return got

    async def _accept(
        self, name: str, attrs: paramiko.SFTPAttributes, got: tuple[IO[bytes], int, str]
    ) -> _Taken | None:
        """Hand the downloaded file to the channel; None when the store did not take it (left for the next poll)."""
        remote = self._remote(name)
        tmp, size, digest = got
        try:
            key = f"sftp:{self.settings.label}:{remote}:{size}:{attrs.st_mtime}:{digest[:24]}"
            ref = f"sftp://{self.settings.label}{'' if remote.startswith('/') else '/'}{remote}"
            taken = await self._ingest(tmp, size, key, ref)
        finally:
            tmp.close()
        if taken.outcome is Outcome.ERROR:
            log.warning(
                "sftp %s: %s left in place for the next poll: the store did not accept it", self.settings.label, remote
            )
            return None
        return taken

    async def _finish(self, name: str, attrs: paramiko.SFTPAttributes, taken: _Taken) -> None:
        remote = self._remote(name)
        if taken.outcome is Outcome.REJECTED:
            await asyncio.to_thread(self._reject, remote, name, attrs, taken.report)
        else:
            await asyncio.to_thread(self._after, remote, name, attrs)
        self._seen.pop(name, None)

    def _window_done(self, remote: str, done: int) -> None:
        """Called after each window of a download (a seam for tests that cut the connection midway)."""

    def _download(self, remote: str, attrs: paramiko.SFTPAttributes) -> tuple[IO[bytes], int, str] | None:
        """Stream the file to a temporary file, hashing it; None when it changed meanwhile."""
        size = attrs.st_size or 0
        with ExitStack() as unless_kept:  # the temporary file is closed unless handed to the caller
            tmp = unless_kept.enter_context(tempfile.TemporaryFile(dir=self.spool, prefix="hub-sftp-"))
            h = hashlib.sha256()
            got = 0
            with self.conn.session() as (sftp, _):
                with sftp.open(remote, "rb") as rf:
                    for data in self._blocks(rf, remote, size):
                        tmp.write(data)
                        h.update(data)
                        got += len(data)
                after = sftp.stat(remote)
            if _sig(after) != _sig(attrs) or got != size:
                return None
            tmp.flush()
            unless_kept.pop_all()
            return tmp, size, h.hexdigest()

    def _blocks(self, rf: paramiko.SFTPFile, remote: str, size: int) -> Iterator[bytes]:
        """The first ``size`` bytes of the remote file: plain reads for a small file, else windows of pipelined
        32 KiB reads (calling :meth:`_window_done` after each window is consumed)."""
        got = 0
        if size <= _SMALL:
            while got < size:
                data = rf.read(min(size - got, 32768 * 8))
                if not data:
                    break
                got += len(data)
                yield data
            return
        for off in range(0, size, _WINDOW):
            end = min(off + _WINDOW, size)
            reqs = [(o, min(32768, end - o)) for o in range(off, end, 32768)]
            for data in rf.readv(reqs):
                got += len(data)
                yield data
            self._window_done(remote, got)

    def _content_type(self, tmp: IO[bytes]) -> str:
        if self.config.format:
            return self.config.format
        tmp.seek(0)
        return sniff_content_type(tmp.read(65536))  # a FHIR resource may name its resourceType late

    async def _ingest(self, tmp: IO[bytes], size: int, key: str, ref: str) -> _Taken:
        """Hand the file to the channel whole, or in chunks when it is larger than ``chunk_size`` and can be split
        while streaming; a file too large for either is rejected unread."""
        ctype = self._content_type(tmp)
        split = self.config.split
        label = "row" if ctype == "csv" and split == "csv_row" else "message"
        streamable = (ctype == "hl7v2" and split in ("auto", "hl7_batch")) or (ctype == "csv" and split == "csv_row")
        if size <= self.chunk_size or (not streamable and size <= self.max_size):
            return await self._ingest_whole(tmp, key, ref, label)
        if not streamable:
            why = (
                f"the file is {size} bytes, more than max_size ({self.config.max_size}), "
                f"and {ctype} cannot be split while streaming"
            )
            log.warning("sftp %s: %s not taken: %s", self.settings.label, ref, why)
            return _Taken(Outcome.REJECTED, [], why)
        return await self._ingest_chunks(tmp, ctype, key, ref, label)

    async def _ingest_whole(self, tmp: IO[bytes], key: str, ref: str, label: str) -> _Taken:
        assert self._receive is not None
        tmp.seek(0)
        data = await asyncio.to_thread(tmp.read)
        receipt = await self._receive(data, source_ref=ref, dedup_key=key)
        del data
        return _Taken(receipt.outcome, _light(receipt.results), self._report(receipt.results, label))

    async def _ingest_chunks(self, tmp: IO[bytes], ctype: str, key: str, ref: str, label: str) -> _Taken:
        """Whole messages (HL7 v2) or rows under the header (CSV), about ``chunk_size`` bytes at a time, each
        accepted under ``<key>@<n>``; stops at the first chunk the store did not take."""
        assert self._receive is not None
        if ctype == "hl7v2":
            try:  # first pass: refuse a broken envelope before any part of the file is accepted
                await asyncio.to_thread(lambda: sum(1 for _ in hl7_messages(tmp)))
            except InputError as exc:
                return _Taken(Outcome.REJECTED, [], f"not taken: {exc}")
            chunks = hl7_chunks(tmp, self.chunk_size)
        else:
            chunks = csv_chunks(tmp, self.chunk_size)
        results: list[Result] = []
        n = 0
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            n += 1
            receipt = await self._receive(chunk, source_ref=ref, dedup_key=f"{key}@{n}")
            del chunk
            results.extend(_light(receipt.results))
            if receipt.outcome is Outcome.ERROR:
                return _Taken(Outcome.ERROR, results)
        return _Taken(Receipt(results).outcome, results, self._report(results, label))

    @staticmethod
    def _report(results: list[Result], label: str) -> str:
        lines = [
            f"{label} {i + 1}: {r.reason or 'rejected'}" + (f" (message {r.message_id})" if r.message_id else "")
            for i, r in enumerate(results)
            if r.outcome is Outcome.REJECTED
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------ after the commit
    def _unchanged(self, sftp: paramiko.SFTPClient, remote: str, attrs: paramiko.SFTPAttributes) -> bool:
        try:
            now = sftp.stat(remote)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False  # already moved (by another node after a lost lease) or removed by the peer
            raise
        if _sig(now) != _sig(attrs):
            log.warning(
                "sftp %s: %s changed after it was taken; the new version is taken at the next poll",
                self.settings.label,
                remote,
            )
            return False
        return True

    def _after(self, remote: str, name: str, attrs: paramiko.SFTPAttributes) -> None:
        with self.conn.session() as (sftp, _):
            if not self._unchanged(sftp, remote, attrs):
                return
            how = self.config.after
            if how == "delete":
                sftp.remove(remote)
            elif how == "move":
                makedirs(self.conn, sftp, self.archive)
                sftp.rename(remote, _unique(sftp, self.archive, name))
            else:
                sftp.rename(remote, _unique(sftp, self.folder, name + self.config.rename_suffix))

    def _reject(self, remote: str, name: str, attrs: paramiko.SFTPAttributes, report: str) -> None:
        with self.conn.session() as (sftp, _):
            if not self._unchanged(sftp, remote, attrs):
                return
            makedirs(self.conn, sftp, self.error)
            target = _unique(sftp, self.error, name)
            with sftp.open(target + ".error.txt", "wb") as fh:
                fh.write((report or "rejected").encode("utf-8") + b"\n")
            sftp.rename(remote, target)
        log.warning("sftp %s: %s rejected and moved to %s", self.settings.label, remote, self.error)

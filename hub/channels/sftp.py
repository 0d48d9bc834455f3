"""The ``sftp`` connector (paramiko): poll a remote folder (source), upload files atomically (destination).

Connection (both sides): ``host``, ``port``, ``user``; ``key_file`` (ed25519, ECDSA or RSA; ``key_passphrase``)
and/or ``password``. Secrets come from the environment only — ``password: ${CH_SFTP_PASSWORD}`` — and ``hub
check`` refuses a password or passphrase written literally in a channel file. The server's host key must match
``known_hosts`` (an OpenSSH known_hosts file; ``[host]:port`` entries for other ports; hashed entries work) or
``host_key_fingerprint`` (``SHA256:…`` as ``ssh-keygen -lf`` prints it); an unknown or changed key is refused,
and a channel that configures neither is a ``hub check`` problem. Connect and read timeouts, keepalive, one
connection kept per source/destination and opened again when it drops.

Source, per poll (on ``schedule``, like the file source):

1. take the folder's lease in the store (``sftp:host:port:path``), so one node of several sharing a PostgreSQL
   store polls the folder; the lease is renewed while the poll runs;
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

Destination: renders ``path`` (the file destination's template, :func:`hub.channels.file.render_path`),
creates missing folders, writes to ``.<name>.<delivery id>.tmp`` in the target folder, checks the uploaded
size, then renames into place. A name already taken is never replaced unless ``exists: overwrite``: with ``unique``
(default) the upload gets the first free name of ``<stem>-2<ext>``, ``-3`` … and with ``error`` the delivery fails
(dead). Those use the plain SFTP rename, which the protocol (draft-ietf-secsh-filexfer-02 §6.5) defines to fail when
the new name exists — OpenSSH's sftp-server does it with ``link()``, so two writers cannot take one name; the name
is also checked just before, for servers that do not follow the draft (there a race of two writers remains).
A taken name whose file holds exactly the uploaded bytes counts as this delivery's own (a delivery repeated after
its answer was lost makes no second copy).
``overwrite`` uses ``posix-rename@openssh.com`` (replaces atomically), or remove + rename when the server lacks it.
A lost connection, a refused host key or failed login raise :class:`~hub.errors.RetryableDelivery`: the queue
retries with its backoff (``queue.backoff``) and the messages wait until the peer is back or the settings fixed.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import hashlib
import logging
import posixpath
import re
import socket
import stat as statmod
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import paramiko
import yaml
from pydantic import Field, field_validator, model_validator

from hub.channels.base import Context, Receiver, Result
from hub.channels.file import check_path_template, render_path, unique_names
from hub.channels.schedule import Poller, check_schedule
from hub.errors import ConfigError, Hl7ParseError, InputError, PermanentDelivery, RetryableDelivery, classify
from hub.message import Message, Outcome, sniff_content_type
from hub.metrics import SFTP_LAST_POLL, SFTP_POLL_ERRORS
from hub.spec import DestinationConfig, SourceConfig, Strict, parse_duration

__all__ = ["SftpSource", "SftpDestination", "SftpError", "HostKeyRefused", "parse_size", "hl7_chunks", "csv_chunks"]

log = logging.getLogger("hub.sftp")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3}
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
_WINDOW = 4 * 1024 * 1024  # bytes asked for at once (pipelined 32 KiB reads) while downloading
_SMALL = 256 * 1024  # files up to this size are read with plain reads
_WRITE = 1024 * 1024


def parse_size(value: str | int) -> int:
    """``"100MB"``, ``"4 MiB"``, ``"512KB"`` or a number of bytes → bytes (KB/MB/GB are binary: 1024-based)."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size (use e.g. 512KB, 4MB, 1GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower() or None])


class SftpError(Exception):
    """Connecting or logging in failed for a reason a person must fix (key, password, files)."""


class HostKeyRefused(SftpError):
    """The server's host key matches neither known_hosts nor host_key_fingerprint."""


# ---------------------------------------------------------------------------------------------- settings
class SftpConnectionConfig(Strict):
    """The connection keys shared by the sftp source and destination."""

    host: str = Field(description="Server name or address.", examples=["sftp.clearinghouse.example", "127.0.0.1"])
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(description="Login name.", examples=["clinic01"])
    password: str | None = Field(
        None,
        description="Password, from the environment only: password: ${CH_SFTP_PASSWORD}. "
        "hub check refuses a password written in the channel file.",
        examples=["${CH_SFTP_PASSWORD}"],
    )
    key_file: str | None = Field(
        None,
        description="Private key file (OpenSSH or PEM; ed25519, ECDSA or RSA), relative to home.",
        examples=["var/keys/ch_ed25519"],
    )
    key_passphrase: str | None = Field(
        None, description="Passphrase of key_file, from the environment only.", examples=["${CH_SFTP_KEY_PASSPHRASE}"]
    )
    known_hosts: str | None = Field(
        None,
        description="OpenSSH known_hosts file holding the server's key (relative to home). Use [host]:port "
        "entries for a port other than 22: ssh-keyscan -p 2222 host >> config/known_hosts",
        examples=["config/known_hosts"],
    )
    host_key_fingerprint: str | list[str] | None = Field(
        None,
        description="The server key's SHA256 fingerprint(s) as ssh-keygen -lf prints them; accepted like a known_hosts entry.",
        examples=["SHA256:vhi9W/8WvFKQwSQ4ZMqmlUsRAdQu8egvkEtf1Da3ITk"],
    )
    connect_timeout: str | int | float = Field("10s", description="Longest wait to connect, exchange keys and log in.")
    timeout: str | int | float = Field(
        "30s", description="Longest wait for any one answer of the server (read timeout)."
    )
    keepalive: str | int | float = Field(
        "30s", description="Send an SSH keepalive after this long without traffic (0: never)."
    )

    @field_validator("connect_timeout", "timeout", "keepalive")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        parse_duration(v)
        return v

    @field_validator("host_key_fingerprint")
    @classmethod
    def _fingerprints(cls, v: Any) -> Any:
        for fp in [v] if isinstance(v, str) else v or []:
            if not _FINGERPRINT.match(fp.strip()):
                raise ValueError(f"{fp!r} is not a SHA256 fingerprint like SHA256:vhi9W/8W… (ssh-keygen -lf key.pub)")
        return v


@dataclass
class _Settings:
    host: str
    port: int
    user: str
    password: str | None
    key_file: Path | None
    passphrase: str | None
    known_hosts: Path | None
    fingerprints: list[str]
    connect_timeout: float
    timeout: float
    keepalive: float
    label: str = ""

    def __post_init__(self) -> None:
        self.label = f"{self.host}:{self.port}"


def _settings(config: SftpConnectionConfig, ctx: Context, kind: str) -> _Settings:
    """Check the connection settings (no I/O beyond reading the channel file) and resolve paths."""
    if not config.password and not config.key_file:
        raise ConfigError(
            f"sftp {kind}: give key_file or password (from the environment: password: ${{SFTP_PASSWORD}})"
        )
    if not config.known_hosts and not config.host_key_fingerprint:
        raise ConfigError(
            f"sftp {kind}: the server's host key must be verified: set known_hosts (a file) or host_key_fingerprint "
            "(SHA256:…); unknown keys are refused"
        )
    literal = _literal_secrets(config, ctx)
    if literal:
        raise ConfigError(
            f"sftp {kind}: {' and '.join(literal)} is written in the channel file; give it from the environment "
            f"instead ({literal[0]}: ${{SFTP_{literal[0].upper()}}}) so that it never lands in git"
        )
    fps = config.host_key_fingerprint
    return _Settings(
        host=config.host,
        port=config.port,
        user=config.user,
        password=config.password or None,
        key_file=ctx.resolve(config.key_file) if config.key_file else None,
        passphrase=config.key_passphrase or None,
        known_hosts=ctx.resolve(config.known_hosts) if config.known_hosts else None,
        fingerprints=[f.strip().rstrip("=") for f in ([fps] if isinstance(fps, str) else fps or [])],
        connect_timeout=parse_duration(config.connect_timeout),
        timeout=parse_duration(config.timeout),
        keepalive=parse_duration(config.keepalive),
    )


def _literal_secrets(config: SftpConnectionConfig, ctx: Context) -> list[str]:
    """Secret keys of this component that the channel file spells out instead of taking from ``${VAR}``."""
    cfg = ctx.config
    files = getattr(cfg, "channel_files", None) or {}
    path = files.get(ctx.channel)
    if path is None:
        return []
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # before ${VAR} interpolation
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(raw, dict):
        return []
    places = [raw.get("source")] + list(
        (raw.get("destinations") or {}).values() if isinstance(raw.get("destinations"), dict) else []
    )
    found: list[str] = []
    for place in places:
        if not isinstance(place, dict) or place.get("type") != "sftp":
            continue
        for key in ("password", "key_passphrase"):
            value = place.get(key)
            if (
                isinstance(value, (str, int))
                and str(value)
                and "${" not in str(value)
                and str(value) == getattr(config, key)
            ):
                if key not in found:
                    found.append(key)
    return found


# ---------------------------------------------------------------------------------------------- connecting
def _known_keys(s: _Settings) -> list[paramiko.PKey]:
    if s.known_hosts is None:
        return []
    if not s.known_hosts.is_file():
        raise SftpError(f"known_hosts file {s.known_hosts} not found")
    hk = paramiko.HostKeys()
    try:
        hk.load(str(s.known_hosts))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise SftpError(f"known_hosts file {s.known_hosts} cannot be read: {exc}") from None
    names = [s.host] if s.port == 22 else [f"[{s.host}]:{s.port}"]
    keys: list[paramiko.PKey] = []
    for name in names:
        entry = hk.lookup(name)
        if entry:
            keys.extend(entry.values())
    return keys


_RSA_ALGOS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def _prefer(transport: paramiko.Transport, keys: list[paramiko.PKey]) -> None:
    """Ask first for the host key types we know, so a server with several keys shows one we can check."""
    known = {k.get_name() for k in keys}
    wanted: list[str] = []
    for name in known:
        wanted.extend(_RSA_ALGOS if name == "ssh-rsa" else (name,))
    opts = transport.get_security_options()
    current = list(opts.key_types)
    first = [k for k in current if k in wanted]
    if first:
        opts.key_types = first + [k for k in current if k not in first]


def _verify_host_key(s: _Settings, key: paramiko.PKey, known: list[paramiko.PKey]) -> None:
    fp = key.fingerprint.rstrip("=")
    if fp in s.fingerprints:
        return
    blob = key.asbytes()
    if any(k.asbytes() == blob for k in known):
        return
    if known:
        raise HostKeyRefused(
            f"host key of {s.label} ({key.get_name()} {fp}) does not match known_hosts — refused "
            "(it changed: a reinstalled server, or someone in between)"
        )
    where = " or ".join(w for w, on in (("known_hosts", s.known_hosts), ("host_key_fingerprint", s.fingerprints)) if on)
    raise HostKeyRefused(
        f"host key of {s.label} ({key.get_name()} {fp}) is unknown ({where} has no entry for it) — refused"
    )


def _load_key(s: _Settings) -> paramiko.PKey:
    assert s.key_file is not None
    if not s.key_file.is_file():
        raise SftpError(f"key_file {s.key_file} not found")
    try:
        return paramiko.PKey.from_path(s.key_file, s.passphrase.encode("utf-8") if s.passphrase else None)
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        if not s.passphrase and (isinstance(exc, paramiko.PasswordRequiredException) or "password" in str(exc).lower()):
            raise SftpError(f"key_file {s.key_file} is encrypted: set key_passphrase (from the environment)") from None
        raise SftpError(
            f"key_file {s.key_file} cannot be loaded (wrong passphrase or unsupported key): {exc}"
        ) from None


def connect(s: _Settings) -> paramiko.Transport:
    """Open one verified, authenticated SSH connection (blocking; run it in a thread)."""
    known = _known_keys(s)
    pkey = _load_key(s) if s.key_file is not None else None
    sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = s.connect_timeout
        transport.handshake_timeout = s.connect_timeout
        transport.auth_timeout = s.connect_timeout
        if known:
            _prefer(transport, known)
        transport.start_client(timeout=s.connect_timeout)
        _verify_host_key(s, transport.get_remote_server_key(), known)
        if pkey is not None:
            try:
                transport.auth_publickey(s.user, pkey)
            except paramiko.AuthenticationException as exc:
                if not s.password:
                    raise SftpError(f"login to {s.label} as {s.user} with key_file refused: {exc}") from None
        if not transport.is_authenticated() and s.password:
            try:
                transport.auth_password(s.user, s.password)
            except paramiko.AuthenticationException as exc:
                raise SftpError(f"login to {s.label} as {s.user} with the password refused: {exc}") from None
        if not transport.is_authenticated():
            raise SftpError(f"login to {s.label} as {s.user} not completed (the server asks for more methods)")
        if s.keepalive > 0:
            transport.set_keepalive(max(1, int(s.keepalive)))
        return transport
    except BaseException:
        transport.close()
        raise


def _open_sftp(transport: paramiko.Transport, s: _Settings) -> paramiko.SFTPClient:
    sftp = paramiko.SFTPClient.from_transport(transport)
    if sftp is None:
        raise SftpError(f"{s.label} did not open the SFTP subsystem")
    sftp.get_channel().settimeout(s.timeout)  # type: ignore[union-attr]
    return sftp


def _session_still_good(exc: BaseException) -> bool:
    """After an error, may the SFTP session be used again? Yes after the server's own answers (no such file …)."""
    return isinstance(exc, OSError) and not isinstance(exc, (TimeoutError, socket.timeout, ConnectionError))


def _quietly_close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        pass


class _Connection:
    """One kept SSH connection with up to ``size`` SFTP sessions on it, opened on first use and again after it
    dropped. A session is used by one thread at a time (:meth:`session`)."""

    def __init__(self, settings: _Settings, size: int = 1) -> None:
        self.settings = settings
        self.size = size
        self.transport: paramiko.Transport | None = None
        self._free: list[paramiko.SFTPClient] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()  # guards the transport and the free sessions
        self.dirs: set[str] = set()  # folders known to exist, for this connection

    def alive(self) -> bool:
        t = self.transport
        return t is not None and t.is_active()

    def _checkout(self) -> tuple[paramiko.SFTPClient, paramiko.Transport, bool]:
        with self._lock:
            fresh = False
            if self.transport is None or not self.transport.is_active():
                self._close_locked()
                self.transport = connect(self.settings)
                fresh = True
                log.debug("sftp connected to %s as %s", self.settings.label, self.settings.user)
            transport = self.transport
            if self._free:
                return self._free.pop(), transport, fresh
        return _open_sftp(transport, self.settings), transport, fresh

    @contextmanager
    def session(self) -> Iterator[tuple[paramiko.SFTPClient, bool]]:
        """An SFTP session, and whether its connection was opened just now (``fresh``: no point retrying)."""
        self._slots.acquire()
        try:
            sftp, transport, fresh = self._checkout()
            good = True
            try:
                yield sftp, fresh
            except BaseException as exc:
                good = _session_still_good(exc)
                raise
            finally:
                with self._lock:
                    keep = good and transport is self.transport and transport.is_active()
                    if keep:
                        self._free.append(sftp)
                if not keep:
                    _quietly_close(sftp)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        free, transport = self._free, self.transport
        self._free, self.transport, self.dirs = [], None, set()
        for thing in (*free, transport):
            if thing is not None:
                _quietly_close(thing)


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def _holds(sftp: paramiko.SFTPClient, path: str, data: bytes) -> bool:
    """Whether the remote file ``path`` holds exactly ``data`` (read only when the size matches)."""
    try:
        if sftp.stat(path).st_size != len(data):
            return False
        with sftp.open(path, "rb") as fh:
            fh.prefetch(len(data))
            return fh.read(len(data) + 1) == data
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def _unique(sftp: paramiko.SFTPClient, folder: str, name: str) -> str:
    """``folder/name``, or ``folder/stem.<UTC time>.ext`` when that is taken."""
    target = posixpath.join(folder, name)
    if not _exists(sftp, target):
        return target
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return posixpath.join(folder, f"{stem}.{stamp}{'.' + ext if ext else ''}")


def _makedirs(conn: _Connection, sftp: paramiko.SFTPClient, folder: str) -> None:
    if not folder or folder in conn.dirs:
        return
    prefix = "/" if folder.startswith("/") else ""
    for part in [p for p in folder.split("/") if p]:
        prefix = posixpath.join(prefix, part) if prefix else part
        if prefix in conn.dirs:
            continue
        try:
            st = sftp.stat(prefix)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            try:
                sftp.mkdir(prefix)
            except OSError:
                if not _exists(sftp, prefix):  # made meanwhile by someone else is fine
                    raise
        else:
            if st.st_mode is not None and not statmod.S_ISDIR(st.st_mode):
                raise PermanentDelivery(f"{prefix} on the server is a file, not a folder")
        conn.dirs.add(prefix)
    conn.dirs.add(folder)


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


class SftpSource:
    class Config(SftpConnectionConfig, SourceConfig):
        """Poll a folder on an SFTP server: ``{type: sftp, host: …, user: …, key_file: …, known_hosts: …, path: outbox, glob: '*.835'}``."""

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
            description="HL7 v2 and CSV (split: csv_row) files larger than this are accepted in chunks of about this size.",
        )
        lease_ttl: str | int | float = Field(
            "60s", description="How long this node's hold on the folder lasts without renewal."
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
        def _dur(cls, v: Any) -> Any:
            parse_duration(v)
            return v

        @field_validator("max_size", "chunk_size")
        @classmethod
        def _size(cls, v: Any) -> Any:
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
        self.settings = _settings(config, ctx, "source")
        self.conn = _Connection(self.settings, config.parallel + 2)  # + listing and after-actions beside downloads
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
        self.last_poll: float | None = None
        self.polls = 0

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed (None once a poll works): shown with the channel's peers (API, dashboard)."""
        return self._failing

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
            SFTP_LAST_POLL.labels(self.ctx.channel).set_to_current_time()  # the server answered
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
        tmp = tempfile.TemporaryFile(dir=self.spool, prefix="hub-sftp-")
        h = hashlib.sha256()
        got = 0
        try:
            with self.conn.session() as (sftp, _):
                with sftp.open(remote, "rb") as rf:
                    if size <= _SMALL:
                        while got < size:
                            data = rf.read(min(size - got, 32768 * 8))
                            if not data:
                                break
                            tmp.write(data)
                            h.update(data)
                            got += len(data)
                    else:
                        for off in range(0, size, _WINDOW):
                            end = min(off + _WINDOW, size)
                            reqs = [(o, min(32768, end - o)) for o in range(off, end, 32768)]
                            for data in rf.readv(reqs):
                                tmp.write(data)
                                h.update(data)
                                got += len(data)
                            self._window_done(remote, got)
                after = sftp.stat(remote)
            if _sig(after) != _sig(attrs) or got != size:
                tmp.close()
                return None
            tmp.flush()
            return tmp, size, h.hexdigest()
        except BaseException:
            tmp.close()
            raise

    def _content_type(self, tmp: IO[bytes]) -> str:
        if self.config.format:
            return self.config.format
        tmp.seek(0)
        return sniff_content_type(tmp.read(64))

    async def _ingest(self, tmp: IO[bytes], size: int, key: str, ref: str) -> _Taken:
        assert self._receive is not None
        ctype = self._content_type(tmp)
        split = self.config.split
        label = "row" if ctype == "csv" and split == "csv_row" else "message"
        streamable = (ctype == "hl7v2" and split in ("auto", "hl7_batch")) or (ctype == "csv" and split == "csv_row")
        if size <= self.chunk_size or (not streamable and size <= self.max_size):
            tmp.seek(0)
            data = await asyncio.to_thread(tmp.read)
            receipt = await self._receive(data, source_ref=ref, dedup_key=key)
            del data
            return _Taken(receipt.outcome, _light(receipt.results), self._report(receipt.results, label))
        if not streamable:
            why = f"the file is {size} bytes, more than max_size ({self.config.max_size}), and {ctype} cannot be split while streaming"
            log.warning("sftp %s: %s not taken: %s", self.settings.label, ref, why)
            return _Taken(Outcome.REJECTED, [], why)
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
        from hub.channels.base import Receipt

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
                _makedirs(self.conn, sftp, self.archive)
                sftp.rename(remote, _unique(sftp, self.archive, name))
            else:
                sftp.rename(remote, _unique(sftp, self.folder, name + self.config.rename_suffix))

    def _reject(self, remote: str, name: str, attrs: paramiko.SFTPAttributes, report: str) -> None:
        with self.conn.session() as (sftp, _):
            if not self._unchanged(sftp, remote, attrs):
                return
            _makedirs(self.conn, sftp, self.error)
            target = _unique(sftp, self.error, name)
            with sftp.open(target + ".error.txt", "wb") as fh:
                fh.write((report or "rejected").encode("utf-8") + b"\n")
            sftp.rename(remote, target)
        log.warning("sftp %s: %s rejected and moved to %s", self.settings.label, remote, self.error)


# ---------------------------------------------------------------------------------------------- destination
class SftpDestination:
    class Config(SftpConnectionConfig, DestinationConfig):
        """Upload each message as a file: ``{type: sftp, host: …, user: …, key_file: …, known_hosts: …, path: 'inbox/{control_id}.{ext}'}``."""

        type: Literal["sftp"] = "sftp"
        path: str = Field(
            description="Remote path template (relative to the login folder, or absolute); folders are made as needed. "
            "Fields as for the file destination: {control_id} {message_id} {delivery_id} {channel} {message_type} "
            "{patient_id} {source_name} {ext} {uuid} {received_at:%Y%m%d} {now:%H%M%S}.",
            examples=["inbox/{now:%Y%m%d}/{control_id}.{ext}", "/upload/837/{message_id}.x12"],
        )
        exists: Literal["unique", "overwrite", "error"] = Field(
            "unique",
            description="When the rendered name is already taken on the server: unique (default) uploads as <stem>-2<ext>, "
            "-3 … and never replaces a file; overwrite replaces it (posix-rename); error fails the delivery (dead). A file already holding exactly the same bytes counts as this delivery's own (a retry makes no copy).",
        )
        mkdirs: bool = Field(True, description="Create missing folders of the path.")

        @field_validator("path")
        @classmethod
        def _template(cls, v: str) -> str:
            check_path_template(v)
            if v.endswith("/"):
                raise ValueError("the path template must end with a file name")
            return v

    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx
        self.settings = _settings(config, ctx, "destination")
        # one session per key sent at once (queue.parallel with order_by), all on one kept connection
        self.conn = _Connection(self.settings, config.queue.parallel if config.queue.order_by else 1)
        self._posix_rename: bool | None = None  # learnt from the server on first use

    def _wrote(self, tmp: str, done: int) -> None:
        """Called after each megabyte written (a seam for tests that cut the connection midway)."""

    async def send(self, message: Message) -> str | None:
        remote = render_path(self.config.path, message)
        tag = str(message.meta.get("delivery_id") or uuid.uuid4().hex[:12])
        return await asyncio.to_thread(self._send, remote, message.raw, tag)

    def _send(self, remote: str, data: bytes, tag: str) -> str:
        for attempt in (1, 2):
            fresh = True
            try:
                with self.conn.session() as (sftp, fresh):
                    return self._upload(sftp, remote, data, tag)
            except PermanentDelivery:
                raise
            except SftpError as exc:
                self.conn.close()
                raise RetryableDelivery(str(exc)) from exc
            except Exception as exc:
                if self.conn.alive():
                    if isinstance(exc, OSError) and exc.errno is None:
                        # SSH_FX_FAILURE and friends: the server could not do it now (disk, quota …)
                        raise RetryableDelivery(f"{self.settings.label}: {remote}: {exc}") from exc
                    raise classify(exc) from exc
                self.conn.close()
                if attempt == 1 and not fresh:
                    log.info("sftp %s: kept connection was gone; connecting again", self.settings.label)
                    continue
                raise RetryableDelivery(
                    f"connection to {self.settings.label} lost: {type(exc).__name__}: {exc}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _upload(self, sftp: paramiko.SFTPClient, remote: str, data: bytes, tag: str) -> str:
        folder, name = posixpath.split(remote)
        if not name:
            raise PermanentDelivery(f"path {remote!r} has no file name")
        if folder and self.config.mkdirs:
            _makedirs(self.conn, sftp, folder)
        tmp = posixpath.join(folder, f".{name}.{tag}.tmp")
        with sftp.open(tmp, "wb") as fh:
            fh.set_pipelined(True)
            for off in range(0, len(data), _WRITE):
                fh.write(data[off : off + _WRITE])
                self._wrote(tmp, off + _WRITE)
        size = sftp.stat(tmp).st_size
        if size != len(data):
            sftp.remove(tmp)
            raise RetryableDelivery(f"{remote}: {size} bytes on the server after upload, {len(data)} sent")
        if self.config.exists == "overwrite":
            self._rename(sftp, tmp, remote)
            return f"uploaded {remote} to {self.settings.label} ({len(data)} bytes)"
        for target in unique_names(remote):
            if not _exists(sftp, target) and self._rename_new(sftp, tmp, target):
                return f"uploaded {target} to {self.settings.label} ({len(data)} bytes)"
            if _holds(sftp, target, data):  # this delivery, repeated after its answer was lost: no second copy
                sftp.remove(tmp)
                return f"{target} on {self.settings.label} already holds these {len(data)} bytes (uploaded before)"
            if self.config.exists == "error":
                sftp.remove(tmp)
                raise PermanentDelivery(f"{remote} already exists on {self.settings.label} (exists: error)")
        sftp.remove(tmp)
        raise RetryableDelivery(f"no free name for {remote} on {self.settings.label}")

    def _rename_new(self, sftp: paramiko.SFTPClient, tmp: str, target: str) -> bool:
        """Plain SFTP rename, which must not replace: True when done, False when ``target`` was taken meanwhile."""
        try:
            sftp.rename(tmp, target)
            return True
        except OSError:
            if self.conn.alive() and _exists(sftp, target) and _exists(sftp, tmp):
                return False  # another writer took the name between the check and the rename
            raise

    def _rename(self, sftp: paramiko.SFTPClient, tmp: str, target: str) -> None:
        if self._posix_rename is not False:
            try:
                sftp.posix_rename(tmp, target)  # replaces atomically
                self._posix_rename = True
                return
            except OSError as exc:
                if self._posix_rename or exc.errno is not None or not self.conn.alive():
                    raise
                self._posix_rename = False  # the server has no posix-rename: plain rename below
                log.info(
                    "sftp %s: server has no posix-rename; replacing files with remove + rename", self.settings.label
                )
        if _exists(sftp, target):
            sftp.remove(target)
        sftp.rename(tmp, target)

    async def close(self) -> None:
        await asyncio.to_thread(self.conn.close)

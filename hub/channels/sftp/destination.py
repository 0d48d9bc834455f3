"""The ``sftp`` destination: upload each message as a file, atomically (temporary name, then rename).

Renders ``path`` (the file destination's template, :func:`hub.channels.file.render_path`), creates missing folders,
writes to ``.<name>.<delivery id>.tmp`` in the target folder, checks the uploaded size, then renames into place. A
name already taken is never replaced unless ``exists: overwrite``: with ``unique`` (default) the upload gets the first
free name of ``<stem>-2<ext>``, ``-3`` … and with ``error`` the delivery fails (dead). Those use the plain SFTP rename,
which the protocol (draft-ietf-secsh-filexfer-02 §6.5) defines to fail when the new name exists — OpenSSH's
sftp-server does it with ``link()``, so two writers cannot take one name; the name is also checked just before, for
servers that do not follow the draft (there a race of two writers remains). A taken name whose file holds exactly
the uploaded bytes counts as this delivery's own (a delivery repeated after its answer was lost makes no second
copy). ``overwrite`` uses ``posix-rename@openssh.com`` (replaces atomically), or remove + rename when the server
lacks it.

A lost connection, a refused host key or failed login raise :class:`~hub.errors.RetryableDelivery`: the queue
retries with its backoff (``queue.backoff``) and the messages wait until the peer is back or the settings fixed.
The connection keys are those of :mod:`hub.channels.sftp.connection`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import posixpath
import uuid
from typing import Literal

import paramiko
from pydantic import Field, field_validator

from hub.channels.base import Context
from hub.channels.file import check_path_template, render_path, unique_names
from hub.channels.sftp.connection import (
    Connection,
    SftpConnectionConfig,
    SftpError,
    makedirs,
    remote_exists,
    resolve_settings,
)
from hub.errors import PermanentDelivery, RetryableDelivery, classify
from hub.message import Message
from hub.spec import DestinationConfig

__all__ = ["SftpDestination"]

log = logging.getLogger("hub.sftp")

_WRITE = 1024 * 1024  # bytes written at once (pipelined) while uploading


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


class SftpDestination:
    """Uploads each message as a file on one kept SFTP connection (see the module docstring)."""

    class Config(SftpConnectionConfig, DestinationConfig):
        """Upload each message as a file:
        ``{type: sftp, host: …, user: …, key_file: …, known_hosts: …, path: 'inbox/{control_id}.{ext}'}``."""

        type: Literal["sftp"] = "sftp"
        path: str = Field(
            description="Remote path template (relative to the login folder, or absolute); "
            "folders are made as needed. "
            "Fields as for the file destination: {control_id} {message_id} {delivery_id} {channel} {message_type} "
            "{patient_id} {source_name} {ext} {uuid} {received_at:%Y%m%d} {now:%H%M%S}.",
            examples=["inbox/{now:%Y%m%d}/{control_id}.{ext}", "/upload/837/{message_id}.x12"],
        )
        exists: Literal["unique", "overwrite", "error"] = Field(
            "unique",
            description="When the rendered name is already taken on the server: "
            "unique (default) uploads as <stem>-2<ext>, "
            "-3 … and never replaces a file; overwrite replaces it (posix-rename); error fails the delivery (dead). "
            "A file already holding exactly the same bytes counts as this delivery's own (a retry makes no copy).",
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
        self.settings = resolve_settings(config, ctx, "destination")
        # one session per key sent at once (queue.parallel with order_by), all on one kept connection
        self.conn = Connection(self.settings, config.queue.parallel if config.queue.order_by else 1)
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
            makedirs(self.conn, sftp, folder)
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
            if not remote_exists(sftp, target) and self._rename_new(sftp, tmp, target):
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
            if self.conn.alive() and remote_exists(sftp, target) and remote_exists(sftp, tmp):
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
        if remote_exists(sftp, target):
            sftp.remove(target)
        sftp.rename(tmp, target)

    async def close(self) -> None:
        await asyncio.to_thread(self.conn.close)

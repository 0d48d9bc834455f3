"""SFTP connections (paramiko), shared by the sftp source and destination: settings, host keys, login, reconnect.

Connection keys (:class:`SftpConnectionConfig`): ``host``, ``port``, ``user``; ``key_file`` (ed25519, ECDSA or RSA;
``key_passphrase``) and/or ``password``. Secrets come from the environment only — ``password: ${CH_SFTP_PASSWORD}``
— and ``hub check`` refuses a password or passphrase written literally in a channel file. The server's host key must
match ``known_hosts`` (an OpenSSH known_hosts file; ``[host]:port`` entries for other ports; hashed entries work) or
``host_key_fingerprint`` (``SHA256:…`` as ``ssh-keygen -lf`` prints it); an unknown or changed key is refused, and a
channel that configures neither is a ``hub check`` problem. Connect and read timeouts, keepalive.

:class:`Connection` is the one SSH connection kept per source/destination, with up to ``size`` SFTP sessions on it,
opened on first use and again after it dropped. :func:`remote_exists` and :func:`makedirs` are the remote-path
helpers both ends use.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import re
import socket
import stat as statmod
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
import yaml
from pydantic import Field, field_validator

from hub.channels.base import Context
from hub.errors import ConfigError, PermanentDelivery
from hub.spec import Strict, parse_duration

__all__ = [
    "SftpConnectionConfig",
    "SftpError",
    "HostKeyRefused",
    "Settings",
    "resolve_settings",
    "connect",
    "Connection",
    "remote_exists",
    "makedirs",
]

log = logging.getLogger("hub.sftp")

_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")


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
        description="The server key's SHA256 fingerprint(s) as ssh-keygen -lf prints them; "
        "accepted like a known_hosts entry.",
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
    def _duration(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v

    @field_validator("host_key_fingerprint")
    @classmethod
    def _fingerprints(cls, v: str | list[str] | None) -> str | list[str] | None:
        for fp in [v] if isinstance(v, str) else v or []:
            if not _FINGERPRINT.match(fp.strip()):
                raise ValueError(f"{fp!r} is not a SHA256 fingerprint like SHA256:vhi9W/8W… (ssh-keygen -lf key.pub)")
        return v


@dataclass
class Settings:
    """The checked connection settings of one source or destination (paths resolved, durations in seconds)."""

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


def resolve_settings(config: SftpConnectionConfig, ctx: Context, kind: str) -> Settings:
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
    return Settings(
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
def _known_keys(s: Settings) -> list[paramiko.PKey]:
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


def _verify_host_key(s: Settings, key: paramiko.PKey, known: list[paramiko.PKey]) -> None:
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


def _load_key(s: Settings) -> paramiko.PKey:
    assert s.key_file is not None
    if not s.key_file.is_file():
        raise SftpError(f"key_file {s.key_file} not found")
    try:
        password = s.passphrase.encode("utf-8") if s.passphrase else None
        # paramiko annotates the password as str, but hands it to cryptography's loaders, which take only bytes
        return paramiko.PKey.from_path(s.key_file, password)  # type: ignore[arg-type]
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        if not s.passphrase and (isinstance(exc, paramiko.PasswordRequiredException) or "password" in str(exc).lower()):
            raise SftpError(f"key_file {s.key_file} is encrypted: set key_passphrase (from the environment)") from None
        raise SftpError(
            f"key_file {s.key_file} cannot be loaded (wrong passphrase or unsupported key): {exc}"
        ) from None


def connect(s: Settings) -> paramiko.Transport:
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
        _log_in(transport, s, pkey)
        if s.keepalive > 0:
            transport.set_keepalive(max(1, int(s.keepalive)))
        return transport
    except BaseException:
        transport.close()
        raise


def _log_in(transport: paramiko.Transport, s: Settings, pkey: paramiko.PKey | None) -> None:
    """Authenticate with the key, then with the password when the key is refused or there is none."""
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


def _open_sftp(transport: paramiko.Transport, s: Settings) -> paramiko.SFTPClient:
    sftp = paramiko.SFTPClient.from_transport(transport)
    if sftp is None:
        raise SftpError(f"{s.label} did not open the SFTP subsystem")
    channel = sftp.get_channel()
    assert channel is not None  # from_transport opened it
    channel.settimeout(s.timeout)
    return sftp


def _session_still_good(exc: BaseException) -> bool:
    """After an error, may the SFTP session be used again? Yes after the server's own answers (no such file …)."""
    return isinstance(exc, OSError) and not isinstance(exc, (TimeoutError, socket.timeout, ConnectionError))


def _quietly_close(thing: paramiko.SFTPClient | paramiko.Transport) -> None:
    try:
        thing.close()
    except Exception:
        pass


class Connection:
    """One kept SSH connection with up to ``size`` SFTP sessions on it, opened on first use and again after it
    dropped. A session is used by one thread at a time (:meth:`session`)."""

    def __init__(self, settings: Settings, size: int = 1) -> None:
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


def remote_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    """Whether ``path`` exists on the server (errors other than "no such file" are raised)."""
    try:
        sftp.stat(path)
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def makedirs(conn: Connection, sftp: paramiko.SFTPClient, folder: str) -> None:
    """Make ``folder`` and its missing parents on the server, remembering on ``conn`` the ones known to exist."""
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
                if not remote_exists(sftp, prefix):  # made meanwhile by someone else is fine
                    raise
        else:
            if st.st_mode is not None and not statmod.S_ISDIR(st.st_mode):
                raise PermanentDelivery(f"{prefix} on the server is a file, not a folder")
        conn.dirs.add(prefix)
    conn.dirs.add(folder)

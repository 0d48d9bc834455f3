"""The sftp connector against a real OpenSSH sshd on a loopback port: polling, after-actions, half-written files,
duplicate names, crash between commit and after-action, server restarts mid-transfer, host key refusal, key and
password logins, streaming of large files, and the destination's atomic uploads.

The server (``SshServer``) runs ``sshd -D -e`` with a temporary host key, ``internal-sftp`` and the current user;
as root it runs in a private mount namespace whose /etc/shadow gives that user a throwaway password (for the
password test) — the machine's own files are never touched.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.channels.base import Context
from hub.channels.sftp import (
    SftpDestination,
    SftpSource,
    csv_chunks,
    file_lines,
    hl7_chunks,
    hl7_messages,
    parse_size,
)
from hub.engine import Engine, build
from hub.errors import Hl7ParseError, PermanentDelivery, RetryableDelivery
from hub.message import Message
from hub.metrics import SFTP_LAST_POLL
from hub.spec import load_config
from hub.store import SearchQuery, Store
from hub.store.schema import leases
from support import need_peer, write_config
from support import until as _until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PASSWORD = "correct horse battery staple 7"
PASSPHRASE = "hub key passphrase"


# ============================================================================================ the real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> None:
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", "hub-test"]
    if kind == "rsa":
        args[4:4] = ["-b", "2048"]
    subprocess.run(args, check=True)


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found, then theirs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class SshServer:
    """An OpenSSH sshd on 127.0.0.1:<random port> serving SFTP to the current user."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.root = base / "files"
        self.root.mkdir()
        self.user = getpass.getuser()
        self.port = _free_port()
        self.host_key = base / "host_ed25519"
        _keygen(self.host_key)
        self.key = base / "user_ed25519"  # with a passphrase
        _keygen(self.key, passphrase=PASSPHRASE)
        self.rsa_key = base / "user_rsa"
        _keygen(self.rsa_key, "rsa")
        self.other_key = base / "stranger_ed25519"  # a host key the server does not have
        _keygen(self.other_key)
        (base / "authorized_keys").write_text(
            (base / "user_ed25519.pub").read_text() + (base / "user_rsa.pub").read_text()
        )
        self.known_hosts = base / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(base / 'host_ed25519.pub').read_text()}")
        self.fingerprint = _fingerprint(base / "host_ed25519.pub")
        self.log = base / "sshd.log"
        self.password = self._private_shadow()
        self.proc: subprocess.Popen[bytes] | None = None
        (base / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {base / 'authorized_keys'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PidFile none",
                    "PermitRootLogin yes",
                    f"PasswordAuthentication {'yes' if self.password else 'no'}",
                    "KbdInteractiveAuthentication no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "MaxStartups 100:30:200",
                    "MaxSessions 50",
                    "",
                ]
            )
        )

    def _private_shadow(self) -> str | None:
        """As root: a copy of /etc/shadow giving this user a throwaway password, mounted only for our sshd."""
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("openssl"):
            return None
        try:
            hashed = subprocess.run(
                ["openssl", "passwd", "-6", PASSWORD], check=True, capture_output=True, text=True
            ).stdout.strip()
            lines = Path("/etc/shadow").read_text().splitlines()
            probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        if probe.returncode != 0:
            return None
        out = []
        for line in lines:
            parts = line.split(":")
            if parts[0] == self.user:
                parts[1] = hashed
            out.append(":".join(parts))
        shadow = self.base / "shadow"
        shadow.write_text("\n".join(out) + "\n")
        shadow.chmod(0o600)
        self.shadow = shadow
        return PASSWORD

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        cmd = [SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")]
        if self.password:
            cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount --bind "{self.shadow}" /etc/shadow && exec "$@"',
                "sh",
                *cmd,
            ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        """Stop the server and every session it forked (its process group), like a host going down."""
        if self.proc is None:
            return
        # sshd's per-connection children call setsid(), so the process group is not enough: walk /proc.
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def folder(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def need_sshd() -> None:
    need_peer(
        os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None,
        "OpenSSH sshd is not installed (tests/peers.sh installs openssh-server)",
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    need_sshd()
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(sshd: SshServer) -> SshServer:
    """The session's server, running (a test may have stopped it)."""
    if sshd.proc is None or sshd.proc.poll() is not None:
        sshd.start()
    return sshd


# ============================================================================================ helpers
HUB = "home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\n"


def conn_yaml(server: SshServer, **over: object) -> str:
    keys = {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "key_file": str(server.key),
        "key_passphrase": "${TEST_SFTP_PASSPHRASE}",
        "known_hosts": str(server.known_hosts),
        "connect_timeout": "3s",
        "timeout": "5s",
    }
    keys.update(over)
    return ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in keys.items() if v is not None)


def source_channel(server: SshServer, folder: Path, *, extra: str = "", **conn: object) -> str:
    return f"""
name: pull
source: {{type: sftp, {conn_yaml(server, **conn)}, path: '{folder}', schedule: 150ms, settle: 150ms{extra}}}
routes:
  - name: out
    to: [out]
destinations:
  out: {{type: file, path: 'out/{{message_id}}.dat',
        queue: {{max_attempts: 3, backoff: {{initial: 50ms, max: 100ms}}}}}}
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("TEST_SFTP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("TEST_SFTP_PASSWORD", PASSWORD)


def config(home: Path, channel: str, url: str | None = None):
    url = url or f"sqlite:///{home / 'hub.db'}"
    cfg = load_config(write_config(home / "cfg", HUB.format(url=url), {"c": channel}))
    assert not build(cfg).problems, build(cfg).problems
    return cfg


async def until(cond, timeout: float = 15.0, what: str = "condition") -> None:  # this file's slower default
    await _until(cond, timeout, what, every=0.05)


def drop(folder: Path, name: str, data: bytes, age: float = 5.0) -> Path:
    p = folder / name
    p.write_bytes(data)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def adt(n: int, mrn: str = "100234") -> bytes:
    return (
        f"MSH|^~\\&|PM|CLINIC|HUB|CLINIC|20261123101500||ADT^A04^ADT_A01|SFTP{n:05d}|P|2.5.1\r"
        f"EVN|A04|20261123101500\rPID|1||{mrn}^^^CLINIC^MR||TESTER^ANNA||19800101|F\rPV1|1|O\r"
    ).encode()


def messages(eng: Engine) -> list[dict]:
    return eng.store.search(SearchQuery(limit=10000))


# ============================================================================================ pure pieces
def test_sizes_and_line_reading(tmp_path):
    assert parse_size("4MB") == 4 * 1024 * 1024 and parse_size("512 kb") == 512 * 1024 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_size("lots")
    p = tmp_path / "f"
    p.write_bytes(b"a\rb\r\nc\nd")
    with open(p, "rb") as fh:
        assert list(file_lines(fh, block=2)) == [b"a\r", b"b\r\n", b"c\n", b"d"]  # a CRLF cut by a block is kept whole


def test_hl7_chunks_keep_whole_messages_and_check_the_envelope(tmp_path):
    p = tmp_path / "batch.hl7"
    body = b"".join(adt(i) for i in range(10))
    p.write_bytes(b"FHS|^~\\&|PM\rBHS|^~\\&|PM\r" + body + b"BTS|10\rFTS|1\r")
    with open(p, "rb") as fh:
        msgs = list(hl7_messages(fh))
        assert msgs == [adt(i) for i in range(10)]
        chunks = list(hl7_chunks(fh, 3 * len(adt(0))))
    assert [c.count(b"MSH|") for c in chunks] == [3, 3, 3, 1] and b"".join(chunks) == body
    p.write_bytes(b"BHS|^~\\&|PM\r" + body + b"BTS|12\r")
    with open(p, "rb") as fh, pytest.raises(Hl7ParseError, match="BTS-1 says 12"):
        list(hl7_messages(fh))


def test_csv_chunks_repeat_the_header_and_keep_quoted_line_breaks(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b'ID,NOTE\r\n1,"two\r\nlines"\r\n\r\n2,b\r\n3,c')
    with open(p, "rb") as fh:
        chunks = list(csv_chunks(fh, 10))
    assert chunks == [b'ID,NOTE\r\n1,"two\r\nlines"\r\n', b"ID,NOTE\r\n2,b\r\n3,c"]


# ============================================================================================ source
async def test_files_are_taken_once_then_archived_and_bad_ones_go_to_error(server, tmp_path):
    inbox = server.folder("t1/in")
    drop(inbox, "a.hl7", adt(1))
    drop(inbox, "b.hl7", adt(2))
    drop(inbox, "bad.hl7", b"this is not HL7")
    drop(inbox, ".upload-in-progress.hl7", adt(3))
    drop(inbox, "notes.txt", b"skip me")
    eng = Engine(
        config(tmp_path, source_channel(server, inbox, extra=", glob: '*.hl7', format: hl7v2")),
        idle_poll=0.05,
    )
    await eng.start()
    try:
        await until(
            lambda: (
                (inbox / "archive/a.hl7").exists()
                and (inbox / "archive/b.hl7").exists()
                and (inbox / "error/bad.hl7").exists()
            )
        )
        await until(lambda: len(list((tmp_path / "out").glob("*.dat"))) == 2, what="two deliveries")
        rows = messages(eng)
        assert sorted(r["status"] for r in rows) == ["accepted", "accepted", "rejected"]
        assert {r["source_ref"] for r in rows} == {
            f"sftp://127.0.0.1:{server.port}{inbox}/{n}" for n in ("a.hl7", "b.hl7", "bad.hl7")
        }
        report = (inbox / "error/bad.hl7.error.txt").read_text()
        assert report.startswith("message 1:") and "MSH" in report
        assert (inbox / ".upload-in-progress.hl7").exists() and (inbox / "notes.txt").exists()
        src = eng.sources["pull"]
        polls = src.polls
        await until(lambda: src.polls >= polls + 3, what="more polls")
        assert len(messages(eng)) == 3, "nothing is taken twice"
        assert time.time() - SFTP_LAST_POLL.labels("pull")._value.get() < 5, "the dashboard/alert gauge is set"
    finally:
        await eng.stop()
    with Store(f"sqlite:///{tmp_path / 'hub.db'}").open() as store, store.engine.connect() as conn:
        assert conn.execute(select(leases)).fetchall() == [], "the lease is released when the source stops"


async def test_the_source_reports_when_a_poll_last_reached_the_server_and_why_one_failed(server, tmp_path):
    """peer_state (ReportsPeer), which the web shows with the channel's peers: the gauge's value, and the error."""
    inbox = server.folder("t1p/in")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("# nobody\n")

    async def receive(*args, **kwargs):
        raise AssertionError("the folder is empty: nothing is received")

    def source(channel: str, **over: object) -> SftpSource:
        keys = dict(
            type="sftp",
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            key_file=str(server.rsa_key),
            known_hosts=str(server.known_hosts),
            path=str(inbox),
            schedule="1h",  # one poll, at the start
            settle="0s",
            timeout="5s",
        )
        keys.update(over)
        return SftpSource(SftpSource.Config(**keys), Context(home=tmp_path, channel=channel))

    good = source("peer_good")
    assert good.peer_state() == {"sftp_last_poll": None, "sftp_error": None}, "before the first poll"
    before = time.time()
    await good.start(receive)
    try:
        await until(lambda: good.polls >= 1, what="the first poll")
        state = good.peer_state()
        assert state["sftp_error"] is None and before <= state["sftp_last_poll"] <= time.time()
        assert state["sftp_last_poll"] == SFTP_LAST_POLL.labels("peer_good")._value.get()
    finally:
        await good.stop()
    bad = source("peer_bad", known_hosts=str(empty))
    await bad.start(receive)
    try:
        await until(lambda: bad.polls >= 1, what="the first poll")
        state = bad.peer_state()
        assert state["sftp_last_poll"] is None and "is unknown" in state["sftp_error"]
        assert state["sftp_error"] == bad.last_error
        assert SFTP_LAST_POLL.labels("peer_bad")._value.get() == 0, "no poll has reached the server"
    finally:
        await bad.stop()


@pytest.mark.parametrize("after", ["delete", "rename"])
async def test_after_delete_and_rename(server, tmp_path, after):
    inbox = server.folder(f"t2-{after}/in")
    drop(inbox, "x.hl7", adt(7))
    eng = Engine(
        config(tmp_path, source_channel(server, inbox, extra=f", after: {after}, rename_suffix: .taken")),
        idle_poll=0.05,
    )
    await eng.start()
    try:
        await until(lambda: not (inbox / "x.hl7").exists())
        assert (inbox / "x.hl7.taken").exists() == (after == "rename")
        assert not (inbox / "archive").exists()
        src = eng.sources["pull"]
        polls = src.polls
        await until(lambda: src.polls >= polls + 2)
        assert len(messages(eng)) == 1, "a renamed file is never taken again"
    finally:
        await eng.stop()


async def test_a_half_written_file_waits_until_it_stops_growing(server, tmp_path):
    inbox = server.folder("t3/in")
    p = inbox / "growing.hl7"
    p.write_bytes(adt(1))
    eng = Engine(config(tmp_path, source_channel(server, inbox, extra=", format: hl7v2")), idle_poll=0.05)
    await eng.start()
    try:
        for i in range(2, 14):  # a slow writer: a message every 100 ms for 1.2 s, across several polls
            await asyncio.sleep(0.1)
            with p.open("ab") as fh:
                fh.write(adt(i))
            assert not (inbox / "archive/growing.hl7").exists(), "taken while still growing"
        await until(lambda: (inbox / "archive/growing.hl7").exists())
        rows = messages(eng)
        assert len(rows) == 13 and {r["status"] for r in rows} == {"accepted"}, "all 13 messages of the finished file"
    finally:
        await eng.stop()


async def test_duplicate_names_new_content_is_taken_same_file_is_not(server, tmp_path):
    inbox = server.folder("t4/in")
    drop(inbox, "daily.hl7", adt(1), age=100)
    eng = Engine(config(tmp_path, source_channel(server, inbox)), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (inbox / "archive/daily.hl7").exists())
        # the same name again tomorrow, with other content: a new file, taken, archived beside the first
        drop(inbox, "daily.hl7", adt(2), age=50)
        await until(lambda: len(list((inbox / "archive").glob("daily*.hl7"))) == 2)
        assert len(messages(eng)) == 2
        # the very same file put back (same bytes, same mtime): already taken — archived again, not stored twice
        first = inbox / "archive/daily.hl7"
        shutil.copy2(first, inbox / "daily.hl7")
        await until(lambda: len(list((inbox / "archive").glob("daily*.hl7"))) == 3)
        rows = messages(eng)
        assert len(rows) == 2 and sorted(eng.store.get_message(r["id"])["raw"] for r in rows) == sorted(
            [adt(1), adt(2)]
        )
    finally:
        await eng.stop()


async def test_when_the_store_fails_the_file_stays_and_the_folder_order_is_kept(server, tmp_path):
    from hub.channels.base import Receipt, Result
    from hub.message import Outcome

    inbox = server.folder("t5b/in")
    for i, name in enumerate(("a.hl7", "b.hl7", "c.hl7")):
        drop(inbox, name, adt(i), age=30 - i)  # oldest first: a, b, c
    eng = Engine(config(tmp_path, source_channel(server, inbox)), idle_poll=0.05)
    await eng.start()
    src = eng.sources["pull"]
    real, failed = src._receive, []

    async def flaky(raw, **kw):
        if kw["source_ref"].endswith("b.hl7") and not failed:
            failed.append(1)
            return Receipt([Result(Outcome.ERROR, reason="store unavailable")])
        return await real(raw, **kw)

    src._receive = flaky
    try:
        await until(
            lambda: len(list((inbox / "archive").glob("*.hl7"))) == 3 if (inbox / "archive").exists() else False
        )
        assert failed, "b was refused once and left for the next poll"
        refs = [r["source_ref"].rsplit("/", 1)[1] for r in sorted(messages(eng), key=lambda r: r["id"])]
        assert refs == ["a.hl7", "b.hl7", "c.hl7"], "c waited for b"
    finally:
        await eng.stop()


async def test_parallel_takes_several_files_at_once_each_once(server, tmp_path):
    inbox = server.folder("t5c/in")
    for i in range(24):
        drop(inbox, f"r{i:02d}.hl7", adt(i))
    eng = Engine(config(tmp_path, source_channel(server, inbox, extra=", parallel: 4")), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (inbox / "archive").exists() and len(list((inbox / "archive").iterdir())) == 24)
        rows = messages(eng)
        assert len(rows) == 24 and {r["control_id"] for r in rows} == {f"SFTP{i:05d}" for i in range(24)}
        assert len(eng.sources["pull"].conn._free) <= 6, "sessions are kept for the next poll, at most parallel + 2"
    finally:
        await eng.stop()


async def test_a_crash_between_commit_and_after_action_does_not_ingest_twice(server, tmp_path, monkeypatch):
    inbox = server.folder("t5/in")
    drop(inbox, "once.hl7", adt(5))
    cfg = config(tmp_path, source_channel(server, inbox))

    def crash(self, *args):
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(SftpSource, "_after", crash)
    eng = Engine(cfg, idle_poll=0.05)
    try:
        await eng.start()
        await until(lambda: messages(eng) != [])
    finally:
        await eng.stop()
    monkeypatch.undo()
    assert (inbox / "once.hl7").exists(), "the crash left the file on the server"
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (inbox / "archive/once.hl7").exists())
        assert len(messages(eng)) == 1, "the second poll found the file already taken"
    finally:
        await eng.stop()


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)  # paramiko's read-ahead thread sees the cut
async def test_the_server_restarting_during_a_download(server, tmp_path, monkeypatch):
    inbox = server.folder("t6/in")
    big = os.urandom(12 * 1024 * 1024)
    drop(inbox, "big.dat", big)
    cut = []

    def kill_once(self, remote, done):
        if not cut:
            cut.append(done)
            server.stop()  # the host goes down with the transfer in flight

    monkeypatch.setattr(SftpSource, "_window_done", kill_once)
    eng = Engine(config(tmp_path, source_channel(server, inbox, extra=", format: raw")), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: bool(cut) and server.proc is None, what="the cut")
        await asyncio.sleep(0.5)  # a few polls fail while it is down
        assert messages(eng) == [] and (inbox / "big.dat").exists()
        await asyncio.to_thread(server.start)
        await until(lambda: (inbox / "archive/big.dat").exists(), timeout=20)
        [row] = messages(eng)
        assert eng.store.get_message(row["id"])["raw"] == big
    finally:
        await eng.stop()
        if server.proc is None:
            server.start()


async def test_a_large_csv_is_streamed_in_chunks_and_bad_rows_are_reported(server, tmp_path):
    inbox = server.folder("t7/in")
    header = b"ID,NAME,DOB\n"
    rows = [f"{i},Patient{i},2001-01-{(i % 28) + 1:02d}\n".encode() for i in range(1, 301)]
    rows[41] = b"42,Broken\n"  # a short row: rejected alone
    drop(inbox, "roster.csv", header + b"".join(rows))
    ch = source_channel(server, inbox, extra=", format: csv, split: csv_row, chunk_size: 2KB")
    eng = Engine(config(tmp_path, ch), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (inbox / "error/roster.csv").exists())
        got = messages(eng)
        assert len(got) == 300 and sum(r["status"] == "rejected" for r in got) == 1
        report = (inbox / "error/roster.csv.error.txt").read_text()
        assert report.startswith("row 42: column DOB: missing"), report
        raws = {eng.store.get_message(r["id"])["raw"] for r in got}
        assert header + rows[0] in raws and header + rows[299] in raws, "each row carries the header"
    finally:
        await eng.stop()


async def test_a_large_hl7_batch_is_streamed_and_a_bad_count_refused_before_any_accept(server, tmp_path):
    inbox = server.folder("t8/in")
    body = b"".join(adt(i) for i in range(200))
    drop(inbox, "ok.hl7", b"FHS|^~\\&|PM\rBHS|^~\\&|PM\r" + body + b"BTS|200\rFTS|1\r")
    drop(inbox, "short.hl7", b"BHS|^~\\&|PM\r" + body + b"BTS|250\r", age=3)
    eng = Engine(config(tmp_path, source_channel(server, inbox, extra=", chunk_size: 4KB")), idle_poll=0.05)
    await eng.start()
    try:
        await until(lambda: (inbox / "archive/ok.hl7").exists() and (inbox / "error/short.hl7").exists())
        got = messages(eng)
        assert len(got) == 200 and {r["control_id"] for r in got} == {f"SFTP{i:05d}" for i in range(200)}
        assert "BTS-1 says 250" in (inbox / "error/short.hl7.error.txt").read_text()
    finally:
        await eng.stop()


async def test_a_whole_file_above_max_size_goes_to_error_unread(server, tmp_path):
    inbox = server.folder("t9/in")
    drop(inbox, "huge.x12", b"ISA*" + b"x" * 5000)
    eng = Engine(
        config(tmp_path, source_channel(server, inbox, extra=", format: raw, max_size: 1KB, chunk_size: 1KB")),
        idle_poll=0.05,
    )
    await eng.start()
    try:
        await until(lambda: (inbox / "error/huge.x12").exists())
        assert "more than max_size" in (inbox / "error/huge.x12.error.txt").read_text() and messages(eng) == []
    finally:
        await eng.stop()


# ============================================================================================ security
async def test_a_host_key_that_does_not_match_is_refused(server, tmp_path, caplog):
    inbox = server.folder("t10/in")
    drop(inbox, "secret.hl7", adt(1))
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{server.port} {(server.base / 'stranger_ed25519.pub').read_text()}")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("# nobody\n")
    for kh, expect in ((wrong, "does not match known_hosts"), (empty, "is unknown")):
        caplog.clear()
        home = tmp_path / kh.name.replace("_known_hosts", "")
        eng = Engine(config(home, source_channel(server, inbox, known_hosts=str(kh))), idle_poll=0.05)
        with caplog.at_level(logging.WARNING, logger="hub.sftp"):
            await eng.start()
            try:
                await until(lambda expect=expect: expect in caplog.text, what=expect)
                assert messages(eng) == [] and (inbox / "secret.hl7").exists()
            finally:
                await eng.stop()
    # a fingerprint that does not match is refused too; the right one is accepted
    dest = SftpDestination(
        SftpDestination.Config(
            type="sftp",
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            key_file=str(server.rsa_key),
            host_key_fingerprint="SHA256:" + "A" * 43,
            path=f"{server.root}/t10/out/x.txt",
        ),
        Context(home=tmp_path),
    )
    with pytest.raises(RetryableDelivery, match="is unknown"):
        await dest.send(Message(b"x"))
    await dest.close()
    dest = SftpDestination(
        dest.config.model_copy(update={"host_key_fingerprint": server.fingerprint}), Context(home=tmp_path)
    )
    assert "uploaded" in await dest.send(Message(b"x"))
    await dest.close()
    assert (server.root / "t10/out/x.txt").read_bytes() == b"x"


def test_hub_check_refuses_unverified_hosts_literal_secrets_and_no_login(server, tmp_path):
    def problems(**conn: object) -> list[str]:
        home = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        cfg = load_config(
            write_config(
                home / "cfg", HUB.format(url="sqlite:///x.db"), {"c": source_channel(server, Path("/in"), **conn)}
            )
        )
        return [p.message for p in build(cfg).problems]

    assert problems() == []
    assert any("host key must be verified" in p for p in problems(known_hosts=None))
    assert problems(known_hosts=None, host_key_fingerprint=server.fingerprint) == []
    assert any("not a SHA256 fingerprint" in p for p in problems(host_key_fingerprint="MD5:aa:bb"))
    assert any("password is written in the channel file" in p for p in problems(password="hunter2"))
    assert problems(password="${TEST_SFTP_PASSWORD}") == []
    assert any("key_passphrase is written in the channel file" in p for p in problems(key_passphrase="plain"))
    assert any("give key_file or password" in p for p in problems(key_file=None, key_passphrase=None))


async def test_logins_with_an_encrypted_ed25519_key_an_rsa_key_and_a_password(server, tmp_path):
    def dest(**over: object) -> SftpDestination:
        base = dict(
            type="sftp",
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            known_hosts=str(server.known_hosts),
            path=f"{server.root}/t12/{{uuid}}.txt",
            timeout="5s",
        )
        base.update(over)
        return SftpDestination(SftpDestination.Config(**base), Context(home=tmp_path))

    d = dest(key_file=str(server.key), key_passphrase=PASSPHRASE)
    assert "uploaded" in await d.send(Message(b"ed25519"))
    await d.close()
    d = dest(key_file=str(server.key), key_passphrase="wrong")
    with pytest.raises(RetryableDelivery, match="cannot be loaded"):
        await d.send(Message(b"no"))
    d = dest(key_file=str(server.key))
    with pytest.raises(RetryableDelivery, match="encrypted: set key_passphrase"):
        await d.send(Message(b"no"))
    d = dest(key_file=str(server.rsa_key))
    assert "uploaded" in await d.send(Message(b"rsa"))
    await d.close()
    assert sorted(p.read_bytes() for p in (server.root / "t12").glob("*.txt")) == [b"ed25519", b"rsa"]
    if not server.password:
        pytest.skip("password login needs root (a private /etc/shadow for the test sshd); key logins were tested")
    d = dest(password=PASSWORD)
    assert "uploaded" in await d.send(Message(b"password"))
    await d.close()
    d = dest(password="not it")
    with pytest.raises(RetryableDelivery, match="password refused"):
        await d.send(Message(b"no"))


# ============================================================================================ destination
def dest_for(server: SshServer, tmp_path: Path, path: str, **over: object) -> SftpDestination:
    base = dict(
        type="sftp",
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        key_file=str(server.rsa_key),
        known_hosts=str(server.known_hosts),
        path=path,
        timeout="5s",
    )
    base.update(over)
    return SftpDestination(SftpDestination.Config(**base), Context(home=tmp_path))


async def test_uploads_make_folders_render_templates_and_follow_the_exists_policy(server, tmp_path):
    out = server.root / "t13"
    msg = Message(adt(1), "hl7v2", meta={"control_id": "CTL/../1", "delivery_id": 77}, id=5, channel="ch")
    d = dest_for(server, tmp_path, f"{out}/{{received_at:%Y}}/deep/{{control_id}}.{{ext}}", exists="overwrite")
    answer = await d.send(msg)
    target = out / f"{msg.received_at:%Y}/deep/CTL_.._1.hl7"
    assert target.read_bytes() == adt(1) and f"({len(adt(1))} bytes)" in answer
    assert await d.send(msg.replace(adt(2))) and target.read_bytes() == adt(2), "overwrite replaces"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "no temporary file is left"
    await d.close()
    d = dest_for(server, tmp_path, f"{out}/u/{{channel}}.txt", exists="unique")
    for body in (b"1", b"2", b"3"):
        await d.send(Message(body, channel="ch"))
    assert {p.name: p.read_bytes() for p in (out / "u").iterdir()} == {
        "ch.txt": b"1",
        "ch-2.txt": b"2",
        "ch-3.txt": b"3",
    }
    await d.close()
    d = dest_for(server, tmp_path, f"{out}/e/{{channel}}.txt", exists="error")
    await d.send(Message(b"first", channel="ch"))
    with pytest.raises(PermanentDelivery, match="already exists"):
        await d.send(Message(b"second", channel="ch"))
    assert (out / "e/ch.txt").read_bytes() == b"first"
    await d.close()
    await d.close()  # idempotent


async def test_uploads_never_replace_a_file_by_default(server, tmp_path):
    """Senders reuse MSH-10, messages without one render `_`: each upload keeps its own file unless
    exists: overwrite."""
    out = server.root / "t13d"
    d = dest_for(server, tmp_path, f"{out}/{{control_id}}.hl7")
    for i in (1, 2, 3):
        await d.send(Message(f"reused {i}".encode(), "hl7v2", meta={"control_id": "ADT00002"}))
    await d.send(Message(b"no control id", "hl7v2"))
    await d.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        "ADT00002.hl7": b"reused 1",
        "ADT00002-2.hl7": b"reused 2",
        "ADT00002-3.hl7": b"reused 3",
        "_.hl7": b"no control id",
    }


async def test_an_upload_does_not_replace_a_file_put_there_after_the_name_was_checked(server, tmp_path, monkeypatch):
    """Another writer takes the name between the existence check and the rename: the plain SFTP rename fails
    (OpenSSH renames with link(), which never replaces) and the next free name is used; the other file is kept."""
    from hub.channels.sftp import destination

    out = server.folder("t13r")
    real = destination.remote_exists
    raced: list[str] = []

    def other_writer_after_the_check(sftp, path):  # type: ignore[no-untyped-def]
        found = real(sftp, path)
        if path.endswith("/ADT00002.hl7") and not raced:
            raced.append(path)
            (out / "ADT00002.hl7").write_bytes(b"the other writer's message")
        return found

    monkeypatch.setattr(destination, "remote_exists", other_writer_after_the_check)
    d = dest_for(server, tmp_path, f"{out}/{{control_id}}.hl7")
    answer = await d.send(Message(b"this writer's message", "hl7v2", meta={"control_id": "ADT00002"}))
    await d.close()
    assert raced and "ADT00002-2.hl7" in answer
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        "ADT00002.hl7": b"the other writer's message",
        "ADT00002-2.hl7": b"this writer's message",
    }


async def test_an_upload_repeated_after_its_answer_was_lost_makes_no_second_copy(server, tmp_path):
    out = server.root / "t13s"
    d = dest_for(server, tmp_path, f"{out}/{{control_id}}.x12")
    claim = Message(b"ISA*00*claim one~", "x12", meta={"control_id": "000000001"})
    assert "uploaded" in await d.send(claim)
    assert "already holds" in await d.send(claim), "the same delivery again: done, no 000000001-2.x12"
    assert "uploaded" in await d.send(Message(b"ISA*00*claim two~", "x12", meta={"control_id": "000000001"}))
    await d.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        "000000001.x12": b"ISA*00*claim one~",
        "000000001-2.x12": b"ISA*00*claim two~",
    }


def test_an_unknown_template_field_in_an_upload_path_is_refused():
    base = dict(type="sftp", host="127.0.0.1", user="u", key_file="k", host_key_fingerprint="SHA256:" + "A" * 43)
    with pytest.raises(Exception, match=r"unknown field \{control_idd\}"):
        SftpDestination.Config(**base, path="inbox/{control_idd}.hl7")
    assert SftpDestination.Config(**base, path="inbox/{control_id}.hl7").exists == "unique"


async def test_the_connection_is_reused_and_opened_again_after_it_dropped(server, tmp_path):
    d = dest_for(server, tmp_path, f"{server.root}/t14/{{uuid}}.txt")
    await d.send(Message(b"1"))
    first = d.conn.transport
    await d.send(Message(b"2"))
    assert d.conn.transport is first, "one connection per destination"
    await asyncio.to_thread(server.restart)  # drops the kept session
    await d.send(Message(b"3"))
    assert d.conn.transport is not first and len(list((server.root / "t14").iterdir())) == 3
    await d.close()


async def test_the_server_restarting_during_an_upload_is_retried_until_it_is_back(server, tmp_path, monkeypatch):
    out = server.root / "t15"
    cut = []

    def kill_once(self, tmp, done):
        if not cut:
            cut.append(tmp)
            server.stop()

    monkeypatch.setattr(SftpDestination, "_wrote", kill_once)
    big = os.urandom(6 * 1024 * 1024)
    (tmp_path / "in").mkdir()
    ch = f"""
name: push
source: {{type: file, path: in, schedule: 100ms, settle: 0s, format: raw}}
routes: [{{name: up, to: [up]}}]
destinations:
  up: {{type: sftp, {conn_yaml(server, key_file=str(server.rsa_key), key_passphrase=None)},
        path: '{out}/{{source_name}}',
        queue: {{max_attempts: 100, backoff: {{initial: 100ms, max: 300ms}}}}}}
"""
    eng = Engine(config(tmp_path, ch), idle_poll=0.05)
    await eng.start()
    try:
        (tmp_path / "in/big.bin").write_bytes(big)
        await until(lambda: bool(cut) and server.proc is None, what="the cut")
        await asyncio.sleep(0.6)  # attempts fail while the server is down, with backoff
        await asyncio.to_thread(server.start)
        await until(lambda: (out / "big.bin").exists(), timeout=20)
        assert (out / "big.bin").read_bytes() == big
        assert [p.name for p in out.iterdir()] == ["big.bin"], "the interrupted temporary upload was replaced"
        [row] = messages(eng)
        # the file is in place a moment before the worker records the delivery as sent
        await until(lambda: eng.store.delivery_states(row["id"]) == ["sent"], what="the delivery marked sent")
        [delivery] = eng.store.get_message(row["id"])["deliveries"]
        assert delivery["attempts"] >= 2
    finally:
        await eng.stop()
        if server.proc is None:
            server.start()


# ============================================================================================ the roster channel
async def test_pm_roster_from_sftp_becomes_adt_for_every_synthea_patient(server, tmp_path):
    src = Path(__file__).resolve().parents[2].parent / "shared/corpus/csv/synthea/patients.csv"
    if not src.exists():
        src = Path(__file__).resolve().parents[1] / "samples/csv/pm_roster.csv"
    raw = src.read_bytes()
    inbox = server.folder("t16/in")
    drop(inbox, "roster.csv", raw)
    ch = f"""
name: roster
source: {{type: sftp, {conn_yaml(server)}, path: '{inbox}', glob: '*.csv', format: csv, split: csv_row,
          schedule: 150ms, settle: 100ms}}
routes:
  - name: ehr
    transforms: [{{type: csv_to_v2, layout: csv/pm_roster.yaml}}]
    to: [ehr]
destinations:
  ehr: {{type: file, path: 'out/{{message_id}}.hl7'}}
"""
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", tmp_path / "mappings")
    cfg = config(tmp_path, ch)
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    patients = raw.count(b"\n") - 1
    try:
        await until(lambda: (inbox / "archive/roster.csv").exists())
        await until(lambda: len(list((tmp_path / "out").glob("*.hl7"))) == patients, what=f"{patients} ADT files")
        from hub.transforms.hl7v2 import parse

        got = [parse(p.read_bytes()) for p in (tmp_path / "out").glob("*.hl7")]
        assert {m.get("MSH-9.2") for m in got} == {"A28"}
        assert len({m.get("PID-3.1") for m in got}) == patients
    finally:
        await eng.stop()

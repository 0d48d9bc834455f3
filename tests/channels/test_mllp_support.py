"""Helpers shared by the MLLP tests (no tests here): a raw MLLP client, a scriptable MLLP peer, an engine with one
channel, synthetic messages and a throwaway PKI made with ``cryptography``."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.engine import Engine
from hub.spec import load_config
from support import until, write_config  # noqa: F401 - until is re-exported to the MLLP test files

VT, END = b"\x0b", b"\x1c\r"


def adt(
    control_id: str,
    *,
    mrn: str = "MRN1",
    trigger: str = "A01",
    app: str = "PM",
    extra_msh: str = "",
    version: str = "2.5.1",
) -> bytes:
    """A small synthetic ADT (original mode unless extra_msh sets MSH-15/16)."""
    return (
        f"MSH|^~\\&|{app}|CLINIC|HUB|CLINIC|20260310091500||ADT^{trigger}^ADT_A01|{control_id}|P|{version}{extra_msh}\r"
        f"EVN|{trigger}|20260310091500\r"
        f"PID|1||{mrn}^^^CLINIC^MR||SAMPLE^PAT||19800101|F\r"
        "PV1|1|O|CLINIC^101^1\r"
    ).encode()


class Client:
    """A bare MLLP client written for the tests (independent of hub.channels.mllp)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", **kw: Any) -> Client:
        r, w = await asyncio.open_connection(host, port, **kw)
        return cls(r, w)

    async def send(self, payload: bytes, timeout: float = 10.0) -> bytes:
        self.writer.write(VT + payload + END)
        return await self.read(timeout)

    async def read(self, timeout: float = 10.0) -> bytes:
        data = await asyncio.wait_for(self.reader.readuntil(END), timeout)
        assert data[:1] == VT, data[:20]
        return data[1:-2]

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF) within the timeout."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionError, asyncio.IncompleteReadError):
            return True

    def close(self) -> None:
        self.writer.close()


def msa(ack: bytes) -> list[str]:
    """The MSA fields of an ACK: [code, control id, ...]."""
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA|"):
            return seg.decode("latin-1").split("|")[1:]
    raise AssertionError(f"no MSA in {ack!r}")


def segment(ack: bytes, name: str) -> str | None:
    for seg in ack.split(b"\r"):
        if seg.startswith(name.encode() + b"|"):
            return seg.decode("latin-1")
    return None


HUB = "home: {home}\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\n"


def mllp_channel(source: str = "", *, filters: str = "", destinations: str = "", routes: str = "") -> str:
    return f"""
name: c
source: {{type: mllp, listen: "127.0.0.1:0"{", " + source if source else ""}}}
{filters}
routes:
{routes or "  - {name: all, to: [out]}"}
destinations:
{destinations or "  out: {type: memory}"}
"""


async def start_engine(tmp_path: Path, store_url: str, channels: dict[str, str]) -> Engine:
    folder = tmp_path / f"cfg{time.monotonic_ns()}"
    cfg = load_config(write_config(folder, HUB.format(url=store_url, home=tmp_path), channels))
    assert not cfg.problems, cfg.problems
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    return eng


# A `python` transform that holds its message until the test releases it (the pipeline thread waits, the loop
# must not): {type: python, function: "test_mllp_support:hold"}.
HOLD_ENTERED = threading.Event()
HOLD_RELEASE = threading.Event()


def hold(message: Any) -> Any:
    HOLD_ENTERED.set()
    HOLD_RELEASE.wait(20)
    return message


# ---------------------------------------------------------------------------------------------- a scriptable peer
@dataclass
class Peer:
    """An MLLP receiver for destination tests. ``script`` decides each answer from (n, control id):
    'AA'/'AE'/'AR'/'CA' → that ACK; 'wrong' → an AA for another control id; 'silent' → no answer;
    'close' → close the connection without answering; 'garbage' → a frame that is not HL7."""

    script: Callable[[int, str], str] = lambda n, cid: "AA"
    received: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self, port: int = 0, **kw: Any) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, reuse_address=True, **kw)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                data = await reader.readuntil(END)
                payload = data[data.index(VT) + 1 : -2]
                self.received.append(payload)
                header = payload.split(b"\r", 1)[0].decode("latin-1").split("|")
                cid = header[9] if len(header) > 9 else ""
                what = self.script(len(self.received), cid)
                if what == "silent":
                    continue
                if what == "close":
                    writer.close()
                    return
                if what == "garbage":
                    writer.write(VT + b"hello" + END)
                    continue
                code = "AA" if what == "wrong" else what
                acked = "SOMETHING-ELSE" if what == "wrong" else cid
                ack = (
                    f"MSH|^~\\&|LAB|LAB|HUB|CLINIC|20260310091500||ACK^O01^ACK|A{len(self.received)}|P|2.5.1\r"
                    f"MSA|{code}|{acked}\r"
                )
                if code not in ("AA", "CA"):
                    ack += "ERR||PID^1^3|101^Required field missing^HL70357|E||||the lab needs an MRN\r"
                writer.write(VT + ack.encode() + END)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        """Stop like a killed process: refuse new connections and drop the open ones."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()


# ---------------------------------------------------------------------------------------------- throwaway PKI
@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # signed by another CA
    rogue_key: Path


def make_pki(folder: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: Any, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    def write_cert(cert: Any, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(cn: str, issuer: tuple[Any, Any], usage: Any, server: bool) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer[1].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()), critical=False)
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, b.sign(issuer[0], hashes.SHA256())

    root = ca("hub test CA")
    other = ca("someone else's CA")
    skey, scert = leaf("localhost", root, ExtendedKeyUsageOID.SERVER_AUTH, True)
    ckey, ccert = leaf("lab-interface", root, ExtendedKeyUsageOID.CLIENT_AUTH, False)
    rkey, rcert = leaf("intruder", other, ExtendedKeyUsageOID.CLIENT_AUTH, False)
    return Pki(
        ca=write_cert(root[1], folder / "ca.crt"),
        server_cert=write_cert(scert, folder / "server.crt"),
        server_key=write_key(skey, folder / "server.key"),
        client_cert=write_cert(ccert, folder / "client.crt"),
        client_key=write_key(ckey, folder / "client.key"),
        rogue_cert=write_cert(rcert, folder / "rogue.crt"),
        rogue_key=write_key(rkey, folder / "rogue.key"),
    )

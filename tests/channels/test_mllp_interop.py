"""Interop with an MLLP implementation no one here wrote: python-hl7 (PyPI ``hl7``) — its ``mllp_send`` command and
``MLLPClient`` send to the hub's listener; the hub's sender delivers to its asyncio server (``hl7.mllp``)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from test_mllp_support import adt, mllp_channel, start_engine, until

from hub.channels.mllp import normalise_segments
from hub.store import SearchQuery
from support import SAMPLES, need_peer

hl7 = pytest.importorskip("hl7", reason="python-hl7 (PyPI hl7) is a test dependency")
import hl7.client  # noqa: E402,F811 - the client module, after the skip check

# Sample messages of every kind the example clinic exchanges (they ask for enhanced-mode acknowledgement).
KINDS = [
    "adt_a01",
    "adt_a04",
    "adt_a08",
    "adt_a40",
    "orm_o01",
    "oml_o21",
    "oru_r01",
    "rde_o11",
    "siu_s12",
    "vxu_v04",
    "mdm_t02",
    "dft_p03",
]


def sample(name: str, *, original_mode: bool = False) -> bytes:
    raw = normalise_segments((SAMPLES / "hl7v2" / f"{name}.hl7").read_bytes()).rstrip(b"\r") + b"\r"
    if original_mode:  # MSH-15/16 empty: original acknowledgement mode (AA/AE/AR)
        head, rest = raw.split(b"\r", 1)
        fields = head.split(b"|")
        fields[14:16] = [b"", b""]
        raw = b"|".join(fields) + b"\r" + rest
    return raw


def control_id(raw: bytes) -> str:
    return raw.split(b"\r", 1)[0].split(b"|")[9].decode()


def msas(output: bytes) -> list[list[str]]:
    segs = output.replace(b"\n", b"\r").split(b"\r")
    return [s.decode("latin-1").split("|")[1:3] for s in segs if s.startswith(b"MSA|")]


def mllp_send_command() -> list[str]:
    exe = Path(sys.executable).with_name("mllp_send")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mllp_send")
    need_peer(found is not None, "python-hl7's mllp_send command is not installed")
    return [found]  # type: ignore[list-item]


async def test_mllp_send_command_gets_aa_for_every_message(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        port = eng.sources["c"].port
        messages = [sample(k, original_mode=True) for k in KINDS]
        # --loose: a plain file of messages (LF line ends are fine), split on each MSH
        loose = tmp_path / "messages.hl7"
        loose.write_bytes(b"\n".join(m.replace(b"\r", b"\n") for m in messages))
        proc = await asyncio.create_subprocess_exec(
            *mllp_send_command(),
            "--loose",
            "-f",
            str(loose),
            "-p",
            str(port),
            "127.0.0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert msas(out) == [["AA", control_id(m)] for m in messages]
        # an MLLP-framed file, as exported by another engine (mllp_send's stdin mode is broken on Python 3: it reads
        # text and concatenates bytes); enhanced mode as the samples ask → CA
        framed = tmp_path / "framed.mllp"
        framed.write_bytes(b"".join(b"\x0b" + sample(k) + b"\x1c\r" for k in KINDS[:4]))
        proc = await asyncio.create_subprocess_exec(
            *mllp_send_command(),
            "-f",
            str(framed),
            "-p",
            str(port),
            "127.0.0.1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert msas(out) == [["CA", control_id(sample(k))] for k in KINDS[:4]]
        stored = eng.store.search(SearchQuery(channel="c", limit=100))
        assert len(stored) == len(KINDS) + 4 and {r["status"] for r in stored} == {"accepted"}
    finally:
        await eng.stop()


async def test_python_hl7_client_objects(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        port = eng.sources["c"].port

        def talk() -> list[bytes]:
            answers = []
            with hl7.client.MLLPClient("127.0.0.1", port) as client:
                for k in KINDS:
                    answers.append(client.send_message(hl7.parse(sample(k, original_mode=True).decode())))
                answers.append(client.send_message(adt("PYHL7-1").decode()))
            return answers

        answers = await asyncio.to_thread(talk)
        for raw in answers:
            ack = hl7.parse(raw.strip(b"\x0b\x1c\r").decode())  # python-hl7 reads the hub's ACKs
            assert str(ack.segment("MSA")[1]) == "AA"
        assert [str(hl7.parse(a.strip(b"\x0b\x1c\r").decode()).segment("MSA")[2]) for a in answers] == [
            control_id(sample(k)) for k in KINDS
        ] + ["PYHL7-1"]
    finally:
        await eng.stop()


async def test_hub_delivers_to_a_python_hl7_asyncio_server(tmp_path):
    from hl7.mllp import start_hl7_server

    received: list[str] = []

    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                received.append(str(message.segment("MSH")[10]))
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await start_hl7_server(handle, "127.0.0.1", 0, encoding="utf-8")
    port = server.sockets[0].getsockname()[1]
    chan = f"""
name: c
source: {{type: memory, format: hl7v2}}
routes: [{{name: all, to: [lab]}}]
destinations:
  lab: {{type: mllp, address: "127.0.0.1:{port}", queue: {{backoff: {{initial: 50ms, max: 100ms}}}}}}
"""
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": chan})
    try:
        ids = []
        for k in KINDS:
            # as dropped by a system in a file: LF line ends; the hub sends CR as HL7 wants
            r = await eng.sources["c"].push((SAMPLES / "hl7v2" / f"{k}.hl7").read_bytes())
            ids.append(r.results[0].message_id)
        await until(lambda: all(eng.store.delivery_states(m) == ["sent"] for m in ids), timeout=20)
        assert received == [control_id(sample(k)) for k in KINDS]
        d = eng.store.get_message(ids[0])["deliveries"][0]
        assert f"MSA|AA|{control_id(sample(KINDS[0]))}" in d["response"]
    finally:
        await eng.stop()
        server.close()

"""The MLLP listener answers every frame that has an MSH with an ACK that has an MSA, however broken the rest is
(issue 13: bad bytes in the header closed the connection without an answer)."""

from __future__ import annotations

import pytest
from test_mllp_support import Client, adt, mllp_channel, start_engine

from hub.transforms.hl7v2 import parse

GOOD = adt("OK1")


def msa_of(ack: bytes) -> list[str]:
    """MSA fields of an ACK read with its own delimiters (a sender may use another field separator than |)."""
    msg = parse(ack)
    seg = msg.segment("MSA")
    assert seg is not None, ack
    return [msg.get("MSA-1") or "", msg.get("MSA-2") or ""]


BAD_FRAMES = {
    "nul in MSH-18": (GOOD.replace(b"|2.5.1\r", b"|2.5.1||||||UNICODE\x00UTF-8\r"), "AR", "OK1"),
    "superscript in MSH-12": (adt("SUP1", version="\u00b2.5.1"), "AR", "SUP1"),  # 203: not a version
    "idna as MSH-18": (GOOD.replace(b"|2.5.1\r", b"|2.5.1||||||idna\r"), "AA", "OK1"),
    "punycode as MSH-18": (GOOD.replace(b"|2.5.1\r", b"|2.5.1||||||punycode\r"), "AA", "OK1"),
    "letter as MSH-1": (b"MSHA^~\\&|PM|CLINIC\rPID|1\r", "AR", ""),
    "digits after MSH": (GOOD.replace(b"MSH|", b"MSH20|", 1), "AR", ""),
    "nul as MSH-1": (GOOD.replace(b"MSH|", b"MSH\x00|", 1), "AR", ""),
    "latin-1 letter as MSH-1": (GOOD.replace(b"MSH|", b"MSH\xe9^", 1), "AR", ""),
    "MSH alone": (b"MSH", "AR", ""),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_every_frame_with_an_msh_gets_an_ack_with_an_msa(tmp_path, name):
    raw, code, control_id = BAD_FRAMES[name]
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        c = await Client.connect(eng.sources["c"].port)
        ack = await c.send(raw)
        assert msa_of(ack) == [code, control_id]
        # the connection stays open and the next message is served
        assert msa_of(await c.send(adt("NEXT1"))) == ["AA", "NEXT1"]
        c.close()
    finally:
        await eng.stop()

"""``hub send mllp://…``, ``hub validate`` and ``hub messages --control-id`` for messages that came in over MLLP."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from test_mllp_support import Client, adt, mllp_channel, msa, start_engine

from hub.cli import main
from support import SAMPLES

HUB = str(Path(sys.executable).with_name("hub"))


async def run_hub(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        HUB, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_hub_send_prints_each_ack_and_fails_unless_all_accepted(tmp_path):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    try:
        url = f"mllp://127.0.0.1:{eng.sources['c'].port}"
        one = tmp_path / "one.hl7"
        one.write_bytes(adt("S1").replace(b"\r", b"\n"))  # LF line ends, as files have them
        two = tmp_path / "two.hl7"
        two.write_bytes(adt("S2").replace(b"\r", b"\r\n") + b"\r\n\r\n" + adt("S3").replace(b"\r", b"\r\n"))
        batch = SAMPLES / "hl7v2" / "batch_fhs_bhs.hl7"
        code, out = await run_hub("send", url, str(one), str(two), str(batch))
        assert code == 0, out
        lines = out.strip().splitlines()
        assert lines == [
            f"{one}: S1 AA",
            f"{two}#1: S2 AA",
            f"{two}#2: S3 AA",
            f"{batch}#1: BAT00001 AA",
            f"{batch}#2: BAT00002 AA",
            f"{batch}#3: BAT00003 AA",
        ]
        enhanced = SAMPLES / "hl7v2" / "adt_a04.hl7"  # asks for enhanced mode: CA counts as accepted
        bad = tmp_path / "bad.hl7"
        bad.write_bytes(adt("S9").replace(b"|P|2.5.1", b"|P|"))
        code, out = await run_hub("send", url, str(enhanced), str(bad))
        assert code == 1
        assert out.splitlines()[0] == f"{enhanced}: ADT00002 CA"
        assert out.splitlines()[1].startswith(f"{bad}: S9 AR ") and "MSH-12" in out
        code, out = await run_hub("send", "mllp://127.0.0.1:1", str(one))
        assert code == 1 and "cannot connect" in out
    finally:
        await eng.stop()


def test_hub_validate(tmp_path, capsys):
    good = SAMPLES / "hl7v2" / "adt_a04.hl7"
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert f"{good}: hl7v2, 1 message(s): valid" in out  # table warnings are listed but do not fail it

    assert main(["validate", str(SAMPLES / "hl7v2" / "batch_fhs_bhs.hl7")]) == 0
    assert "3 message(s): valid" in capsys.readouterr().out

    bad = tmp_path / "bad.hl7"
    bad.write_bytes(adt("V1").replace(b"PID|1||MRN1^^^CLINIC^MR|", b"PID|1|||"))
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "V1: error: PID-3: required field PID-3 is missing (code 101)" in out and "1 error(s)" in out

    broken = tmp_path / "broken.hl7"
    broken.write_bytes(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X|P|2.5.1\rnot a segment\r")
    assert main(["validate", str(broken)]) == 1
    assert "error:" in capsys.readouterr().out

    text = tmp_path / "letter.txt"
    text.write_text("Dear lab")
    assert main(["validate", str(text)]) == 1
    assert "cannot validate 'raw' content" in capsys.readouterr().out


async def test_hub_messages_finds_a_message_that_came_over_mllp_by_control_id(tmp_path, capsys):
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel()})
    folder = eng.cfg.folder
    try:
        c = await Client.connect(eng.sources["c"].port)
        for i in range(3):
            assert msa(await c.send(adt(f"FIND{i}", mrn=f"PT{i}", trigger="A04")))[0] == "AA"
        c.close()
    finally:
        await eng.stop()
    assert main(["messages", "--config", str(folder), "--control-id", "FIND1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    row = rows[0]
    assert (row["control_id"], row["message_type"], row["patient_id"], row["channel"]) == (
        "FIND1",
        "ADT^A04",
        "PT1",
        "c",
    )
    assert row["source_ref"].startswith("mllp:127.0.0.1:")  # which peer sent it
    assert main(["messages", "--config", str(folder), "--control-id", "FIND2"]) == 0
    assert "FIND2" in capsys.readouterr().out

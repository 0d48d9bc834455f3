"""The hub as a person runs it: `hub run` in its own process, files in, files out, kill -9, restart,
and the operations commands (status, messages, show, replay, prune) on what it stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.cli import main
from support import ROOT, write_config

pytestmark = pytest.mark.slow  # `hub run` and the commands in their own processes: make test, not make unit

HUB = "home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\n"
CHANNEL = """
name: relay
source: {type: file, path: in, glob: "*.txt", schedule: 100ms, settle: 100ms, format: raw}
routes:
  - {name: all, to: [out, copy]}
destinations:
  out: {type: file, path: "out/{source_name}"}
  copy: {type: file, path: "copy/{source_name}", queue: {order_by: MSH-10}}
"""


def start_hub(cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=cfg.parent,
    )


def wait_for(cond, timeout=60.0, proc=None, log=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"hub exited: {log.read_text() if log else ''}")
        time.sleep(0.05)
    raise AssertionError(f"timed out; log:\n{log.read_text()[-3000:] if log else ''}")


@pytest.mark.slow
def test_kill_9_loses_nothing_accepted_and_resumes_in_flight(tmp_path, store_url):
    home = tmp_path
    cfg = write_config(home / "cfg", HUB.format(url=store_url), {"relay": CHANNEL})
    inbox = home / "in"
    inbox.mkdir()
    n = 300
    old = time.time() - 5
    for i in range(n):
        p = inbox / f"m{i:04d}.txt"
        p.write_bytes(f"message {i}\n".encode())
        os.utime(p, (old, old))
    log = home / "hub.log"
    proc = start_hub(cfg, log)
    out = home / "out"
    wait_for(lambda: out.exists() and len(list(out.glob("*.txt"))) >= 20, proc=proc, log=log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("*.txt")))
    assert done_before < n, "the kill should land while work is in flight"

    proc = start_hub(cfg, log)
    try:
        wait_for(
            lambda: (
                len(list(out.glob("*.txt"))) == n
                and len(list((home / "copy").glob("*.txt"))) == n
                and not list(inbox.glob("*.txt"))
            ),
            proc=proc,
            log=log,
        )
        # every file made it, exactly with its content, and each input was stored once
        for i in range(n):
            assert (out / f"m{i:04d}.txt").read_bytes() == f"message {i}\n".encode()
        wait_for(lambda: _status(cfg)["sent"] == 2 * n, proc=proc, log=log)
        st = _status(cfg)
        assert st["received"] == n and st["dead"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]


def _status(cfg: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "hub", "status", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    )
    [ch] = json.loads(r.stdout)
    return {
        "received": ch["received"],
        "sent": sum(d["sent"] for d in ch["destinations"]),
        "dead": sum(d["dead"] for d in ch["destinations"]),
    }


def test_operations_commands(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    cfg = write_config(tmp_path / "cfg", HUB.format(url=url), {"relay": CHANNEL})
    from hub.engine import open_store
    from hub.spec import load_config
    from hub.store import NewDelivery, NewMessage

    store = open_store(load_config(cfg))
    old = time.time() - 40 * 86400
    [a, _b] = store.accept(
        [
            NewMessage(
                "relay",
                b"MSH|one",
                "raw",
                meta={"control_id": "CTRL1", "patient_id": "MRN9", "message_type": "ADT^A04"},
                deliveries=[NewDelivery("out"), NewDelivery("copy", content=b"changed")],
            ),
            NewMessage("relay", b"old one", "raw", received_at=old, meta={"control_id": "CTRL0"}),
        ]
    )
    with store.engine.begin() as c:
        from hub.store.schema import deliveries

        c.execute(
            deliveries.update()
            .where(deliveries.c.id == a.delivery_ids[0])
            .values(status="dead", attempts=3, last_error="peer said no")
        )
    store.close()
    args = ["--config", str(cfg)]

    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "relay" in out and "→ out" in out and "→ copy" in out

    assert main(["messages", "--patient-id", "MRN9", "--json", *args]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["control_id"] for r in rows] == ["CTRL1"] and rows[0]["deliveries"] == {"dead": 1, "queued": 1}
    assert main(["messages", "--status", "dead", *args]) == 0
    assert "CTRL1" in capsys.readouterr().out
    assert main(["messages", "--since", "1d", "--json", *args]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["messages", "--text", "old one", "--json", *args]) == 0
    assert [r["control_id"] for r in json.loads(capsys.readouterr().out)] == ["CTRL0"]

    assert main(["show", str(a.message_id), *args]) == 0
    out = capsys.readouterr().out
    assert "MSH|one" in out and "changed" in out and "peer said no" in out
    assert main(["show", "999", *args]) == 1

    assert main(["replay", "--dead", "--channel", "relay", *args]) == 0
    assert "queued 1 delivery again" in capsys.readouterr().out
    assert main(["replay", *args]) == 2

    assert main(["prune", "--older-than", "30d", *args]) == 0
    assert "pruned 1 message" in capsys.readouterr().out


def test_hub_test_passes_on_the_example_clinic(capsys):
    assert main(["test", "--config", str(ROOT / "config")]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " passed, 0 failed" in out


def test_hub_test_reports_a_failing_case_with_a_diff(clinic, capsys):
    t = clinic / "config" / "channels" / "pm_adt_test.yaml"
    t.write_text(
        t.read_text().replace("ehr_inbox: [{paths: {MSH-5: EHR, MSH-9.2: A04}}]", "ehr_inbox: [{paths: {MSH-5: LAB}}]")
    )
    assert main(["test", "--config", str(clinic / "config")]) == 1
    out = capsys.readouterr().out
    assert "FAIL pm_adt :: A04 goes to the EHR" in out and "MSH-5 is 'EHR', expected 'LAB'" in out


def test_hub_run_names_an_unreachable_store(tmp_path):
    cfg = write_config(
        tmp_path / "cfg",
        "store: {url: 'postgresql+psycopg://postgres@127.0.0.1:1/none'}\nweb: {enabled: false}\n",
        {"relay": CHANNEL},
    )
    r = subprocess.run(
        [sys.executable, "-m", "hub", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "store unavailable" in r.stderr and "127.0.0.1" in r.stderr


def test_scheduled_retention_prunes(tmp_path):
    import asyncio

    from hub.engine import Engine
    from hub.spec import load_config
    from hub.store import NewMessage, SearchQuery

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    cfg = write_config(
        tmp_path / "cfg", HUB.format(url=url) + "retention: {messages: 1d, schedule: 100ms}\n", {"relay": CHANNEL}
    )

    async def go():
        eng = Engine(load_config(cfg))
        await eng.start()
        try:
            eng.store.accept(
                [
                    NewMessage("relay", b"old", "raw", received_at=time.time() - 2 * 86400),
                    NewMessage("relay", b"new", "raw"),
                ]
            )
            for _ in range(100):
                if len(eng.store.search(SearchQuery())) == 1:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await eng.stop()

    assert asyncio.run(go())


def test_the_running_hub_indexes_new_messages_for_text_search(tmp_path):
    """SQLite: `hub run` builds the text search index beside the writes (hub.store.search_index), within a second
    or two of the accept; the search finds the message before and after."""
    import asyncio

    from hub.engine import Engine
    from hub.spec import load_config
    from hub.store import NewMessage, SearchQuery, search_index

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    cfg = write_config(tmp_path / "cfg", HUB.format(url=url), {"relay": CHANNEL})

    async def go() -> tuple[list[int], int, list[int]]:
        eng = Engine(load_config(cfg))
        await eng.start()
        try:
            [a] = eng.store.accept([NewMessage("relay", b"PID|1||ZEBRA-77^^^MRN", "raw")])
            before = [r["id"] for r in eng.store.search(SearchQuery(text="ZEBRA-77"))]
            left = 1
            for _ in range(100):
                left = eng.store.run_read(search_index.unindexed)
                if not left:
                    break
                await asyncio.sleep(0.05)
            after = [r["id"] for r in eng.store.search(SearchQuery(text="ZEBRA-77"))]
            return before, left, after + [a.message_id]
        finally:
            await eng.stop()

    before, left, after = asyncio.run(go())
    assert left == 0
    assert before == after[:1] == after[1:]


def test_replay_reprocesses_a_rejected_message_after_the_mapping_is_fixed(clinic, capsys):
    import asyncio
    import re

    from hub.engine import build, open_store
    from hub.spec import load_config

    cfg_dir = clinic / "config"  # the clinic's store is clinic/var/hub.db (home: ..)
    chan = cfg_dir / "channels" / "pm_adt.yaml"
    chan.write_text(
        chan.read_text().replace(
            "table: codes/pm_patient_class.csv, on_missing: keep", "table: codes/pm_patient_class.csv"
        )
    )
    raw = re.sub(rb"PV1\|1\|[^|]*", b"PV1|1|HOSPICE", (clinic / "tests/samples/hl7v2/adt_a04.hl7").read_bytes())
    store = open_store(load_config(cfg_dir))
    channel = build(load_config(cfg_dir), store=store).channels["pm_adt"]
    [res] = asyncio.run(channel.receive(raw, source_ref="a04.hl7")).results
    store.close()
    assert res.outcome.value == "rejected" and "HOSPICE" in res.reason
    # the analyst adds the code; the operator replays the message
    table = clinic / "mappings/codes/pm_patient_class.csv"
    table.write_text(table.read_text() + "HOSPICE,O,Hospice outpatient\n")
    assert main(["replay", str(res.message_id), "--config", str(cfg_dir)]) == 0
    assert "reprocessed: accepted, 3 deliveries queued" in capsys.readouterr().out
    store = open_store(load_config(cfg_dir))
    got = store.get_message(res.message_id)
    store.close()
    assert got["status"] == "accepted" and got["error"] is None and len(got["deliveries"]) == 3


def test_hub_test_shows_a_batch_destination_its_assembled_payload(tmp_path, capsys):
    chan = """
name: b
source: {type: file, path: in, format: hl7v2}
routes:
  - {name: r, to: [out]}
destinations:
  out: {type: file, path: "out/{now:%H%M%S}.hl7",
    batch: {schedule: 15m, assemble: {type: hl7_batch, sending_app: CLINIC}}}
"""
    write_config(tmp_path / "cfg", "web: {enabled: false}\n", {"b": chan})
    (tmp_path / "cfg" / "channels" / "b_test.yaml").write_text(
        r"""
tests:
  - name: one message becomes a batch file
    input: {text: 'MSH|^~\&|PM|F|EHR|F|20260101||ADT^A08|C1|P|2.5.1'}
    expect:
      outputs:
        out: [{contains: ['FHS|^~\&|CLINIC', 'BTS|1']}]
"""
    )
    assert main(["test", "--config", str(tmp_path / "cfg")]) == 0, capsys.readouterr().out

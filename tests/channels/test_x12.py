"""X12 through a running Engine with a real store (SQLite and PostgreSQL): charges → batched 837s with durable
control numbers, claim status from 999/277CA, 835 → CSV with balancing, 999 acknowledgements."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest

from hub.engine import Engine
from hub.message import Outcome
from hub.spec import load_config
from hub.store.claim_status import ClaimStore
from hub.transforms.x12 import iter_segments, remit_to_rows, validate
from support import ROOT, SAMPLES, write_config

DFT = (SAMPLES / "hl7v2" / "dft_p03.hl7").read_bytes()
X12 = SAMPLES / "x12"


def hub_yaml(url: str, home: Path) -> str:
    return f"store: {{url: '{url}'}}\nweb: {{enabled: false}}\nhome: {home}\nmappings: {ROOT / 'mappings'}\n"


CHARGES = """
name: charges
source: {type: memory, format: hl7v2}
routes:
  - name: claims
    transforms: [{type: x12_claim_check, partner: clearinghouse, kind: P}]
    to: [clearinghouse]
destinations:
  clearinghouse:
    type: file
    path: outbox/837P_{delivery_id}.x12
    batch: {schedule: 1h, max: 100, assemble: {type: x12_837, partner: clearinghouse, kind: P}}
"""

UNCHECKED = """
name: charges
source: {type: memory, format: hl7v2}
routes:
  - {name: claims, to: [clearinghouse]}
destinations:
  clearinghouse:
    type: memory
    batch: {schedule: 1h, assemble: {type: x12_837, partner: clearinghouse, validate: false}}
"""

ACKS = """
name: acks
source: {type: memory, format: x12}
routes:
  - {name: status, to: [claim_status]}
destinations:
  claim_status: {type: claim_status, partner: clearinghouse}
"""

REMITS = """
name: remits
source: {type: memory, format: x12}
routes:
  - name: postings
    transforms: [{type: x12_835_to_csv}]
    to: [pm]
  - name: ack
    transforms: [{type: x12_999, partner: clearinghouse}]
    to: [ack]
destinations:
  pm: {type: file, path: "postings/{message_id}.csv"}
  ack: {type: file, path: "acks/{message_id}.999"}
"""


def dft(visit: str, control: str, *, diagnoses: bool = True) -> bytes:
    raw = DFT.replace(b"V00012399", visit.encode()).replace(b"DFT00001", control.encode())
    if not diagnoses:
        segs = [s for s in raw.split(b"\r") if not s.startswith(b"DG1")]
        segs = [
            s.replace(
                b"E11.9^Type 2 diabetes mellitus without complications^I10~I10^Essential (primary) hypertension^I10",
                b"",
            ).replace(b"E11.9^Type 2 diabetes mellitus without complications^I10", b"")
            for s in segs
        ]
        raw = b"\r".join(segs)
    return raw


def make_cfg(tmp_path: Path, store_url: str, channels: dict[str, str]):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return load_config(write_config(tmp_path / "cfg", hub_yaml(store_url, home), channels))


async def engine(cfg) -> Engine:
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    return eng


def envelope(raw: bytes) -> tuple[str, str, list[str], list[str]]:
    """(ISA13, GS06, [ST02], [CLM01]) of an interchange."""
    isa13 = gs06 = ""
    st, clm = [], []
    for seg in iter_segments(raw):
        if seg.id == "ISA":
            isa13 = seg[13]
        elif seg.id == "GS":
            gs06 = seg[6]
        elif seg.id == "ST":
            st.append(seg[2])
        elif seg.id == "CLM":
            clm.append(seg[1])
    return isa13, gs06, st, clm


async def push_all(eng: Engine, channel: str, items: list[bytes]) -> list[int]:
    ids = []
    for raw in items:
        receipt = await eng.sources[channel].push(raw)
        assert receipt.outcome is Outcome.ACCEPTED, receipt.reasons
        ids.append(receipt.results[0].message_id)
    return ids


@pytest.mark.slow  # two engines, batches on a schedule
async def test_charges_become_one_valid_837_per_batch_with_control_numbers_that_survive_a_restart(tmp_path, store_url):
    cfg = make_cfg(tmp_path, store_url, {"charges": CHARGES})
    outbox = tmp_path / "home" / "outbox"
    eng = await engine(cfg)
    try:
        ids = await push_all(eng, "charges", [dft(f"V{n:04d}", f"C{n}") for n in range(3)])
        worker = eng.workers[("charges", "clearinghouse")]
        assert await worker.flush() == 3
        files = sorted(outbox.glob("*.x12"))
        assert len(files) == 1  # one interchange for the whole batch
        first = files[0].read_bytes()
        assert validate(first) == []  # pyx12 5010: zero errors
        isa13, gs06, st02, clms = envelope(first)
        assert (isa13, gs06, st02) == ("000000001", "1", ["0001"]) and clms == ["V0000", "V0001", "V0002"]
        assert first.count(b"ISA*") == 1 and first.count(b"IEA*") == 1
        rec = ClaimStore(eng.store).for_message(ids[1])
        assert [(c["patient_control_number"], c["status"], c["isa13"], c["st02"], c["partner"]) for c in rec] == [
            ("V0001", "submitted", "1", "1", "clearinghouse")
        ]
        assert rec[0]["events"][0]["source"] == "837"

        await push_all(eng, "charges", [dft("V0003", "C3")])
        assert await worker.flush() == 1
        second = next(f for f in outbox.glob("*.x12") if f not in files).read_bytes()
        assert envelope(second)[:3] == ("000000002", "2", ["0002"])
        assert eng.store.status()["destinations"][("charges", "clearinghouse")].get("sent") == 4
    finally:
        await eng.stop()

    eng = await engine(cfg)  # a restarted hub goes on from the store's numbers
    try:
        await push_all(eng, "charges", [dft("V0004", "C4")])
        assert await eng.workers[("charges", "clearinghouse")].flush() == 1
        done = sorted(outbox.glob("*.x12"), key=lambda p: p.stat().st_mtime_ns)
        third = done[-1].read_bytes()
        assert envelope(third)[:3] == ("000000003", "3", ["0003"])
        assert validate(third) == []
    finally:
        await eng.stop()


async def test_an_unbillable_charge_is_rejected_with_the_reason_and_never_batched(tmp_path, store_url):
    eng = await engine(make_cfg(tmp_path, store_url, {"charges": CHARGES}))
    try:
        receipt = await eng.sources["charges"].push(dft("V0100", "C100", diagnoses=False))
        assert receipt.outcome is Outcome.REJECTED
        reason = receipt.results[0].reason
        assert "no diagnosis" in reason and "V0100" in reason
        stored = eng.store.get_message(receipt.results[0].message_id)
        assert stored["status"] == "rejected" and stored["deliveries"] == [] and "no diagnosis" in stored["error"]
        assert await eng.workers[("charges", "clearinghouse")].flush() == 0
    finally:
        await eng.stop()


async def test_the_assembler_leaves_out_a_charge_it_cannot_bill_and_sends_the_rest(tmp_path, store_url):
    eng = await engine(make_cfg(tmp_path, store_url, {"charges": UNCHECKED}))
    try:
        good, bad = await push_all(eng, "charges", [dft("V0200", "C200"), dft("V0201", "C201", diagnoses=False)])
        assert await eng.workers[("charges", "clearinghouse")].flush() == 1
        sent = eng.destinations[("charges", "clearinghouse")].sent
        assert len(sent) == 1 and envelope(sent[0].raw)[3] == ["V0200"]
        dead = eng.store.get_message(bad)["deliveries"][0]
        assert dead["status"] == "dead" and "no diagnosis" in dead["last_error"]
        assert ClaimStore(eng.store).for_message(bad) == []
        assert [c["status"] for c in ClaimStore(eng.store).for_message(good)] == ["submitted"]
    finally:
        await eng.stop()


def ack_999(gs06: str, st02: str, code: str = "R") -> bytes:
    text = (X12 / "ack_999_rejected.999").read_text()
    text = text.replace("AK1*HC*1001*", f"AK1*HC*{gs06}*").replace("AK2*837*1001*", f"AK2*837*{st02}*")
    if code == "A":
        text = text.replace("IK3*NM1*14*2010*8~\nIK4*2*1065*7*7~\nIK5*R*5~\nAK9*R*1*1*0~", "IK5*A~\nAK9*A*1*1*1~")
        text = text.replace("SE*8*0502", "SE*6*0502")
    return text.encode()


async def test_a_999_rejecting_the_837_marks_its_claims_rejected_visible_in_hub_show(tmp_path, store_url, capsys):
    from hub.cli import main

    cfg = make_cfg(tmp_path, store_url, {"charges": CHARGES, "acks": ACKS})
    eng = await engine(cfg)
    try:
        ids = await push_all(eng, "charges", [dft("V0300", "C300"), dft("V0301", "C301")])
        await eng.workers[("charges", "clearinghouse")].flush()
        # a first batch accepted, so claims move to "acknowledged"; then a 999 rejecting it
        ok = await push_all(eng, "acks", [ack_999("1", "0001", "A")])
        await eng.wait_delivered(ok, timeout=10)
        assert {c["status"] for i in ids for c in ClaimStore(eng.store).for_message(i)} == {"acknowledged"}
        rej = await push_all(eng, "acks", [ack_999("1", "0001")])
        states = await eng.wait_delivered(rej, timeout=10)
        assert states[rej[0]] == ["sent"]
        for i in ids:
            (claim,) = ClaimStore(eng.store).for_message(i)
            assert claim["status"] == "rejected" and "NM102" in claim["status_detail"]
            assert [e["status"] for e in claim["events"]] == ["submitted", "acknowledged", "rejected"]
        response = eng.store.get_message(rej[0])["deliveries"][0]["response"]
        assert "2 rejected" in response and "claim V0300" in response
        # a 999 for another interchange's transaction matches nothing
        other = await push_all(eng, "acks", [ack_999("77", "0077")])
        await eng.wait_delivered(other, timeout=10)
        assert "no claim" in eng.store.get_message(other[0])["deliveries"][0]["response"]
    finally:
        await eng.stop()
    capsys.readouterr()
    assert main(["show", str(ids[0]), "--config", str(tmp_path / "cfg")]) == 0
    out = capsys.readouterr().out
    assert "--- claim V0300 → clearinghouse (837P, charge 227): rejected" in out
    assert "999: rejected — 999 R:" in out
    assert main(["messages", "--claim-status", "rejected", "--config", str(tmp_path / "cfg")]) == 0
    out = capsys.readouterr().out
    assert f"{ids[0]:>8}" in out and f"{ids[1]:>8}" in out and "claim V0301: rejected" in out
    assert main(["messages", "--claim-status", "accepted", "--config", str(tmp_path / "cfg")]) == 0
    assert "no messages" in capsys.readouterr().out


async def test_a_277ca_updates_the_claim_it_names(tmp_path, store_url):
    eng = await engine(make_cfg(tmp_path, store_url, {"charges": CHARGES, "acks": ACKS}))
    try:
        ids = await push_all(eng, "charges", [dft("PCN1001", "C400"), dft("PCN1003", "C401")])
        await eng.workers[("charges", "clearinghouse")].flush()
        ack = await push_all(eng, "acks", [(X12 / "ack_277ca.277").read_bytes()])
        await eng.wait_delivered(ack, timeout=10)
        (one,) = ClaimStore(eng.store).for_message(ids[0])
        assert one["status"] == "accepted" and one["payer_claim_number"] == "PAYERCLM0001"
        (two,) = ClaimStore(eng.store).for_message(ids[1])
        assert two["status"] == "submitted"  # not in the 277CA
        response = eng.store.get_message(ack[0])["deliveries"][0]["response"]
        assert "1 accepted" in response and "not submitted by the hub: PCN1002" in response
    finally:
        await eng.stop()


async def test_835_becomes_posting_rows_and_a_999_and_an_unbalanced_one_is_rejected_and_kept(tmp_path, store_url):
    eng = await engine(make_cfg(tmp_path, store_url, {"remits": REMITS}))
    home = tmp_path / "home"
    try:
        raw = (X12 / "remit_3_claims_plb.835").read_bytes()
        (mid,) = await push_all(eng, "remits", [raw])
        await eng.wait_delivered([mid], timeout=10)
        rows = list(csv.reader(io.StringIO((home / "postings" / f"{mid}.csv").read_text())))
        expected = list(remit_to_rows(raw))
        assert rows[0][:3] == ["Payer", "Payer ID", "Check/EFT Number"]
        assert len(rows) == 1 + len(expected)
        by_header = [dict(zip(rows[0], r, strict=False)) for r in rows[1:]]
        assert [(r["Patient Control Number"], r["Procedure"], r["Line Paid"]) for r in by_header] == [
            (e["patient_control_number"], e["procedure_code"], e["line_paid"]) for e in expected
        ]
        ack = (home / "acks" / f"{mid}.999").read_bytes()
        assert validate(ack) == []
        assert b"AK1*HP*" in ack and b"IK5*A~" in ack
        assert eng.store.get_message(mid)["message_type"] == "835"

        bad = (X12 / "remit_unbalanced.835").read_bytes()
        receipt = await eng.sources["remits"].push(bad)
        assert receipt.outcome is Outcome.REJECTED and "does not balance" in receipt.results[0].reason
        kept = eng.store.get_message(receipt.results[0].message_id)
        assert kept["status"] == "rejected" and kept["raw"] == bad and kept["deliveries"] == []
    finally:
        await eng.stop()


def test_control_numbers_from_the_store_are_per_partner(store):
    from hub.channels.x12 import StoreControlNumbers

    numbers = StoreControlNumbers(store)
    assert [numbers.next("a", "isa") for _ in range(3)] == [1, 2, 3]
    assert numbers.next("b", "isa") == 1 and numbers.next("a", "st") == 1
    store.next_sequence("x12:c:isa")
    store.run_write(
        lambda conn: conn.exec_driver_sql("UPDATE sequences SET value = 999999999 WHERE name = 'x12:c:isa'")
    )
    assert numbers.next("c", "isa") == 1  # ISA13 is nine digits: it wraps


async def test_a_batch_whose_send_failed_is_rewritten_with_new_numbers_and_one_claim_row(tmp_path, store_url):
    chan = """
name: charges
source: {type: memory, format: hl7v2}
routes:
  - {name: claims, to: [clearinghouse]}
destinations:
  clearinghouse:
    type: memory
    fail: retry
    fail_times: 1
    queue: {backoff: {initial: 10ms, max: 10ms}}
    batch: {schedule: 1h, assemble: {type: x12_837, partner: clearinghouse, validate: false}}
"""
    eng = await engine(make_cfg(tmp_path, store_url, {"charges": chan}))
    try:
        (mid,) = await push_all(eng, "charges", [dft("V0500", "C500")])
        worker = eng.workers[("charges", "clearinghouse")]
        assert await worker.flush() == 0  # the send failed: the delivery waits for its retry
        await asyncio.sleep(0.05)
        assert await worker.flush() == 1
        sent = eng.destinations[("charges", "clearinghouse")].sent
        assert envelope(sent[0].raw)[0] == "000000002"  # the failed attempt's ISA13 is not reused
        (claim,) = ClaimStore(eng.store).for_message(mid)
        assert claim["isa13"] == "2" and claim["status"] == "submitted" and len(claim["events"]) == 2
    finally:
        await eng.stop()


NUMBERED = """
name: numbered
source: {type: memory, format: hl7v2}
routes:
  - name: claims
    transforms: [{type: v2_to_x12_837, partner: clearinghouse, kind: P}]
    to: [outbox, copy]
  - name: inpatient          # a later step: an inpatient charge must also make an institutional claim
    when: {path: PV1-2, equals: I}
    transforms: [{type: x12_claim_check, partner: clearinghouse, kind: I}]
    to: [outbox]
destinations:
  outbox: {type: memory}
  copy: {type: memory}
"""

ACK_FIRST = """
name: remits
source: {type: memory, format: x12}
routes:
  - name: ack                # the 999 is written before the 835 is balanced by the next route
    transforms: [{type: x12_999, partner: clearinghouse}]
    to: [ack]
  - name: postings
    transforms: [{type: x12_835_to_csv}]
    to: [pm]
destinations:
  ack: {type: memory}
  pm: {type: memory}
"""


async def test_a_message_rejected_after_its_x12_transform_takes_no_control_number(tmp_path, store_url):
    eng = await engine(make_cfg(tmp_path, store_url, {"numbered": NUMBERED, "remits": ACK_FIRST}))
    try:
        inpatient = dft("V0600", "C600").replace(b"PV1|1|O|", b"PV1|1|I|")
        receipt = await eng.sources["numbered"].push(inpatient)
        assert receipt.outcome is Outcome.REJECTED and "revenue code" in receipt.results[0].reason
        good = await push_all(eng, "numbered", [dft("V0601", "C601"), dft("V0602", "C602")])
        await eng.wait_delivered(good, timeout=10)
        sent = eng.destinations[("numbered", "outbox")].sent
        assert [envelope(m.raw)[:3] for m in sent] == [("000000001", "1", ["0001"]), ("000000002", "2", ["0002"])]
        assert [m.raw for m in eng.destinations[("numbered", "copy")].sent] == [m.raw for m in sent]
        for m in sent:  # trailers repeat the numbers the store gave the headers; the file stays valid
            assert validate(m.raw) == []
            iea = next(s for s in iter_segments(m.raw) if s.id == "IEA")
            ge = next(s for s in iter_segments(m.raw) if s.id == "GE")
            se = next(s for s in iter_segments(m.raw) if s.id == "SE")
            assert (iea[2], ge[2], [se[2]]) == envelope(m.raw)[:3]

        bad = await eng.sources["remits"].push((X12 / "remit_unbalanced.835").read_bytes())
        assert bad.outcome is Outcome.REJECTED and "does not balance" in bad.results[0].reason
        ok = await push_all(eng, "remits", [(X12 / "remit_3_claims_plb.835").read_bytes()])
        await eng.wait_delivered(ok, timeout=10)
        (ack,) = eng.destinations[("remits", "ack")].sent
        # the partner's sequences are shared by everything sent to it: 837, 837, then this 999 — none burnt
        assert envelope(ack.raw)[:3] == ("000000003", "3", ["0003"]) and validate(ack.raw) == []
        assert eng.store.next_sequence("x12:clearinghouse:isa") == 4
    finally:
        await eng.stop()


async def test_a_reprocessed_message_takes_its_control_numbers_from_the_store(tmp_path, store_url, capsys):
    from hub.cli import main
    from hub.engine import open_store

    eng = await engine(make_cfg(tmp_path, store_url, {"numbered": NUMBERED}))
    try:
        inpatient = dft("V0700", "C700").replace(b"PV1|1|O|", b"PV1|1|I|")
        rejected = await eng.sources["numbered"].push(inpatient)
        assert rejected.outcome is Outcome.REJECTED
        mid = rejected.results[0].message_id
    finally:
        await eng.stop()
    fixed = NUMBERED.split("  - name: inpatient")[0] + "destinations:" + NUMBERED.split("destinations:")[1]
    cfg = make_cfg(tmp_path, store_url, {"numbered": fixed})  # the later step is gone
    eng = await engine(cfg)
    try:
        ok = await push_all(eng, "numbered", [dft("V0701", "C701")])
        await eng.wait_delivered(ok, timeout=10)
        assert envelope(eng.destinations[("numbered", "outbox")].sent[0].raw)[0] == "000000001"
    finally:
        await eng.stop()
    assert main(["replay", str(mid), "--config", str(tmp_path / "cfg")]) == 0
    assert "reprocessed: accepted" in capsys.readouterr().out
    store = open_store(cfg)
    try:
        deliveries = store.get_message(mid)["deliveries"]
        assert [envelope(d["content"])[:3] for d in deliveries] == [("000000002", "2", ["0002"])] * 2
    finally:
        store.close()

"""The example clinic end to end with a real MariaDB and a real HTTP server: the PM's appointments table polled by
channel pm_appointments → SIU^S12 / SIU^S15 files in the EHR's scheduling inbox, exactly once across a restart;
a lab result sent over MLLP to channel lab_results → posted as JSON to the PM's REST API with its bearer token.

The hub is :class:`hub.engine.Engine` on a copy of config/, mappings/ and tests/samples/ (the ``clinic`` fixture),
its settings from the environment as an operator gives them (PM_DB_URL, PM_API_URL, PM_API_TOKEN, the MLLP
listens) and its store on SQLite in the test's folder."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import hl7  # python-hl7: an independent reader of the SIU the hub writes
import pymysql
import pytest

from channels.http_peer import Answer, HttpPeer
from conftest import MARIADB, listening
from hub.channels.mllp.sender import ack_summary, send_messages
from hub.engine import Engine
from hub.spec import load_config
from support import SAMPLES, need_peer, until

pytestmark = pytest.mark.slow  # two polls that wait for rows to settle (5 s), a restart

TOKEN = "pm-api-token-synthetic"

APPOINTMENTS = """
CREATE TABLE appointments (
  id INT AUTO_INCREMENT PRIMARY KEY,
  mrn VARCHAR(20) NULL,
  family_name VARCHAR(60) NOT NULL,
  given_name VARCHAR(60) NULL,
  birth_date DATE NULL,
  sex CHAR(1) NULL,
  start_at DATETIME NOT NULL,
  duration_min SMALLINT NOT NULL,
  visit_type VARCHAR(12) NOT NULL,
  visit_type_name VARCHAR(60) NULL,
  provider_npi CHAR(10) NOT NULL,
  provider_family VARCHAR(60) NULL,
  provider_given VARCHAR(60) NULL,
  location VARCHAR(20) NOT NULL,
  room VARCHAR(20) NULL,
  status VARCHAR(12) NOT NULL DEFAULT 'booked',
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
)"""

INSERT = (
    "INSERT INTO appointments (mrn, family_name, given_name, birth_date, sex, start_at, duration_min, visit_type, "
    "visit_type_name, provider_npi, provider_family, provider_given, location, room, status) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
JANE = ("MRN00012345", "DOE", "JANE", "1980-02-14", "F", "2026-03-25 14:00:00", 30, "FOLLOWUP", "Follow-up visit",
        "1234567893", "SMITH", "ROBERT", "FAMMED", "EXAM2", "booked")  # fmt: skip
RICHARD = ("MRN00023456", "ROE", "RICHARD", "1957-11-03", "M", "2026-03-26 09:15:00", 20, "LABREV",
           "Lab results review", "9876543213", "JONES", "ALICE", "FAMMED", "EXAM1", "cancelled")  # fmt: skip
NO_MRN = (None, "POE", "EDGAR", "1990-01-19", "M", "2026-03-27 10:00:00", 45, "NEWPT", "New patient visit",
          "1234567893", "SMITH", "ROBERT", "FAMMED", None, "booked")  # fmt: skip
MARY = ("MRN00034567", "SAMPLE", "MARY", "1975-06-30", "F", "2026-03-30 08:30:00", 15, "PHYS", "Annual physical",
        "9876543213", "JONES", "ALICE", "FAMMED", "EXAM3", "booked")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pm_db() -> Iterator[tuple[str, pymysql.Connection]]:
    """The PM's database on the machine's MariaDB (a unique name, dropped afterwards) with its appointments table:
    (its name, an autocommit connection to it)."""
    need_peer(listening(MARIADB), f"MariaDB is not listening on {MARIADB[0]}:{MARIADB[1]}")
    name = f"hub_test_pm_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    conn = pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="", database=name, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(APPOINTMENTS)
        yield name, conn
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def pm_api() -> Iterator[HttpPeer]:
    """The PM's REST API: answers 201 to a request with the bearer token it knows, 401 to any other."""
    peer = HttpPeer()
    peer.need_bearer = True
    peer.valid.add(TOKEN)
    peer.default = Answer(201, b'{"status":"created"}', {"Content-Type": "application/json"})
    try:
        yield peer
    finally:
        peer.close()


def siu_files(home: Path) -> dict[str, hl7.Message]:
    folder = home / "var" / "outbox" / "ehr_schedule"
    if not folder.is_dir():
        return {}
    out = {}
    for f in sorted(folder.glob("*.hl7")):
        m = hl7.parse(f.read_bytes().decode("utf-8"))
        out[str(m["SCH.F2.R1.C1"])] = m
    return out


def test_appointments_from_mariadb_to_the_ehr_and_results_to_the_pm_api(clinic, pm_db, pm_api, tmp_path, monkeypatch):
    db_name, db = pm_db
    monkeypatch.setenv("PM_DB_URL", f"mysql+pymysql://root@{MARIADB[0]}:{MARIADB[1]}/{db_name}")
    monkeypatch.setenv("PM_DB_PASSWORD", "")
    monkeypatch.setenv("PM_API_URL", f"http://127.0.0.1:{pm_api.server_address[1]}/api")
    monkeypatch.setenv("PM_API_TOKEN", TOKEN)
    monkeypatch.setenv("HUB_STORE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("HUB_WEB_LISTEN", f"127.0.0.1:{free_port()}")
    lab_port = free_port()
    monkeypatch.setenv("LAB_RESULTS_MLLP_LISTEN", f"127.0.0.1:{lab_port}")
    for var in ("PM_MLLP_LISTEN", "CHARGES_MLLP_LISTEN"):
        monkeypatch.setenv(var, f"127.0.0.1:{free_port()}")
    channel = clinic / "config" / "channels" / "pm_appointments.yaml"
    text = channel.read_text(encoding="utf-8")
    assert "  schedule: 30s\n" in text
    channel.write_text(text.replace("  schedule: 30s\n", "  schedule: 1s\n"), encoding="utf-8")  # not 30 s here

    with db.cursor() as cur:
        cur.executemany(INSERT, [JANE, RICHARD, NO_MRN])
        cur.execute("SELECT id, mrn FROM appointments ORDER BY id")
        ids = {mrn: str(i) for i, mrn in cur.fetchall()}

    async def first_run() -> dict[str, int]:
        eng = Engine(load_config(clinic / "config"))
        await eng.start()
        try:
            assert eng.channel_state("pm_appointments") == "running"
            # the rows are younger than 5 s: the query leaves them for a later poll, then takes them
            await until(lambda: len(siu_files(clinic)) == 2, timeout=20, what="two SIU files in the EHR inbox")
            assert eng.peer_state("pm_appointments")["database_error"] is None

            # a result from the lab over MLLP → ACK CA (stored) → JSON posted to the PM's API
            oru = (SAMPLES / "hl7v2" / "oru_r01.hl7").read_bytes()
            [sent] = await send_messages("127.0.0.1", lab_port, [oru], ack_timeout=10)
            assert sent.ack is not None and ack_summary(sent.ack)[0] == "CA", sent  # MSH-15 AL: a commit ACK
            await until(lambda: len(pm_api.seen) == 1, timeout=15, what="the result posted to the PM's API")
            await until(lambda: eng.store.status()["destinations"].get(("lab_results", "pm_api"), {}).get("sent"),
                        timeout=10, what="the delivery marked sent")  # fmt: skip
            return eng.store.status()["channels"]["pm_appointments"]
        finally:
            await eng.stop()

    counts = asyncio.run(first_run())
    assert counts.get("accepted") == 2 and counts.get("rejected") == 1, counts  # the row without an MRN

    files = siu_files(clinic)
    jane, richard = files[ids["MRN00012345"]], files[ids["MRN00023456"]]
    assert str(jane["MSH.F9.R1.C1"]) == "SIU" and str(jane["MSH.F9.R1.C2"]) == "S12"
    assert str(jane["MSH.F9.R1.C3"]) == "SIU_S12" and str(jane["MSH.F12"]) == "2.5.1"
    assert [s[0][0] for s in jane] == ["MSH", "SCH", "TQ1", "PID", "PV1", "RGS", "AIS", "AIL", "AIP"]
    assert str(jane["SCH.F7.R1.C1"]) == "FOLLOWUP"
    assert str(jane["SCH.F11.R1.C4"]) == "20260325140000"
    assert str(jane["SCH.F25.R1.C1"]) == "Booked"
    assert str(jane["PID.F3.R1.C1"]) == "MRN00012345"
    assert str(jane["PID.F5.R1.C1"]) == "DOE" and str(jane["PID.F5.R1.C2"]) == "JANE"
    assert str(jane["PID.F7"]) == "19800214" and str(jane["PID.F8"]) == "F"
    assert str(jane["AIL.F3.R1.C1"]) == "FAMMED" and str(jane["AIL.F3.R1.C2"]) == "EXAM2"
    assert str(jane["AIP.F3.R1.C1"]) == "1234567893" and str(jane["AIP.F3.R1.C2"]) == "SMITH"
    assert str(richard["MSH.F9.R1.C2"]) == "S15" and str(richard["SCH.F25.R1.C1"]) == "Cancelled"
    assert str(richard["PID.F3.R1.C1"]) == "MRN00023456"

    [post] = pm_api.seen
    assert (post.method, post.path) == ("POST", "/api/results")
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["idempotency-key"].startswith("lab-results-")
    doc = json.loads(post.body)
    assert doc["source"] == "clinic-hub" and doc["message_id"] == "ORU00001"
    assert doc["patient"] == {"mrn": "MRN00023456", "family": "ROE", "given": "RICHARD", "birth_date": "1957-11-03",
                              "sex": "male"}  # fmt: skip
    assert doc["order"]["id"] == "ORD448811" and doc["order"]["code"] == "80053"
    assert len(doc["results"]) == 10
    assert doc["results"][0] == {"value_type": "NM", "code": "2345-7", "name": "Glucose [Mass/volume] in Serum or "
                                 "Plasma", "system": "LN", "value": "142", "units": "mg/dL", "range": "70-99",
                                 "flag": "high", "status": "F", "time": "2026-03-16T10:10:00-06:00"}  # fmt: skip
    assert (clinic / "var" / "outbox" / "ehr_results").is_dir()  # the EHR got its copy as before

    # a restart: the cursor is in the store, so only the row added meanwhile is taken — none again, none lost
    with db.cursor() as cur:
        cur.execute(INSERT, MARY)
        mary_id = str(cur.lastrowid)

    async def second_run() -> dict[str, int]:
        eng = Engine(load_config(clinic / "config"))
        await eng.start()
        try:
            await until(lambda: len(siu_files(clinic)) == 3, timeout=20, what="the new row's SIU file")
            await asyncio.sleep(2.5)  # two more polls: nothing else comes
            return eng.store.status()["channels"]["pm_appointments"]
        finally:
            await eng.stop()

    counts = asyncio.run(second_run())
    assert counts.get("accepted") == 3 and counts.get("rejected") == 1, counts
    files = siu_files(clinic)
    assert sorted(files) == sorted([ids["MRN00012345"], ids["MRN00023456"], mary_id])
    assert str(files[mary_id]["PID.F3.R1.C1"]) == "MRN00034567" and str(files[mary_id]["MSH.F9.R1.C2"]) == "S12"
    assert len(list((clinic / "var" / "outbox" / "ehr_schedule").glob("*.hl7"))) == 3
    assert len(pm_api.seen) == 1


def test_without_mariadb_the_channel_runs_and_reports_each_failed_poll(clinic, tmp_path, monkeypatch, caplog):
    """A fresh machine (`make run`): no PM database. The hub starts, every other channel runs, and the channel's
    peers say why its polls fail; it tries again at each poll."""
    monkeypatch.setenv("PM_DB_URL", f"mysql+pymysql://hub@127.0.0.1:{free_port()}/pm")  # nothing listens there
    monkeypatch.setenv("HUB_STORE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    monkeypatch.setenv("HUB_WEB_LISTEN", f"127.0.0.1:{free_port()}")
    for var in ("PM_MLLP_LISTEN", "LAB_RESULTS_MLLP_LISTEN", "CHARGES_MLLP_LISTEN"):
        monkeypatch.setenv(var, f"127.0.0.1:{free_port()}")
    monkeypatch.delenv("PM_API_TOKEN", raising=False)
    channel = clinic / "config" / "channels" / "pm_appointments.yaml"
    channel.write_text(channel.read_text(encoding="utf-8").replace("  schedule: 30s\n", "  schedule: 1s\n"))

    async def run() -> None:
        eng = Engine(load_config(clinic / "config"))
        await eng.start()
        try:
            assert eng.failed == {}
            assert eng.channel_state("pm_appointments") == "running"
            assert eng.channel_state("lab_results") == "running"
            await until(lambda: eng.peer_state("pm_appointments").get("database_error"), timeout=10, what="an error")
            error = eng.peer_state("pm_appointments")["database_error"]
            assert "2003" in error and "Can't connect" in error, error
            assert eng.peer_state("pm_appointments")["database_last_poll"] is None
        finally:
            await eng.stop()

    with caplog.at_level("WARNING", logger="hub.database"):
        asyncio.run(run())
    assert any("pm_appointments: database poll failed" in r.getMessage() for r in caplog.records)

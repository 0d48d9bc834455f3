"""Message content never reaches the logs (issue 13): a transform bug met by the file source, a FHIR delivery whose
conditional URL carries an MRN, a store error whose text could carry the statement's values. All data synthetic."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import DateTime, bindparam, text

from hub.engine import Engine
from hub.errors import StoreError
from hub.spec import load_config
from hub.store import SearchQuery
from support import until, write_config

MRN = "SYNTH-MRN-4711"  # a made-up patient identifier; it must appear in no log line
HUB = "home: ..\nstore: {{url: '{url}'}}\nweb: {{enabled: false}}\npython_path: [py]\n"


def _engine(home: Path, url: str, channel: str) -> Engine:
    return Engine(load_config(write_config(home / "cfg", HUB.format(url=url), {"c": channel})), idle_poll=0.05)


# ---------------------------------------------------------------------------------------------- (a) file source
FILES = """
name: c
source: {type: file, path: in, glob: "*.txt", schedule: "0 0 1 1 *", settle: 0s, format: raw}
routes:
  - {name: out, transforms: [{python: "buggy:transform"}], to: [out]}
destinations:
  out: {type: memory}
"""

BUGGY = """
def transform(message):
    if b"BUG" in message.raw:
        raise ValueError(f"cannot map {message.raw!r}")  # a bug whose text quotes the content
    return message
"""


def _drop(folder: Path, name: str, data: bytes, age: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    t = time.time() - age
    os.utime(folder / name, (t, t))


async def test_a_transform_bug_moves_the_file_aside_logs_no_content_and_the_folder_goes_on(tmp_path, store_url, caplog):
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "buggy.py").write_text(BUGGY)
    eng = _engine(tmp_path, store_url, FILES)
    await eng.start()  # the cron schedule does not fire during the test: the polls below are the only ones
    try:
        _drop(tmp_path / "in", "1-bug.txt", f"BUG PID|{MRN}".encode(), age=20)  # the oldest: first in line
        _drop(tmp_path / "in", "2-ok.txt", b"fine", age=10)
        caplog.set_level(logging.DEBUG)
        src = eng.sources["c"]
        assert await src.poll() == 2  # the failing file does not stop the folder
        assert (tmp_path / "in/done/2-ok.txt").exists() and (tmp_path / "in/error/1-bug.txt").exists()
        [kept] = eng.store.search(SearchQuery(status="error"))
        assert kept["source_ref"] == "1-bug.txt" and MRN in kept["error"]  # the full reason stays in the store
        beside = (tmp_path / "in/error/1-bug.txt.error.txt").read_text()
        assert f"kept as message {kept['id']} with status error" in beside
        assert await src.poll() == 0  # nothing left in place to fail again on every poll
        assert MRN not in caplog.text
        assert "1-bug.txt failed in a transform" in caplog.text
    finally:
        await eng.stop()


# ---------------------------------------------------------------------------------------------- (b) delivery worker
FHIR_OUT = """
name: c
source: {type: memory, format: fhir}
routes:
  - {name: all, to: [ehr]}
destinations:
  ehr: {type: fhir_rest, base_url: "http://ehr.test/fhir",
    queue: {max_attempts: 2, backoff: {initial: 10ms, max: 10ms}}}
"""


async def test_the_worker_logs_no_conditional_url_carrying_an_mrn(tmp_path, store_url, caplog):
    eng = _engine(tmp_path, store_url, FHIR_OUT)
    await eng.start()
    answers = [503, 422]
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        oo = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": "no"}],
        }
        return httpx.Response(answers.pop(0), json=oo, headers={"Content-Type": "application/fhir+json"})

    try:
        eng.destinations[("c", "ehr")].transport = httpx.MockTransport(handler)
        caplog.set_level(logging.DEBUG)
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": "urn:mrn", "value": MRN}],
                        "gender": "female",
                    },
                    "request": {"method": "PUT", "url": f"Patient?identifier=urn:mrn|{MRN}"},
                }
            ],
        }
        receipt = await eng.sources["c"].push(json.dumps(bundle).encode())
        mid = receipt.results[0].message_id
        await until(lambda: eng.store.delivery_states(mid) == ["dead"])
        assert len(seen) == 2 and MRN in seen[0]  # the request did carry it …
        [d] = eng.store.get_message(mid)["deliveries"]
        assert MRN in d["last_error"]  # … and the stored reason keeps it, for `hub show` …
        assert MRN not in caplog.text  # … but no log line does
        assert "RetryableDelivery, HTTP 503" in caplog.text and "PermanentDelivery, HTTP 422" in caplog.text
    finally:
        await eng.stop()


# ---------------------------------------------------------------------------------------------- (c) store errors
def test_a_store_error_names_the_error_and_statement_never_the_values(store, caplog):
    caplog.set_level(logging.DEBUG)
    when = text("SELECT :v AS v").bindparams(bindparam("v", type_=DateTime))
    cast = text("SELECT CAST(:v AS integer)" if store.dialect == "postgresql" else "SELECT :v AS v")
    for run, stmt, params in (
        (store.run_read, when, {"v": MRN}),  # a bind processor refuses it (SQLite) / the server does (PostgreSQL)
        (store.run_write, when, {"v": MRN}),
        (store.run_read, cast, {"v": {"mrn": MRN}}),  # a value the driver cannot bind / a cast the server refuses
    ):
        with pytest.raises(StoreError) as caught:
            run(lambda conn, stmt=stmt, params=params: conn.execute(stmt, params))
        message = str(caught.value)
        assert MRN not in message and "SELECT" in message
        assert "[parameters:" not in str(caught.value.__cause__)  # hide_parameters: SQLAlchemy's own text lists none
        logging.getLogger("hub.test").error("store failed: %s", caught.value)
    assert MRN not in caplog.text

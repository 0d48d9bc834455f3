"""The `database` destination against real PostgreSQL and MariaDB: parameters from message paths, insert, upsert and
stored procedures, one transaction per delivery or per batch, retry or dead by the database's error."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from hub.channels.database import DatabaseDestination, classify_db_error
from hub.engine import check
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message
from hub.spec import load_config
from support import sql, write_config


def pg(url: str) -> bool:
    return url.startswith("postgresql")


def results_table(url: str) -> None:
    sql(
        url,
        "CREATE TABLE results (mrn VARCHAR(20) PRIMARY KEY, family VARCHAR(50) NOT NULL, code VARCHAR(20), "
        "value NUMERIC(10,2), observed TIMESTAMP NULL, msg_id INTEGER, note VARCHAR(200))",
    )


def oru(mrn: str, family: str = "Doe", value: str = "5.4", observed: str = "20260102030405") -> Message:
    raw = (
        f"MSH|^~\\&|LAB|CLINIC|HUB|CLINIC|20260102030405||ORU^R01|C{mrn}|P|2.5.1\r"
        f"PID|1||{mrn}^^^CLINIC^MR||{family}^Anna||19800101|F\r"
        f"OBX|1|NM|GLU^Glucose^LN||{value}|mmol/L|||||F|||{observed}\r"
    ).encode()
    return Message(raw, "hl7v2", id=42, channel="lab", meta={"delivery_id": 7})


def destination(url: str, statement, params: dict, **more) -> DatabaseDestination:
    conf = DatabaseDestination.Config(type="database", url=url, statement=statement, params=params, **more)
    return DatabaseDestination(conf, None)  # type: ignore[arg-type]


INSERT = (
    "INSERT INTO results (mrn, family, code, value, observed, msg_id, note) "
    "VALUES (:mrn, :family, :code, :value, :observed, :msg_id, :note)"
)
PARAMS = {
    "mrn": "PID-3.1",
    "family": "PID-5.1",
    "code": "OBX-3.1",
    "value": {"path": "OBX-5", "type": "decimal"},
    "observed": {"path": "OBX-14", "type": "datetime"},
    "msg_id": {"message": "id"},
    "note": {"value": "from the hub"},
}


async def test_insert_with_values_from_hl7_paths_and_the_envelope(db_url):
    results_table(db_url)
    d = destination(db_url, INSERT, PARAMS)
    try:
        assert await d.send(oru("M1")) == "1 row"
        assert await d.send(oru("M2", value="")) == "1 row"  # an empty value is NULL
    finally:
        await d.close()
    rows = sql(db_url, "SELECT mrn, family, code, value, observed, msg_id, note FROM results ORDER BY mrn")
    assert [r[:4] for r in rows] == [("M1", "Doe", "GLU", Decimal("5.40")), ("M2", "Doe", "GLU", None)]
    assert rows[0][4] == datetime(2026, 1, 2, 3, 4, 5) and rows[0][5:] == (42, "from the hub")


async def test_upsert_writes_the_newest_values(db_url):
    results_table(db_url)
    upsert = (
        "INSERT INTO results (mrn, family) VALUES (:mrn, :family) "
        + ("ON CONFLICT (mrn) DO UPDATE SET family = EXCLUDED.family" if pg(db_url) else
           "ON DUPLICATE KEY UPDATE family = VALUES(family)")
    )  # fmt: skip
    d = destination(db_url, upsert, {"mrn": "PID-3.1", "family": "PID-5.1"})
    try:
        await d.send(oru("M1", family="Old"))
        await d.send(oru("M1", family="New"))
    finally:
        await d.close()
    assert sql(db_url, "SELECT mrn, family FROM results") == [("M1", "New")]


async def test_a_stored_procedure(db_url):
    results_table(db_url)
    if pg(db_url):
        sql(db_url, "CREATE PROCEDURE record_result(m VARCHAR, f VARCHAR) LANGUAGE SQL AS $$ "
            "INSERT INTO results (mrn, family, note) VALUES (m, f, 'by procedure') $$")  # fmt: skip
    else:
        sql(db_url, "CREATE PROCEDURE record_result(m VARCHAR(20), f VARCHAR(50)) "
            "INSERT INTO results (mrn, family, note) VALUES (m, f, 'by procedure')")  # fmt: skip
    d = destination(db_url, "CALL record_result(:mrn, :family)", {"mrn": "PID-3.1", "family": "PID-5.1"})
    try:
        await d.send(oru("P1"))
    finally:
        await d.close()
    assert sql(db_url, "SELECT mrn, family, note FROM results") == [("P1", "Doe", "by procedure")]


async def test_several_statements_are_one_transaction(db_url):
    results_table(db_url)
    sql(db_url, "CREATE TABLE audit (mrn VARCHAR(20) NOT NULL)")
    d = destination(
        db_url,
        ["INSERT INTO audit (mrn) VALUES (:mrn)", "INSERT INTO results (mrn, family) VALUES (:mrn, :family)"],
        {"mrn": "PID-3.1", "family": "PID-5.1"},
    )
    try:
        assert await d.send(oru("T1")) == "statement 1: 1 row; statement 2: 1 row"
        with pytest.raises(PermanentDelivery):
            await d.send(oru("T1"))  # the second statement breaks the key: the first is rolled back with it
    finally:
        await d.close()
    assert sql(db_url, "SELECT count(*) FROM audit") == [(1,)]


async def test_a_constraint_violation_is_dead_with_the_databases_message(db_url):
    results_table(db_url)
    d = destination(db_url, INSERT, PARAMS)
    try:
        await d.send(oru("D1"))
        with pytest.raises(PermanentDelivery) as e:
            await d.send(oru("D1"))
        assert str(e.value).startswith("IntegrityError")
        assert ("duplicate key value" in str(e.value)) if pg(db_url) else ("Duplicate entry" in str(e.value))
        assert e.value.response == str(e.value)
        with pytest.raises(PermanentDelivery, match="IntegrityError"):  # NOT NULL
            await d.send(oru("D2", family=""))
        with pytest.raises(PermanentDelivery, match="parameter value: not a decimal"):
            await d.send(oru("D3", value="high"))
    finally:
        await d.close()


async def test_a_returning_statement_answers_with_its_row(pg_url):
    sql(pg_url, "CREATE TABLE ids (id SERIAL PRIMARY KEY, mrn VARCHAR(20))")
    d = destination(pg_url, "INSERT INTO ids (mrn) VALUES (:mrn) RETURNING id", {"mrn": "PID-3.1"})
    try:
        assert await d.send(oru("R1")) == '{"id": 1}'
    finally:
        await d.close()


async def test_an_unreachable_database_retries():
    d = destination(
        "postgresql+psycopg://postgres@127.0.0.1:9/none", "INSERT INTO x VALUES (:mrn)", {"mrn": "PID-3.1"},
        timeout="2s",
    )  # fmt: skip
    try:
        with pytest.raises(RetryableDelivery, match="OperationalError"):
            await d.send(oru("X"))
    finally:
        await d.close()


async def test_a_lock_timeout_retries(db_url):
    """A row held by another transaction: PostgreSQL's lock_timeout (55P03), MariaDB's innodb_lock_wait_timeout
    (1205) — retried, not dead."""
    results_table(db_url)
    sql(db_url, "INSERT INTO results (mrn, family) VALUES ('L1', 'Held')")
    args = {"options": "-c lock_timeout=500"} if pg(db_url) else {"init_command": "SET innodb_lock_wait_timeout=1"}
    d = destination(
        db_url, "UPDATE results SET family = :family WHERE mrn = :mrn", {"mrn": "PID-3.1", "family": "PID-5.1"},
        connect_args=args,
    )  # fmt: skip
    holder = create_engine(db_url)
    conn = holder.connect()
    trans = conn.begin()
    conn.execute(text("UPDATE results SET family = 'Holder' WHERE mrn = 'L1'"))
    try:
        with pytest.raises(RetryableDelivery) as e:
            await d.send(oru("L1"))
        assert ("55P03" in str(e.value)) if pg(db_url) else ("1205" in str(e.value))
    finally:
        trans.rollback()
        conn.close()
        holder.dispose()
        await d.close()


async def test_a_deadlock_retries(db_url):
    """A real deadlock between the destination and another transaction: the one the database picks retries."""
    results_table(db_url)
    sql(db_url, "INSERT INTO results (mrn, family) VALUES ('A', 'a'), ('B', 'b')")
    d = destination(
        db_url,
        ["UPDATE results SET family = :family WHERE mrn = 'A'", "UPDATE results SET family = :family WHERE mrn = 'B'"],
        {"family": "PID-5.1"},
    )
    other = create_engine(db_url)
    conn = other.connect()
    trans = conn.begin()
    conn.execute(text("UPDATE results SET family = 'x' WHERE mrn = 'B'"))  # holds B; the destination takes A first
    errors: list[BaseException] = []

    def take_a_later() -> None:
        import time

        time.sleep(0.5)  # the destination now holds A and waits for B
        try:
            conn.execute(text("UPDATE results SET family = 'x' WHERE mrn = 'A'"))
            trans.commit()
        except Exception as e:
            errors.append(e)
            trans.rollback()

    t = threading.Thread(target=take_a_later)
    t.start()
    try:
        try:
            await d.send(oru("Z"))
            outcome: BaseException | None = None
        except RetryableDelivery as e:
            outcome = e
        await asyncio.to_thread(t.join)
        # one of the two was chosen as the victim; when it is the destination it retries
        assert outcome is not None or errors
        if outcome is not None:
            assert "40P01" in str(outcome) or "1213" in str(outcome)
        else:
            assert isinstance(classify_db_error(errors[0]), RetryableDelivery)
    finally:
        conn.close()
        other.dispose()
        await d.close()


async def test_batch_transaction_keeps_those_before_a_failure_and_stops_there(db_url):
    results_table(db_url)
    sql(db_url, "INSERT INTO results (mrn, family) VALUES ('B3', 'taken')")
    d = destination(db_url, INSERT, PARAMS, transaction="batch")
    try:
        out = await d.send_many([oru("B1"), oru("B2"), oru("B3"), oru("B4")])
        assert out[:2] == ["1 row", "1 row"] and isinstance(out[2], PermanentDelivery) and len(out) == 3
        out = await d.send_many([oru("B4"), oru("B5")])
        assert out == ["1 row", "1 row"]
        out = await d.send_many([oru("B6"), oru("B7", value="x"), oru("B8")])  # a value that cannot be bound
        assert out[0] == "1 row" and isinstance(out[1], PermanentDelivery) and len(out) == 2
    finally:
        await d.close()
    assert sql(db_url, "SELECT mrn FROM results ORDER BY mrn") == [(m,) for m in ("B1", "B2", "B3", "B4", "B5", "B6")]


async def test_json_paths(pg_url):
    """`$.patient.mrn` in a JSON message, read by the json document (hub.transforms.document)."""
    sql(pg_url, "CREATE TABLE p (mrn VARCHAR(20), born DATE, tags TEXT, n INTEGER)")
    d = destination(
        pg_url,
        "INSERT INTO p VALUES (:mrn, :born, :tags, :n)",
        {
            "mrn": "$.patient.mrn",
            "born": {"path": "$.patient.birth", "type": "date"},
            "tags": {"path": "$.tags", "type": "json"},
            "n": {"path": "$.items[1].n", "type": "int"},
        },
    )
    body = b'{"patient": {"mrn": "J1", "birth": "1980-02-03"}, "tags": ["a", "b"], "items": [{"n": 1}, {"n": 2}]}'
    try:
        await d.send(Message(body, "json"))
    finally:
        await d.close()
    [(mrn, born, tags, n)] = sql(pg_url, "SELECT * FROM p")
    assert (mrn, str(born), n, tags) == ("J1", "1980-02-03", 2, '["a","b"]')


def test_values_are_converted():
    from hub.channels.database import _convert

    assert _convert("20260102", "date").isoformat() == "2026-01-02"
    assert _convert("202601020304-0500", "datetime") == datetime(2026, 1, 2, 3, 4, tzinfo=timezone(-timedelta(hours=5)))
    assert _convert("2026-01-02T03:04:05+00:00", "datetime") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert _convert("Y", "bool") is True and _convert("0", "bool") is False
    assert _convert(7, "text") == "7" and _convert("12", "int") == 12


# ---------------------------------------------------------------------------------------------- hub check
def problems(tmp_path: Path, dest: dict) -> list[str]:
    ch = {
        "name": "lab",
        "source": {"type": "memory"},
        "routes": [{"name": "all", "to": ["db"]}],
        "destinations": {"db": dest},
    }
    cfg = load_config(write_config(tmp_path / "chk", "web: {enabled: false}\n", {"lab": yaml.safe_dump(ch)}))
    return [str(p) for p in check(cfg)]


DEST = {"type": "database", "url": "postgresql+psycopg://hub@db/w", "statement": "INSERT INTO t VALUES (:a, :b)"}


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"params": {"a": "PID-3.1"}}, "the statement's :b not in params"),
        ({"params": {"a": "PID-3.1", "b": "PID-5", "c": "PID-7"}}, "params c not used by the statement"),
        ({"params": {"a": "PID-3.1", "b": {"path": "PID-5", "value": 1}}}, "exactly one of path, message or value"),
        ({"params": {"a": "PID-3.1", "b": {"message": "nope"}}}, "params.b"),
        ({"params": {"a": "PID-3.1", "b": "PID-5"}, "transaction": "all"}, "transaction"),
        ({"params": {"a": "PID-3.1", "b": "PID-5"}, "url": "oracle+oracledb://u@h/s"}, "pip install 'hub[oracle]'"),
        ({"params": {"a": "PID-3.1", "b": "PID-5"}, "statment": "x"}, "statment"),
    ],
)
def test_hub_check_names_bad_parameters_and_keys(tmp_path, change, complaint):
    found = problems(tmp_path, {**DEST, **change})
    assert any(complaint in p for p in found), found


def test_hub_check_is_clean_for_a_good_destination_and_names_a_missing_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("WAREHOUSE_PASSWORD", raising=False)
    good = {**DEST, "params": {"a": "PID-3.1", "b": {"message": "received_at"}}, "password": "${WAREHOUSE_PASSWORD}"}
    assert any("${WAREHOUSE_PASSWORD} is not defined" in p for p in problems(tmp_path, good))
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "x")
    assert problems(tmp_path, good) == []
    # a PostgreSQL cast of a column is not a parameter; one right after a parameter hides it (SQLAlchemy's rule)
    assert (
        problems(tmp_path, {**good, "statement": "INSERT INTO t SELECT CAST(:a AS text), :b FROM u WHERE u.x::int > 0"})
        == []
    )
    found = problems(tmp_path, {**good, "statement": "INSERT INTO t VALUES (:a::text, :b)"})
    assert any("write CAST(:a AS type)" in p for p in found), found

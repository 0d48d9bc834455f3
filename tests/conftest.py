"""Shared fixtures: stores on SQLite and on the machine's PostgreSQL, databases on its PostgreSQL and MariaDB (the
peers of the database connectors), config folders, the example clinic."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from support import CORPUS, MARIADB, ROOT, SAMPLES, listening, need_peer, write_config  # noqa: F401 - re-exported

PG_HOST = os.environ.get("HUB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HUB_TEST_PG_PORT", "5432"))


def _pg_up() -> bool:
    return listening((PG_HOST, PG_PORT))


@pytest.fixture(scope="session")
def pg_server() -> str:
    need_peer(_pg_up(), f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT}")
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}"


@pytest.fixture
def pg_url(pg_server: str):
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    admin = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_server}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mariadb_url():
    """A fresh MariaDB database for one test (root, empty password, as on this machine), dropped afterwards."""
    need_peer(listening(MARIADB), f"MariaDB is not listening on {MARIADB[0]}:{MARIADB[1]}")
    import pymysql

    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    admin = pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@{MARIADB[0]}:{MARIADB[1]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(params=["postgres", "mariadb"])
def db_url(request) -> str:
    """A fresh database of each kind the database connectors are tested against."""
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "mariadb_url")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    from hub.store import Store

    s = Store(store_url).open()
    yield s
    s.close()


@pytest.fixture
def clinic(tmp_path) -> Path:
    """A copy of the example clinic (config/, mappings/, tests/samples/) in a temporary home."""
    home = tmp_path / "clinic"
    shutil.copytree(ROOT / "config", home / "config")
    shutil.copytree(ROOT / "mappings", home / "mappings")
    shutil.copytree(SAMPLES, home / "tests" / "samples")
    return home

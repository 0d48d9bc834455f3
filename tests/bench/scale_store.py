"""A year of messages for the scale benchmarks (issue 15): :func:`build` makes a store of ``n`` messages, cached.

The store is created and migrated by the store itself (``Store(url).open()``), then filled with fast bulk INSERTs
straight into its tables (not through the channel pipeline): 14 channels like ``config/channels/``, mostly HL7 v2
ADT and ORU with realistic content (patient ids, control ids, names, free-text words), some CSV, FHIR and X12;
message statuses mostly ``accepted`` with some ``filtered``/``rejected``/``error``; deliveries mostly ``sent`` with
some ``queued``/``retry`` (the last day) and ``dead``; one attempt row per attempted delivery; ``received_at``
spread evenly over the year before the build. The rows go in at schema 0003 (the store is migrated down to it) and
the later migrations (counters, search index …) are then upgraded, each back-filling what it adds in bulk; if a
downgrade fails, the rows go in at head instead, through every trigger (slower, same result).

Words for text-search benchmarks (see :data:`WORDS`): ``RARE_WORD`` is in about one message in 100,000,
``COMMON_WORD`` in a few percent, ``ABSENT_WORD`` in none; ``RARE_CONTROL_ID`` / ``RARE_PATIENT_ID`` exist
once; some control ids and patient ids hold ``_`` and ``%`` (``LAB_…``, ``PCT%…``) so that a search must treat them
as literals.

Cached: SQLite under ``var/bench/scale-<n>.db`` (or ``path``); with ``url`` a PostgreSQL database (created if
missing). A marker (a ``.done`` file beside the SQLite file, a ``bench_scale`` table in PostgreSQL) keeps ``n`` and
a fingerprint of the migrations: a store built with other migrations is brought to them by downgrading to 0003 and
upgrading again (each migration back-fills what it adds), and rebuilt if that fails.

Command line: ``python tests/bench/scale_store.py N [--url URL] [--path PATH] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hub.store import Store  # noqa: E402

__all__ = ["build", "default_path", "WORDS", "CHANNELS"]

BENCH_DIR = ROOT / "var" / "bench"
MIGRATIONS = ROOT / "hub" / "store" / "migrations" / "versions"
CHUNK = 10_000
YEAR = 365 * 86400.0
SEED = 15

#: Words and identifiers the benchmarks search for (their frequencies are described in the module docstring).
WORDS = {
    "RARE_WORD": "zebracorn",
    "COMMON_WORD": "stable",
    "ABSENT_WORD": "quuxnotthere",
    "RARE_CONTROL_ID": "CTL-RARE-0001",
    "RARE_PATIENT_ID": "MRN-RARE-0001",
    "UNDERSCORE_CONTROL_ID": "LAB_000123",
    "PERCENT_PATIENT_ID": "PCT%0042",
}

#: channel → (share of messages, kind, destinations); like config/channels/*.yaml.
CHANNELS: dict[str, tuple[float, str, tuple[str, ...]]] = {
    "pm_adt": (0.18, "adt", ("ehr", "archive", "lab_patients")),
    "pm_mllp": (0.16, "adt", ("ehr", "schedule", "lab_patients", "archive")),
    "lab_results": (0.22, "oru", ("ehr", "archive")),
    "lab_orders": (0.08, "orm", ("lab", "archive")),
    "pharmacy_orders": (0.05, "rde", ("pharmacy", "archive")),
    "lab_patient_feed": (0.06, "adt", ("lab",)),
    "pm_to_ehr_fhir": (0.07, "oru", ("ehr_fhir",)),
    "pm_roster": (0.03, "csv", ("ehr", "fhir")),
    "pm_roster_sftp": (0.02, "csv", ("ehr",)),
    "ehr_orders": (0.04, "fhir", ("lab",)),
    "charges_837": (0.04, "dft", ("clearinghouse",)),
    "claim_acks": (0.02, "x12", ("claim_status", "archive")),
    "clearinghouse_inbox": (0.02, "x12", ("postings", "archive")),
    "remittances": (0.01, "x12", ("postings", "acknowledge")),
}

LAST = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "OKAFOR",
    "KOWALSKI",
    "DUBOIS",
    "NAKAMURA",
    "OBRIEN",
    "MULLER",
    "ROSSI",
    "IVANOV",
    "SILVA",
    "CHEN",
]
FIRST = [
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
    "AMARA",
    "YUKI",
    "LUCA",
    "ANYA",
    "OMAR",
    "FATIMA",
    "WEI",
    "PRIYA",
    "MATEO",
    "SOFIA",
    "NOAH",
    "EMMA",
]
NOTE = [
    "patient",
    "stable",
    "afebrile",
    "reports",
    "mild",
    "pain",
    "no",
    "acute",
    "distress",
    "follow",
    "up",
    "in",
    "two",
    "weeks",
    "lab",
    "review",
    "pending",
    "culture",
    "negative",
    "hemoglobin",
    "within",
    "range",
    "glucose",
    "elevated",
    "fasting",
    "recommend",
    "repeat",
    "chest",
    "clear",
    "bilateral",
    "normal",
    "sinus",
    "rhythm",
    "allergies",
    "reviewed",
    "medication",
    "reconciled",
    "discharged",
    "home",
    "ambulating",
    "independently",
    "wound",
    "healing",
    "well",
    "sutures",
    "removed",
    "denies",
    "nausea",
    "vomiting",
    "tolerated",
    "procedure",
    "referral",
    "cardiology",
    "dermatology",
    "orthopedics",
    "nephrology",
    "renal",
    "function",
    "creatinine",
    "potassium",
    "sodium",
    "bicarbonate",
    "urinalysis",
]
TESTS = [
    ("2345-7", "Glucose", "mg/dL", 70, 140),
    ("718-7", "Hemoglobin", "g/dL", 11, 17),
    ("2160-0", "Creatinine", "mg/dL", 0.5, 1.4),
    ("2951-2", "Sodium", "mmol/L", 133, 147),
    ("2823-3", "Potassium", "mmol/L", 3.3, 5.3),
    ("6690-2", "WBC", "10*3/uL", 3.8, 11),
]


def default_path(n: int) -> Path:
    return BENCH_DIR / f"scale-{n}.db"


def fingerprint() -> str:
    h = hashlib.sha1()
    for f in sorted(MIGRATIONS.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ the rows
def _ts(t: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(t))


def _patient(rng: random.Random, i: int) -> str:
    if i == 777:
        return WORDS["RARE_PATIENT_ID"]
    r = rng.random()
    if r < 0.003:
        return f"PCT%{rng.randrange(10_000):04d}"
    if r < 0.006:
        return f"MRN_{rng.randrange(100_000):06d}"
    # a few patients come often, most rarely: 60,000 patients over a year
    return f"MRN{int(60_000 * rng.random() ** 2):07d}"


def _control(channel: str, kind: str, i: int, rng: random.Random) -> str:
    if i == 4242:
        return WORDS["RARE_CONTROL_ID"]
    if channel.startswith("lab_") and rng.random() < 0.2:
        return f"LAB_{i:06d}"
    if rng.random() < 0.002:
        return f"CT%{i}"
    return f"{kind.upper()}{i:09d}"


def _note(rng: random.Random, i: int) -> str:
    words = rng.sample(NOTE, 6)
    if i % 100_000 == 500:
        words.append(WORDS["RARE_WORD"])
    return " ".join(words)


def _raw(kind: str, channel: str, i: int, t: float, ctl: str, pid: str, rng: random.Random) -> tuple[bytes, str, str]:
    """(raw, content_type, message_type)."""
    last, first = rng.choice(LAST), rng.choice(FIRST)
    ts = _ts(t)
    dob = f"19{rng.randrange(30, 99)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    if kind in ("adt", "oru", "orm", "rde", "dft"):
        mtype = {
            "adt": rng.choice(("ADT^A04", "ADT^A08", "ADT^A01", "ADT^A03", "ADT^A08")),
            "oru": "ORU^R01",
            "orm": "ORM^O01",
            "rde": "RDE^O11",
            "dft": "DFT^P03",
        }[kind]
        segs = [
            f"MSH|^~\\&|{'LIS' if kind == 'oru' else 'PM'}|CLINIC|EHR|CLINIC|{ts}||{mtype}|{ctl}|P|2.5.1",
            f"EVN|{mtype[4:]}|{ts}",
            f"PID|1||{pid}^^^CLINIC^MR||{last}^{first}^{rng.choice('ABCDEJKLMQ')}||{dob}|{rng.choice('MF')}|||"
            f"{rng.randrange(1, 9999)} {rng.choice(('MAIN', 'OAK', 'ELM', 'PARK', 'LAKE'))} ST^^SPRINGFIELD^IL^62701",
            f"PV1|1|O|CLINIC^{rng.randrange(100, 130)}^1||||1234567893^WELBY^MARCUS",
        ]
        if kind == "oru":
            segs.append(f"OBR|1|{ctl}|F{i}|CBC^PANEL|||{ts}")
            for k, (code, name, unit, lo, hi) in enumerate(rng.sample(TESTS, 3), 1):
                val = round(rng.uniform(lo * 0.8, hi * 1.2), 1)
                flag = "H" if val > hi else "L" if val < lo else "N"
                segs.append(f"OBX|{k}|NM|{code}^{name}^LN||{val}|{unit}|{lo}-{hi}|{flag}|||F")
            segs.append(f"NTE|1||{_note(rng, i)}")
        elif kind in ("orm", "rde"):
            segs.append(f"ORC|NW|{ctl}|||||||{ts}")
            segs.append(f"NTE|1||{_note(rng, i)}")
        elif kind == "dft":
            segs.append(f"FT1|1|||{ts}||CG|99213^OFFICE VISIT|||1|{rng.randrange(80, 400)}.00")
        else:
            segs.append(f"NTE|1||{_note(rng, i)}")
        return ("\r".join(segs) + "\r").encode(), "hl7v2", mtype
    if kind == "csv":
        line = f"{pid},{last},{first},{dob},{rng.choice('MF')},{_note(rng, i)}\n"
        return b"mrn,last,first,dob,sex,note\n" + line.encode(), "csv", "roster"
    if kind == "fhir":
        body = {
            "resourceType": "ServiceRequest",
            "id": ctl,
            "status": "active",
            "subject": {"identifier": {"value": pid}, "display": f"{first} {last}"},
            "note": [{"text": _note(rng, i)}],
            "authoredOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        }
        return json.dumps(body).encode(), "fhir", "ServiceRequest"
    st = rng.choice(("999", "277", "835"))
    x12 = (
        f"ISA*00*          *00*          *ZZ*CLEARHOUSE     *ZZ*CLINIC         *{ts[2:8]}*{ts[8:12]}*^*00501*"
        f"{i % 1_000_000_000:09d}*0*P*:~GS*HC*CLEARHOUSE*CLINIC*{ts[:8]}*{ts[8:12]}*{i}*X*005010X231A1~"
        f"ST*{st}*0001~BHT*0085*08*{ctl}~NM1*QC*1*{last}*{first}****MI*{pid}~SE*4*0001~GE*1*{i}~IEA*1*{i:09d}~"
    )
    return x12.encode(), "x12", st


def rows(n: int, now: float) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(message row, its delivery rows) for ids 1..n, oldest first."""
    rng = random.Random(SEED)
    names = list(CHANNELS)
    weights = [CHANNELS[c][0] for c in names]
    start = now - YEAR
    step = YEAR / n
    did = 0
    for i in range(1, n + 1):
        channel = rng.choices(names, weights)[0]
        _, kind, dests = CHANNELS[channel]
        t = start + i * step + rng.random() * step * 0.5
        ctl = _control(channel, kind, i, rng)
        pid = _patient(rng, i)
        raw, ctype, mtype = _raw(kind, channel, i, t, ctl, pid, rng)
        r = rng.random()
        status, error, code = "accepted", None, None
        if r < 0.04:
            status = "filtered"
        elif r < 0.06:
            status, error, code = "rejected", "PID-3 is required", "AR"
        elif r < 0.07:
            status, error, code = "error", "mapping failed: no value for PV1-2", "AE"
        dedup = f"{channel}/in/{ctl}.hl7" if channel in ("pm_adt", "lab_orders", "pharmacy_orders") else None
        msg = (
            i,
            channel,
            t,
            status,
            ctype,
            ctl,
            mtype,
            "LIS" if kind == "oru" else "PM",
            "CLINIC",
            pid,
            f"file:{channel}/{i}" if dedup else "10.0.0.7:2575",
            dedup,
            error,
            code,
            None,
            len(raw),
            raw,
        )
        dl: list[tuple[Any, ...]] = []
        if status == "accepted":
            recent = now - t < 86400
            for dest in dests:
                did += 1
                q = rng.random()
                dstatus, att, sent_at, err = "sent", 1, t + 0.05, None
                if recent and q < 0.3:
                    dstatus, att, sent_at = "queued", 0, None
                elif recent and q < 0.4:
                    dstatus, att, sent_at, err = "retry", 2, None, "connection refused"
                elif q < 0.006:
                    dstatus, att, sent_at, err = "dead", 5, None, "AE: unknown patient"
                nxt = t + 60 if dstatus == "retry" else t
                dl.append(
                    (did, i, channel, dest, dest, dstatus, None, att, nxt, t, t if sent_at is None else sent_at,
                     sent_at, err)
                )  # fmt: skip
        yield msg, dl


MSG_COLS = (
    "id, channel, received_at, status, content_type, control_id, message_type, sending_app, sending_facility, "
    "patient_id, source_ref, dedup_key, error, error_code, meta, size, raw"
)
DEL_COLS = (
    "id, message_id, channel, destination, route, status, order_key, attempts, next_at, created_at, updated_at, "
    "sent_at, last_error"
)
ATT_COLS = "delivery_id, number, at, outcome, error, node"


def _attempt(d: tuple[Any, ...]) -> tuple[Any, ...] | None:
    did, _, _, _, _, status, _, att, _, created, _, sent_at, err = d
    if att == 0:
        return None
    outcome = "sent" if status == "sent" else "retry" if status == "retry" else "dead"
    return (did, att, sent_at or created + 1, outcome, err, "bench")


def _fill(cur: Any, n: int, now: float, insert: Any) -> None:
    msgs: list[tuple[Any, ...]] = []
    dels: list[tuple[Any, ...]] = []
    atts: list[tuple[Any, ...]] = []

    def flush() -> None:
        insert(cur, "messages", MSG_COLS, msgs)
        insert(cur, "deliveries", DEL_COLS, dels)
        insert(cur, "attempts", ATT_COLS, atts)
        msgs.clear()
        dels.clear()
        atts.clear()

    t0 = time.time()
    for msg, dl in rows(n, now):
        msgs.append(msg)
        dels.extend(dl)
        atts.extend(a for a in map(_attempt, dl) if a is not None)
        if len(msgs) >= CHUNK:
            flush()
            if msg[0] % (CHUNK * 10) == 0:
                print(f"  {msg[0]:>9,} messages  {time.time() - t0:6.1f}s", file=sys.stderr, flush=True)
    flush()


# ------------------------------------------------------------------------------------------------ SQLite
def _sqlite_insert(cur: sqlite3.Cursor, table: str, cols: str, data: list[tuple[Any, ...]]) -> None:
    if data:
        marks = ", ".join("?" * (cols.count(",") + 1))
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", data)


def _build_sqlite(path: Path, n: int) -> None:
    for suffix in ("", "-wal", "-shm", ".done"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    Store(url).open().close()
    bare = _bare(url)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-200000")
    cur = db.cursor()
    cur.execute("BEGIN")
    _fill(cur, n, time.time(), _sqlite_insert)
    cur.execute("COMMIT")
    db.close()
    if bare:
        _migrate(url, "upgrade", "head")
    _index(url)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _bare(url: str) -> bool:
    """Down to 0003, the schema the rows are written for: the rows go in without the later migrations' triggers
    and indexes, which their upgrade then back-fills in bulk (much faster than row by row). False (the rows go
    in through every trigger) when a downgrade fails."""
    try:
        _migrate(url, "downgrade", "0003")
        return True
    except Exception as exc:
        print(f"  downgrade to 0003 failed ({exc}); filling through the triggers", file=sys.stderr)
        _migrate(url, "upgrade", "head")
        return False


# ------------------------------------------------------------------------------------------------ PostgreSQL
def _pg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_ensure_db(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = _pg_dsn(str(u.set(database="postgres").render_as_string(hide_password=False)))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (u.database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{u.database}"')


def _pg_marker(url: str) -> tuple[int, str] | None:
    import psycopg

    with psycopg.connect(_pg_dsn(url)) as conn:
        if conn.execute("SELECT to_regclass('bench_scale')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT n, fingerprint FROM bench_scale").fetchone()
        return (int(row[0]), str(row[1])) if row else None


def _pg_set_marker(url: str, n: int, fp: str) -> None:
    import psycopg

    with psycopg.connect(_pg_dsn(url)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_scale (n BIGINT NOT NULL, fingerprint TEXT NOT NULL)")
        conn.execute("DELETE FROM bench_scale")
        conn.execute("INSERT INTO bench_scale VALUES (%s, %s)", (n, fp))


def _pg_insert(cur: Any, table: str, cols: str, data: list[tuple[Any, ...]]) -> None:
    if data:
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            for r in data:
                cp.write_row(r)


def _build_pg(url: str, n: int) -> None:
    import psycopg

    _pg_ensure_db(url)
    with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    Store(url).open().close()
    bare = _bare(url)
    with psycopg.connect(_pg_dsn(url)) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            _fill(cur, n, time.time(), _pg_insert)
            for table in ("messages", "deliveries", "attempts"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        conn.commit()
    if bare:
        _migrate(url, "upgrade", "head")
    with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# ------------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any], repeat: int = 5, warm: bool = True) -> float:
    """Median milliseconds of ``repeat`` calls (after one warm-up call): the scale benchmarks' measure."""
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


# ------------------------------------------------------------------------------------------------ cache
def _migrate(url: str, verb: str, rev: str) -> None:
    """``alembic upgrade|downgrade rev`` on the store at ``url``, as the store migrates itself."""
    store = Store(url)
    try:
        store.migrate(rev, downgrade=verb == "downgrade")
    finally:
        store.engine.dispose()


def _remigrate(url: str) -> None:
    """Bring a cached store to the current migrations: down to 0003 (the schema the rows were written for), up to
    head (each migration back-fills what it adds), and build the text search index as the running hub would."""
    _migrate(url, "downgrade", "0003")
    _migrate(url, "upgrade", "head")
    _index(url)
    if not url.startswith("sqlite"):  # the rebuilt indexes have no statistics yet: plans would be guesses
        import psycopg

        with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")


def _index(url: str) -> None:
    """SQLite: build the whole text search index (what the running hub's indexer does beside the writes)."""
    store = Store(url).open()
    try:
        t = time.perf_counter()
        n = store.index_text(rows=5000, step=2.0)
        if n:
            print(f"  text index: {n:,} messages in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    finally:
        store.close()


def build(path: Path | None = None, n: int = 1_000_000, *, url: str | None = None, force: bool = False) -> Path:
    """A store of ``n`` messages, built once and reused: the SQLite file (``path``, default
    ``var/bench/scale-<n>.db``), or the PostgreSQL database ``url``. Returns the SQLite path (with ``url``:
    ``path`` or the default path, which is then not created). Progress goes to stderr."""
    path = Path(path) if path is not None else default_path(n)
    fp = fingerprint()
    t0 = time.time()
    if url is None:
        marker = Path(str(path) + ".done")
        have = marker.read_text().split() if marker.exists() and path.exists() else []
        if not force and have[:1] == [str(n)]:
            if have[1:] == [fp]:
                return path
            print(f"scale store {path}: migrations changed, re-migrating", file=sys.stderr)
            try:
                _remigrate(f"sqlite:///{path}")
                marker.write_text(f"{n} {fp}\n")
                return path
            except Exception as exc:
                print(f"  re-migration failed ({exc}); rebuilding", file=sys.stderr)
        print(f"building scale store {path} with {n:,} messages", file=sys.stderr)
        _build_sqlite(path, n)
        marker.write_text(f"{n} {fp}\n")
    else:
        _pg_ensure_db(url)
        have_pg = _pg_marker(url)
        if not force and have_pg is not None and have_pg[0] == n:
            if have_pg[1] == fp:
                return path
            print("scale store (PostgreSQL): migrations changed, re-migrating", file=sys.stderr)
            try:
                _remigrate(url)
                _pg_set_marker(url, n, fp)
                return path
            except Exception as exc:
                print(f"  re-migration failed ({exc}); rebuilding", file=sys.stderr)
        print(f"building scale store (PostgreSQL) with {n:,} messages", file=sys.stderr)
        _build_pg(url, n)
        _pg_set_marker(url, n, fp)
    print(f"  built in {time.time() - t0:.1f}s", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("n", type=int)
    ap.add_argument("--url", help="a PostgreSQL URL (postgresql+psycopg://…/db); default: SQLite under var/bench/")
    ap.add_argument("--path", type=Path, help="the SQLite file (default var/bench/scale-<n>.db)")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    a = ap.parse_args(argv)
    p = build(a.path, a.n, url=a.url, force=a.force)
    if a.url is None:
        print(f"{p}  {p.stat().st_size / 1e6:.0f} MB")
    else:
        print(a.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``hub`` command line. Every command takes ``--config DIR`` (default ``./config`` or ``$HUB_CONFIG``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Sequence

from hub import __version__
from hub.errors import ConfigError, StoreError
from hub.spec import Config, default_config_dir, load_config, parse_duration

__all__ = ["main"]

def _when(value: str | None) -> float | None:
    """``1h`` (ago), ``30d`` (ago), or an ISO date/time → epoch seconds."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"hub: {value!r} is neither a duration (1h, 30d) nor an ISO date/time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(ts: float | None) -> str:
    if ts is None:
        return "-"
    s = max(0, int(time.time() - ts))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _store(cfg: Config):  # type: ignore[no-untyped-def]
    from hub.engine import open_store

    try:
        return open_store(cfg)
    except StoreError as exc:
        raise SystemExit(f"hub: {exc}") from None


# --------------------------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    from hub.engine import Engine, build

    cfg = _config(args)
    logging.basicConfig(
        level=getattr(logging, cfg.hub.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    problems = build(cfg).problems
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"hub: {len(problems)} problem(s) in {cfg.folder}; not starting", file=sys.stderr)
        return 1
    try:
        asyncio.run(Engine(cfg).run_forever())
    except StoreError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for f, line, msg in exc.problems:
            print(f"{f}:{line}: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from hub.engine import check
    from hub.testrunner import untested_channels

    cfg = _config(args)
    problems = check(cfg)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    missing = untested_channels(cfg)
    note = f"; channels without a _test.yaml: {', '.join(missing)}" if missing else ""
    print(f"ok: {len(cfg.channels)} channel(s) in {cfg.folder}{note}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from hub.testrunner import run_tests

    cfg = _config(args)
    results, problems = run_tests(cfg, args.channel)
    for p in problems:
        print(p)
    for r in results:
        print(f"{'PASS' if r.ok else 'FAIL'} {r.channel} :: {r.name}")
        for f in r.failures:
            print(f"    {f}")
    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or problems or not results else 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    try:
        st = store.status()
    finally:
        store.close()
    names = sorted({c.name for c in cfg.channels} | set(st["channels"]) | {k[0] for k in st["destinations"]})
    if args.json:
        out = []
        for ch in names:
            counts = st["channels"].get(ch, {})
            out.append(
                {
                    "channel": ch,
                    "received": sum(counts.values()),
                    **{k: counts.get(k, 0) for k in ("accepted", "filtered", "rejected", "error")},
                    "destinations": [
                        {
                            "destination": d,
                            **{k: row.get(k, 0) for k in ("queued", "sending", "retry", "sent", "dead")},
                            "oldest_queued": _iso(row.get("oldest_queued")) if row.get("oldest_queued") else None,
                        }
                        for (c, d), row in sorted(st["destinations"].items())
                        if c == ch
                    ],
                }
            )
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'CHANNEL / destination':34} {'received':>8} {'filtered':>8} {'rejected':>8} {'queued':>7} {'retry':>6} {'sent':>8} {'dead':>6} {'oldest':>7}")
    for ch in names:
        counts = st["channels"].get(ch, {})
        rej = counts.get("rejected", 0) + counts.get("error", 0)
        print(f"{ch:34} {sum(counts.values()):>8} {counts.get('filtered', 0):>8} {rej:>8}")
        for (c, d), row in sorted(st["destinations"].items()):
            if c != ch:
                continue
            queued = row.get("queued", 0) + row.get("sending", 0)
            print(
                f"  {'→ ' + d:32} {'':>8} {'':>8} {'':>8} {queued:>7} {row.get('retry', 0):>6} {row.get('sent', 0):>8} "
                f"{row.get('dead', 0):>6} {_age(row.get('oldest_queued')):>7}"
            )
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    from hub.store import SearchQuery

    cfg = _config(args)
    q = SearchQuery(
        channel=args.channel,
        status=args.status,
        since=_when(args.since),
        until=_when(args.until),
        control_id=args.control_id,
        patient_id=args.patient_id,
        message_type=args.type,
        text=args.text,
        destination=args.destination,
        before_id=args.before,
        limit=args.limit,
    )
    store = _store(cfg)
    try:
        rows = store.search(q)
    finally:
        store.close()
    if args.json:
        for r in rows:
            r["received_at"] = _iso(r["received_at"])
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no messages")
        return 0
    print(f"{'ID':>8}  {'RECEIVED':20} {'CHANNEL':20} {'STATUS':9} {'TYPE':10} {'CONTROL ID':20} {'PATIENT':14} DELIVERIES")
    for r in rows:
        dl = " ".join(f"{k}:{v}" for k, v in sorted(r["deliveries"].items())) or "-"
        print(
            f"{r['id']:>8}  {_iso(r['received_at']):20} {r['channel'][:20]:20} {r['status']:9} {(r['message_type'] or '-')[:10]:10} "
            f"{(r['control_id'] or '-')[:20]:20} {(r['patient_id'] or '-')[:14]:14} {dl}"
        )
        if r["error"]:
            print(f"{'':10}{r['error'][:150]}")
    if len(rows) == q.limit:
        print(f"(more: --before {rows[-1]['id']})")
    return 0


def _printable(data: bytes | None) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def cmd_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    try:
        msg = store.get_message(args.id)
    finally:
        store.close()
    if msg is None:
        print(f"hub: no message {args.id}", file=sys.stderr)
        return 1
    if args.raw:
        sys.stdout.buffer.write(msg["raw"])
        return 0
    if args.json:
        def enc(o: Any) -> Any:
            return o.decode("utf-8", errors="replace") if isinstance(o, bytes) else str(o)

        print(json.dumps(msg, indent=2, default=enc))
        return 0
    print(f"message {msg['id']}  channel {msg['channel']}  status {msg['status']}  received {_iso(msg['received_at'])}")
    for k in ("message_type", "control_id", "patient_id", "sending_app", "sending_facility", "source_ref"):
        if msg.get(k):
            print(f"  {k}: {msg[k]}")
    if msg.get("error"):
        print(f"  error: {msg['error']}" + (f" (code {msg['error_code']})" if msg.get("error_code") else ""))
    print(f"--- raw ({msg['content_type']}, {msg['size']} bytes)")
    print(_printable(msg["raw"]))
    for d in msg["deliveries"]:
        print(f"--- delivery {d['id']} → {d['destination']} (route {d['route']}): {d['status']}, {d['attempts']} attempt(s)")
        if d["content"] is not None:
            print(f"  content ({d['content_type']}):")
            print("    " + _printable(d["content"]).replace("\n", "\n    "))
        elif d["status"] != "sent" or msg["raw"]:
            print("  content: the raw message" if d["content_type"] == msg["content_type"] else "  content: (dropped after sending)")
        if d["last_error"]:
            print(f"  last error: {d['last_error']}")
        if d["response"]:
            print(f"  response: {d['response']}")
        for a in d["attempt_log"]:
            detail = a["error"] or a["response"] or ""
            print(f"    attempt {a['number']} at {_iso(a['at'])}: {a['outcome']} {detail}")
    return 0


def _reprocess(cfg: Config, store: Any, ids: list[int]) -> int:
    """Run messages that have no deliveries (rejected, error, filtered) through their channel again."""
    from hub.engine import build
    from hub.message import Message
    from hub.store import NewMessage

    built = build(cfg, store=store)
    n = 0
    for mid in ids:
        row = store.get_message(mid)
        if row is None or row["deliveries"]:
            continue
        channel = built.channels.get(row["channel"])
        if channel is None:
            print(f"hub: message {mid}: channel {row['channel']} is not in {cfg.folder}", file=sys.stderr)
            continue
        p = channel.process(Message(raw=row["raw"], content_type=row["content_type"], channel=channel.name, meta=dict(row["meta"])))
        store.reprocess(
            mid,
            NewMessage(
                channel.name, row["raw"], row["content_type"], status=p.status, meta=p.message.meta,
                error=p.reason if p.status in ("rejected", "error") else None, error_code=p.code,
                deliveries=p.deliveries if p.status == "accepted" else [],
            ),
        )
        print(f"message {mid}: reprocessed: {p.status}" + (f" ({p.reason})" if p.reason else "") + (f", {len(p.deliveries)} deliveries queued" if p.status == "accepted" else ""))
        n += p.status == "accepted"
    return n


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not args.ids and not args.dead:
        print("hub: give message ids, or --dead (with --channel/--destination to narrow it)", file=sys.stderr)
        return 2
    store = _store(cfg)
    try:
        n = store.replay(
            args.ids or None,
            channel=args.channel,
            destination=args.destination,
            statuses=["dead"] if args.dead else None,
        )
        print(f"queued {n} deliver{'y' if n == 1 else 'ies'} again")
        if args.ids:
            n += _reprocess(cfg, store, args.ids)
    finally:
        store.close()
    return 0 if n else 1


def cmd_prune(args: argparse.Namespace) -> int:
    cfg = _config(args)
    older = args.older_than or str(cfg.hub.retention.messages)
    store = _store(cfg)
    try:
        n = store.prune(parse_duration(older), keep_unsent=not args.include_unsent)
    finally:
        store.close()
    print(f"pruned {n} message(s) older than {older}")
    return 0


# --------------------------------------------------------------------------------------------- parser
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hub",
        description="hub — a healthcare integration engine: channels as YAML, a durable store, HL7 v2/FHIR/X12/CSV.",
    )
    p.add_argument("--version", action="version", version=f"hub {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=str(default_config_dir()), metavar="DIR", help="config folder (default: ./config or $HUB_CONFIG)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", parents=[common], help="start the hub on the config folder: sources, delivery workers, retention").set_defaults(fn=cmd_run)
    sub.add_parser("check", parents=[common], help="validate hub.yaml and every channel (file:line: problem; exit 1 if any)").set_defaults(fn=cmd_check)
    t = sub.add_parser("test", parents=[common], help="run every channel's *_test.yaml with in-memory sources and destinations")
    t.add_argument("--channel", help="only this channel")
    t.set_defaults(fn=cmd_test)
    s = sub.add_parser("status", parents=[common], help="per channel and destination: received, filtered, rejected, queued, retry, sent, dead, oldest queued")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    m = sub.add_parser("messages", parents=[common], help="search messages by channel, status, time, control id, patient id, type, text")
    m.add_argument("--channel")
    m.add_argument("--status", help="accepted, filtered, rejected, error, or a delivery status: queued, retry, sent, dead")
    m.add_argument("--destination", help="with --status: deliveries to this destination")
    m.add_argument("--since", help="a duration ago (1h, 7d) or an ISO time")
    m.add_argument("--until", help="a duration ago or an ISO time")
    m.add_argument("--control-id")
    m.add_argument("--patient-id")
    m.add_argument("--type", help="message type: ADT (any trigger) or ADT^A04")
    m.add_argument("--text", help="text contained in the raw message")
    m.add_argument("--limit", type=int, default=50)
    m.add_argument("--before", type=int, metavar="ID", help="page: messages older than this id")
    m.add_argument("--json", action="store_true", help="print one JSON array")
    m.set_defaults(fn=cmd_messages)
    sh = sub.add_parser("show", parents=[common], help="one message: raw, per-destination content, responses, attempts, errors")
    sh.add_argument("id", type=int)
    sh.add_argument("--raw", action="store_true", help="print only the raw bytes")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(fn=cmd_show)
    r = sub.add_parser(
        "replay",
        parents=[common],
        help="queue a message's deliveries again, or every dead delivery of a channel; "
        "a rejected/error/filtered message runs through its channel again (after a fix)",
    )
    r.add_argument("ids", type=int, nargs="*", metavar="ID")
    r.add_argument("--dead", action="store_true", help="every dead delivery (narrow with --channel/--destination)")
    r.add_argument("--channel")
    r.add_argument("--destination")
    r.set_defaults(fn=cmd_replay)
    pr = sub.add_parser("prune", parents=[common], help="delete messages older than a duration (what retention does on schedule)")
    pr.add_argument("--older-than", metavar="DURATION", help="e.g. 30d (default: retention.messages in hub.yaml)")
    pr.add_argument("--include-unsent", action="store_true", help="also delete messages with queued or dead deliveries")
    pr.set_defaults(fn=cmd_prune)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

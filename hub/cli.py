"""The ``hub`` command line. Every command takes ``--config DIR`` (default ``./config`` or ``$HUB_CONFIG``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from hub import __version__
from hub.errors import ConfigError, StoreError
from hub.schedules import parse_size
from hub.spec import Config, default_config_dir, load_config, parse_duration

if TYPE_CHECKING:
    from hub.engine import ServiceStarter

__all__ = ["main"]

# The statuses `hub messages --status` takes (hub.store.records; repeated here so `hub --help` imports no store).
MESSAGE_STATUSES = ("accepted", "filtered", "rejected", "error")
DELIVERY_STATUSES = ("queued", "sending", "retry", "sent", "dead")


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
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """The config folder of ``--config``; none there (no folder, no hub.yaml) ends the command with exit 2 before
    anything is opened or created (a store would otherwise be made in a folder that is not a hub's)."""
    from pathlib import Path

    folder = Path(args.config)
    if not (folder / "hub.yaml").is_file():
        raise SystemExit(
            f"hub: no config in {folder} (no {folder / 'hub.yaml'}); run from a project folder or give --config DIR "
            "(or set $HUB_CONFIG)"
        )
    return load_config(folder)


def _actor() -> str:
    """Who runs a command, for the audit log: ``cli:<OS user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        import os

        return f"cli:uid{os.getuid()}" if hasattr(os, "getuid") else "cli:?"


def _audit(
    store: Any, action: str, *, message_id: int | None = None, channel: str | None = None, **detail: Any
) -> None:
    """Record a command-line action in the audit log the web app writes (hub.store.auth): the OS user as actor,
    ``cli`` as where it came from; never message content. An audit entry that cannot be written stops the command."""
    from hub.store.auth import AuditEntry, AuthStore

    try:
        AuthStore(store).audit(
            AuditEntry(
                username=_actor(),
                action=action,
                message_id=message_id,
                channel=channel,
                detail={k: v for k, v in detail.items() if v is not None},
                remote="cli",
            )
        )
    except StoreError as exc:
        raise SystemExit(f"hub: cannot write the audit log: {exc}") from None


def _store(cfg: Config):  # type: ignore[no-untyped-def]
    from hub.store.repository import open_store

    try:
        return open_store(cfg)
    except StoreError as exc:
        raise SystemExit(f"hub: {exc}") from None


def _services(cfg: Config) -> list[ServiceStarter]:
    """What `hub run` starts beside the channels: the web app (API, dashboard, /metrics) when web.enabled."""
    from hub import web

    return [web.start] if cfg.hub.web.enabled else []


# --------------------------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

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
    # A pipeline on a worker thread (hub.channels.channel) holds the GIL for up to the switch interval each time the
    # event loop, the store writer or its flusher come back from a system call. MLLP round trips over 8 s that
    # include a 2,000-claim 835 on another channel: p99 56 ms at Python's default 5 ms, 20 ms at 1 ms (the plain
    # MLLP bench: no change).
    sys.setswitchinterval(0.001)
    try:
        asyncio.run(Engine(cfg, services=_services(cfg)).run_forever())
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
    problems = sorted(check(cfg), key=lambda p: (p.file, p.line))  # every problem of a file, in its order
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
        names = sorted({c.name for c in cfg.channels} | set(st["channels"]) | {k[0] for k in st["destinations"]})
        states = store.channel_report(names)  # as the running hub last recorded them
    finally:
        store.close()
    if args.json:
        out = []
        for ch in names:
            counts = st["channels"].get(ch, {})
            out.append(
                {
                    "channel": ch,
                    "state": states.get(ch, {}).get("state"),
                    "error": states.get(ch, {}).get("error"),
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
    print(
        f"{'CHANNEL / destination':34} {'received':>8} {'filtered':>8} {'rejected':>8} {'queued':>7} {'retry':>6} "
        f"{'sent':>8} {'dead':>6} {'oldest':>7}"
    )
    for ch in names:
        counts = st["channels"].get(ch, {})
        rej = counts.get("rejected", 0) + counts.get("error", 0)
        print(f"{ch:34} {sum(counts.values()):>8} {counts.get('filtered', 0):>8} {rej:>8}")
        state = states.get(ch, {})
        if state.get("state") in ("paused", "disabled"):
            by = state.get("changed_by") or "?"
            print(f"  {state['state'].upper()} since {_iso(state.get('changed_at'))} by {by}")
        if state.get("state") == "failed":
            print(
                f"  FAILED since {_iso(state.get('at'))}"
                + (f" on {state['node']}" if state.get("node") else "")
                + f": {state.get('error')}"
            )
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
        if getattr(args, "claim_status", None):
            from hub.store.claim_status import ClaimStore

            rows = ClaimStore(store).messages(
                args.claim_status,
                channel=args.channel,
                since=q.since,
                until=q.until,
                patient_id=args.patient_id,
                before_id=args.before,
                limit=args.limit,
            )
        else:
            rows = store.search(q)
        if args.patient_id or args.text or args.control_id:  # a search for a person or for content (as the web's)
            _audit(
                store,
                "search",
                channel=args.channel,
                patient_id=args.patient_id,
                control_id=args.control_id,
                text=bool(args.text) or None,
                claim_status=getattr(args, "claim_status", None),
                results=len(rows),
            )
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
    print(
        f"{'ID':>8}  {'RECEIVED':20} {'CHANNEL':20} {'STATUS':9} {'TYPE':10} {'CONTROL ID':20} {'PATIENT':14} "
        "DELIVERIES"
    )
    for r in rows:
        dl = " ".join(f"{k}:{v}" for k, v in sorted(r["deliveries"].items())) or "-"
        print(
            f"{r['id']:>8}  {_iso(r['received_at']):20} {r['channel'][:20]:20} {r['status']:9} "
            f"{(r['message_type'] or '-')[:10]:10} {(r['control_id'] or '-')[:20]:20} "
            f"{(r['patient_id'] or '-')[:14]:14} {dl}"
        )
        if r["error"]:
            print(f"{'':10}{r['error'][:150]}")
        for c in r.get("claims") or []:  # --claim-status
            print(
                f"{'':10}claim {c['patient_control_number']}: {c['status']}"
                + (f" — {c['status_detail'][:140]}" if c["status_detail"] else "")
            )
    if len(rows) == q.limit:
        print(f"(more: --before {rows[-1]['id']})")
    return 0


def _printable(data: bytes | None) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def _claims_of(store: Any, message_id: int) -> list[dict[str, Any]]:
    """The X12 claims submitted from a message, with their status history (hub.store.claim_status)."""
    from hub.store.claim_status import ClaimStore

    try:
        return ClaimStore(store).for_message(message_id)
    except StoreError:
        return []


def _print_claims(claims: list[dict[str, Any]]) -> None:
    for c in claims:
        print(
            f"--- claim {c['patient_control_number']} → {c['partner']} (837{c['kind']}, charge {c['charge'] or '-'}): "
            f"{c['status']} since {_iso(c['status_at'])}; ISA13 {c['isa13']} GS06 {c['gs06']} ST02 {c['st02']}"
            + (f", payer claim number {c['payer_claim_number']}" if c.get("payer_claim_number") else "")
        )
        for e in c["events"]:
            print(f"    {_iso(e['at'])} {e['source']}: {e['status']}" + (f" — {e['detail']}" if e["detail"] else ""))


def cmd_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    try:
        msg = store.get_message(args.id)
        claims = _claims_of(store, args.id) if msg is not None else []
        if msg is not None:
            _audit(store, "view_raw" if args.raw else "view_message", message_id=args.id, channel=msg["channel"])
    finally:
        store.close()
    if msg is not None and claims:
        msg["claims"] = claims
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
    for w in (msg.get("meta") or {}).get("warnings") or ():
        print(f"  warning: {w}")
    print(f"--- raw ({msg['content_type']}, {msg['size']} bytes)")
    print(_printable(msg["raw"]))
    for d in msg["deliveries"]:
        print(
            f"--- delivery {d['id']} → {d['destination']} (route {d['route']}): {d['status']}, {d['attempts']} "
            "attempt(s)"
        )
        if d["content"] is not None:
            print(f"  content ({d['content_type']}):")
            print("    " + _printable(d["content"]).replace("\n", "\n    "))
        elif d["status"] != "sent" or msg["raw"]:
            print(
                "  content: the raw message"
                if d["content_type"] == msg["content_type"]
                else "  content: (dropped after sending)"
            )
        if d["last_error"]:
            print(f"  last error: {d['last_error']}")
        if d["response"]:  # an HL7 ACK has \r between segments: one line each
            print("  response: " + _printable(d["response"].encode()).replace("\n", "\n            "))
        for a in d["attempt_log"]:
            detail = a["error"] or a["response"] or ""
            print(f"    attempt {a['number']} at {_iso(a['at'])}: {a['outcome']} {detail}")
    _print_claims(msg.get("claims") or [])
    return 0


def _reprocess(cfg: Config, store: Any, ids: list[int]) -> int:
    """Run messages that have no deliveries (rejected, error, filtered) through their channel again."""
    from hub.engine import build

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
        p, _ = channel.reprocess(store, mid, row["raw"], row["content_type"], row["meta"])
        print(
            f"message {mid}: reprocessed: {p.status}"
            + (f" ({p.reason})" if p.reason else "")
            + (f", {len(p.deliveries)} deliveries queued" if p.status == "accepted" else "")
        )
        n += p.status == "accepted"
    return n


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not args.ids and not args.dead:
        print("hub: give message ids, or --dead (with --channel/--destination to narrow it)", file=sys.stderr)
        return 2
    store = _store(cfg)
    try:
        if args.ids:
            missing = [i for i in args.ids if store.get_message(i) is None]
            if missing:
                print(f"hub: no message {', '.join(map(str, missing))}; nothing replayed", file=sys.stderr)
                return 1
        n = store.replay(
            args.ids or None,
            channel=args.channel,
            destination=args.destination,
            statuses=["dead"] if args.dead else None,
        )
        print(f"queued {n} deliver{'y' if n == 1 else 'ies'} again")
        queued = n
        reprocessed = 0
        if args.ids:
            reprocessed = _reprocess(cfg, store, args.ids)
            n += reprocessed
        if args.ids and len(args.ids) == 1:
            row = store.get_message(args.ids[0])
            _audit(
                store,
                "replay",
                message_id=args.ids[0],
                channel=row["channel"] if row else None,
                destination=args.destination,
                queued=queued,
                reprocessed=reprocessed or None,
            )
        else:
            _audit(
                store,
                "replay_many",
                channel=args.channel,
                destination=args.destination,
                message_ids=args.ids or None,
                dead=args.dead or None,
                queued=queued,
                reprocessed=reprocessed or None,
            )
    finally:
        store.close()
    return 0 if n else 1


def cmd_prune(args: argparse.Namespace) -> int:
    cfg = _config(args)
    older = args.older_than or str(cfg.hub.retention.messages)
    max_size = args.max_size if args.max_size is not None else cfg.hub.retention.max_size
    try:
        limit = parse_size(max_size) if max_size is not None else None
    except ValueError as exc:
        print(f"--max-size: {exc}", file=sys.stderr)
        return 2
    store = _store(cfg)
    try:
        n = store.prune(parse_duration(older), keep_unsent=not args.include_unsent, vacuum=False)
        print(f"pruned {n} message(s) older than {older}")
        by_size = 0
        if limit is not None:
            res = store.prune_to_size(limit, vacuum=False)
            by_size = res.pruned
            print(f"pruned {by_size} message(s) to keep the store under {max_size}: now {res.size_after >> 20} MB")
            if res.over:
                print(
                    "warning: the store is still over max_size and only messages with undelivered deliveries "
                    "(queued, sending, retrying, dead) are left to prune",
                    file=sys.stderr,
                )
        if n or by_size or args.vacuum:
            freed = store.vacuum(full=args.vacuum)
            print(f"gave {freed >> 20} MB back to the file system")
        _audit(
            store,
            "prune",
            older_than=older,
            include_unsent=args.include_unsent or None,
            max_size=max_size,
            vacuum=args.vacuum or None,
            pruned=n + by_size,
        )
    finally:
        store.close()
    return 0


def _new_password(args: argparse.Namespace) -> str | None:
    """The password for ``hub user add``: $HUB_PASSWORD, else asked twice on the terminal. Never a default."""
    import getpass
    import os

    if args.no_password:
        return None
    env = os.environ.get("HUB_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise SystemExit(
            "hub: set HUB_PASSWORD (or run on a terminal to be asked; --no-password for a token-only user)"
        )
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("hub: the passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from hub.store.auth import AuthStore

    cfg = _config(args)
    password = _new_password(args) if args.action == "add" else None
    store = _store(cfg)
    try:
        auth = AuthStore(store)
        if args.action == "add":
            try:
                user = auth.add_user(args.name, args.role, password)
            except ValueError as exc:
                print(f"hub: {exc}", file=sys.stderr)
                return 1
            _audit(store, "user_add", target=user.name, role=user.role)
            print(
                f"added {user.name} ({user.role})"
                + ("" if user.has_password else "; token only: make one with `hub user token`")
            )
        elif args.action == "token":
            try:
                token = auth.create_token(
                    args.name, label=args.label, ttl=parse_duration(args.ttl) if args.ttl else None
                )
            except KeyError:
                print(f"hub: no user {args.name!r}", file=sys.stderr)
                return 1
            _audit(store, "token_create", target=args.name, label=args.label)
            print(token)
        else:
            for u in auth.list_users():
                print(
                    f"{u.name:30} {u.role:9} {'disabled' if u.disabled else 'active':9} "
                    f"{'password' if u.has_password else 'token only'}"
                )
    finally:
        store.close()
    return 0


def cmd_channel(args: argparse.Namespace) -> int:
    """Pause, resume, disable or enable a channel on every node sharing the store (applied within a heartbeat)."""
    cfg = _config(args)
    if args.name not in {c.name for c in cfg.channels if c.enabled}:
        print(f"hub: no channel {args.name!r} in {cfg.folder}", file=sys.stderr)
        return 1
    change = {"pause": {"paused": True}, "resume": {"paused": False}, "disable": {"enabled": False}}
    store = _store(cfg)
    try:
        st = store.set_channel_state(args.name, **change.get(args.action, {"enabled": True}), by=_actor())
        _audit(store, args.action, channel=args.name)
    finally:
        store.close()
    state = "disabled" if not st.enabled else "paused" if st.paused else "running"
    print(f"{args.name}: {state} (every running node applies it within {cfg.hub.cluster.heartbeat})")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """``hub send mllp://host:port FILE...``: each message on one connection, one line per ACK; exit 1 unless all
    AA/CA."""
    import asyncio
    from pathlib import Path

    from hub.channels.mllp import (
        MllpTls,
        ack_summary,
        client_context,
        normalise_segments,
        parse_mllp_url,
        send_messages,
    )
    from hub.errors import Hl7ParseError
    from hub.transforms.hl7v2 import split_batch

    try:
        host, port, tls = parse_mllp_url(args.url)
    except ValueError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    payloads: list[bytes] = []
    labels: list[str] = []
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"hub: {name}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        try:
            parts = split_batch(data, check_counts=False)  # one message, several separated by blank lines, or a batch
        except Hl7ParseError as exc:
            print(f"hub: {name}: not HL7 v2: {exc}", file=sys.stderr)
            return 1
        for i, part in enumerate(parts, 1):
            payloads.append(normalise_segments(part.strip(b"\r\n")) + b"\r")
            labels.append(name if len(parts) == 1 else f"{name}#{i}")
    context = None
    if tls or args.tls or args.ca or args.cert:
        try:
            tls_settings = {"ca": args.ca, "cert": args.cert, "key": args.key, "verify": not args.insecure}
            context = client_context(MllpTls.model_validate(tls_settings))
        except (ValueError, OSError) as exc:
            print(f"hub: tls: {exc}", file=sys.stderr)
            return 2
    results = asyncio.run(
        send_messages(
            host,
            port,
            payloads,
            ack_timeout=parse_duration(args.timeout),
            connect_timeout=parse_duration(args.timeout),
            ssl_context=context,
        )
    )
    failed = 0
    for label, r in zip(labels, results, strict=False):
        if r.ack is None:
            failed += 1
            print(f"{label}: - ERROR {r.error}")
            continue
        code, control_id, text = ack_summary(r.ack)
        ok = code in ("AA", "CA")
        failed += not ok
        print(f"{label}: {control_id or '-'} {code or 'ERROR'}" + (f" {text}" if text and not ok else ""))
    return 1 if failed else 0


def _validate_hl7v2(data: bytes, args: argparse.Namespace) -> tuple[int, list[tuple[str, str, bool]]]:
    """HL7 v2: every message of the file (batches split) → (messages, [(which, problem, is_error)])."""
    from hub.errors import Hl7ParseError
    from hub.transforms.hl7v2 import check_basic, parse, split_batch, validate

    try:
        parts = split_batch(data)
    except Hl7ParseError as exc:
        return 0, [("", f"error: {exc}", True)]
    out: list[tuple[str, str, bool]] = []
    for i, part in enumerate(parts, 1):
        which = f"#{i}" if len(parts) > 1 else ""
        try:
            msg = parse(part)
        except Hl7ParseError as exc:
            out.append((which, f"error: {exc.location + ': ' if exc.location else ''}{exc} (code {exc.code})", True))
            continue
        which = f"{which} {msg.control_id or ''}".strip()
        seen = set()
        for issue in [*check_basic(msg), *validate(msg, version=args.hl7_version)]:
            key = (issue.location, issue.message)
            if key in seen:
                continue
            seen.add(key)
            out.append((which, f"{issue}" + (f" (code {issue.code})" if issue.code else ""), issue.severity == "error"))
    return len(parts), out


# detected content type → validator for `hub validate` (content → (message count, problems))
def _validate_x12(data: bytes, args: argparse.Namespace) -> tuple[int, list[tuple[str, str, bool]]]:
    """X12: pyx12's 5010 validation (implementation guides 837P/837I/835/999/277CA …) → (transactions, problems)."""
    from hub.errors import X12ParseError
    from hub.transforms.x12 import iter_segments, validate

    try:
        count = sum(1 for seg in iter_segments(data) if seg.id == "ST")
    except X12ParseError:
        count = 0
    problems = [
        ("", f"{i}" + (f" (code {i.code})" if i.code else ""), i.severity in ("error", "fatal")) for i in validate(data)
    ]
    return count, problems


VALIDATORS: dict[str, Any] = {"hl7v2": _validate_hl7v2, "x12": _validate_x12}


def cmd_validate(args: argparse.Namespace) -> int:
    """``hub validate FILE...``: structure problems of each file, by its detected format; exit 1 if any error."""
    from pathlib import Path

    from hub.message import sniff_content_type

    errors = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"hub: {name}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        fmt = args.format or sniff_content_type(data)
        fn = VALIDATORS.get(fmt)
        if fn is None:
            print(f"{name}: cannot validate {fmt!r} content (known: {', '.join(sorted(VALIDATORS))})")
            errors += 1
            continue
        count, problems = fn(data, args)
        bad = sum(1 for _, _, is_error in problems if is_error)
        errors += bad
        for which, text, _ in problems:
            print(f"{name}{' ' + which if which else ''}: {text}")
        warn = len(problems) - bad
        state = "valid" if not bad else f"{bad} error(s)"
        print(f"{name}: {fmt}, {count} message(s): {state}" + (f", {warn} warning(s)" if warn else ""))
    return 1 if errors else 0


def _convert_v2_to_fhir(raw: bytes, args: argparse.Namespace, ctx: Any) -> tuple[list[str], list[str]]:
    """HL7 v2 (one message or a batch) → FHIR Bundles; (outputs, problems)."""
    from hub.errors import InputError
    from hub.message import Message
    from hub.transforms.fhir.v2_to_fhir import V2ToFhir
    from hub.transforms.fhir.validate import validate
    from hub.transforms.hl7v2 import parse, split_batch

    conv = V2ToFhir(V2ToFhir.Config.model_validate({"type": "v2_to_fhir", "bundle": args.bundle}), ctx)
    outputs, problems = [], []
    for i, part in enumerate(split_batch(raw), 1):
        try:
            if getattr(args, "explain", False):
                outputs.append(_explain_v2_to_fhir(part, conv, i))
                continue
            out = conv(Message(raw=part, content_type="hl7v2", parsed=parse(part)))
        except InputError as exc:
            problems.append(f"message {i}: {exc}" + (f" (at {exc.location})" if exc.location else ""))
            continue
        for w in out.meta.get("warnings") or ():  # values left out (invalid: warn): said, not a failure
            print(f"message {i}: warning: {w}", file=sys.stderr)
        issues = [x for x in validate(out.parsed) if x.severity in ("error", "fatal")]
        problems.extend(f"message {i}: {x}" for x in issues)
        outputs.append(json.dumps(out.parsed.data, indent=2, ensure_ascii=False))
    return outputs, problems


def _explain_v2_to_fhir(part: bytes, conv: Any, i: int) -> str:
    """``--explain``: what each populated v2 component became — the share that reached the Bundle, the
    components no map covers (location and value), the values left out as invalid, and the resources made."""
    from collections import Counter

    from hub.transforms.fhir.v2_to_fhir import explain

    bundle, cov, warnings = explain(part, conv.tables, conv.config)
    reached = sum(1 for _, _, ok in cov if ok)
    made = Counter(e["resource"]["resourceType"] for e in bundle.get("entry") or [])
    lines = [
        f"message {i}: {reached} of {len(cov)} populated components reach the Bundle"
        + (f" ({100 * reached / len(cov):.0f}%)" if cov else ""),
        "  resources: " + (", ".join(f"{n} {t}" for t, n in sorted(made.items())) or "none"),
    ]
    left = [(loc, val) for loc, val, ok in cov if not ok]
    if left:
        lines.append("  not mapped (no row of mappings/fhir covers them):")
        lines.extend(f"    {loc:<16} {val[:60]}" for loc, val in left)
    for w in warnings:
        lines.append(f"  left out: {w}")
    return "\n".join(lines)


def _convert_fhir_to_v2(raw: bytes, args: argparse.Namespace, ctx: Any) -> tuple[list[str], list[str]]:
    """FHIR (a Bundle or a resource) → one HL7 v2 message; (outputs, problems)."""
    from hub.errors import InputError
    from hub.message import Message
    from hub.transforms.fhir.fhir_to_v2 import FhirToV2

    opts: dict[str, Any] = {"type": "fhir_to_v2"}
    if args.trigger:
        opts["adt_trigger"] = args.trigger
    try:
        out = FhirToV2(FhirToV2.Config.model_validate(opts), ctx)(Message(raw=raw, content_type="fhir"))
    except InputError as exc:
        return [], [str(exc) + (f" (at {exc.location})" if exc.location else "")]
    except ValueError as exc:  # pydantic: a bad --trigger
        return [], [str(exc).splitlines()[0]]
    return [out.raw.decode(out.parsed.codec, errors="replace").replace("\r", "\n").rstrip("\n")], []


def _x12_partner(args: argparse.Namespace, ctx: Any) -> Any:
    """--partner, else the only partner of <mappings>/x12/partners.yaml."""
    from pathlib import Path

    from hub.transforms.x12 import load_partners
    from hub.transforms.x12.components import partner_for

    name = getattr(args, "partner", None)
    if not name:
        file = Path(ctx.mappings_dir) / "x12" / "partners.yaml"
        known = sorted(load_partners(file)) if file.exists() else []
        if len(known) != 1:
            raise ConfigError(f"name the trading partner with --partner (in {file}: {', '.join(known) or 'none'})")
        name = known[0]
    return partner_for(name, None, ctx)


def _convert_to_x12(raw: bytes, args: argparse.Namespace, ctx: Any, source: str) -> tuple[list[str], list[str]]:
    """DFT^P03 (one message or a batch) or FHIR Claim Bundle → one 837 interchange, checked by pyx12."""
    from hub.errors import InputError
    from hub.message import Message
    from hub.transforms.x12 import InMemoryControlNumbers, claims_from_fhir, validate, write_837
    from hub.transforms.x12.components import _fhir_data, claims_of

    partner = _x12_partner(args, ctx)
    claims: list[Any] = []
    problems: list[str] = []
    kind = args.kind
    if source == "hl7v2":
        from hub.transforms.hl7v2 import parse, split_batch

        professional: Literal["P", "I"] = "I" if kind == "I" else "P"  # --kind takes P or I; a DFT: P by default
        kind = professional
        for i, part in enumerate(split_batch(raw), 1):
            try:
                claims += claims_of(Message(raw=part, content_type="hl7v2", parsed=parse(part)), partner, professional)
            except InputError as exc:
                problems.append(f"message {i}: {exc}" + (f" (at {exc.location})" if exc.location else ""))
    else:
        try:
            found = claims_from_fhir(_fhir_data(Message(raw=raw, content_type="fhir")), partner=partner)
        except InputError as exc:
            return [], [str(exc) + (f" (at {exc.location})" if exc.location else "")]
        kinds = {k for _, k in found}
        kind = kind or (kinds.pop() if len(kinds) == 1 else None)
        if kind is None:
            return [], ["the Bundle holds professional and institutional claims: choose one with --kind P|I"]
        claims = [c for c, k in found if k == kind]
        for c, k in found:
            if k != kind:  # --kind chose: the others are named, not silently dropped
                print(
                    f"note: claim {c.patient_control_number} is an 837{k} claim, left out of this 837{kind}",
                    file=sys.stderr,
                )
    if problems or not claims:
        return [], problems or ["no claim to write"]
    try:
        out = write_837(claims, partner, InMemoryControlNumbers(), kind=kind)
    except InputError as exc:
        return [], [str(exc) + (f" (at {exc.location})" if exc.location else "")]
    problems += [f"5010 validation: {i}" for i in validate(out) if i.severity in ("error", "fatal")]
    return [out.decode("utf-8", errors="replace").rstrip("\n")], problems


def _convert_835(raw: bytes, args: argparse.Namespace, ctx: Any, to: str) -> tuple[list[str], list[str]]:
    """835 → payment-posting CSV (the layout of <mappings>/x12/835_posting_layout.yaml; written to stdout as is)
    or → a FHIR Bundle of ExplanationOfBenefit. An 835 that does not balance is printed and exits 1 with the
    problems."""
    from pathlib import Path

    from hub.errors import InputError
    from hub.transforms.x12 import load_layout, remit_to_fhir, x12_835_to_csv
    from hub.transforms.x12.components import _require_set

    issues: list[Any] = []
    try:
        _require_set(raw, "835")
        if to == "csv":
            file = Path(ctx.mappings_dir) / "x12" / "835_posting_layout.yaml"
            layout = load_layout(file) if file.exists() else None
            data = x12_835_to_csv(raw, layout, on_unbalanced="ignore", issues=issues)
            sys.stdout.buffer.write(data)  # the layout's own line endings, byte for byte
            sys.stdout.flush()
            outputs: list[str] = []
        else:
            outputs = [json.dumps(remit_to_fhir(raw, issues=issues), indent=2, ensure_ascii=False)]
    except InputError as exc:
        return [], [str(exc) + (f" (at {exc.location})" if exc.location else "")]
    return outputs, [f"does not balance: {i.location + ': ' if i.location else ''}{i.message}" for i in issues]


# (from, to) → converter; more formats add their pairs here (x12, csv …).
CONVERTERS: dict[tuple[str, str], Any] = {
    ("hl7v2", "fhir"): _convert_v2_to_fhir,
    ("fhir", "hl7v2"): _convert_fhir_to_v2,
    ("hl7v2", "x12"): lambda raw, args, ctx: _convert_to_x12(raw, args, ctx, "hl7v2"),
    ("fhir", "x12"): lambda raw, args, ctx: _convert_to_x12(raw, args, ctx, "fhir"),
    ("x12", "csv"): lambda raw, args, ctx: _convert_835(raw, args, ctx, "csv"),
    ("x12", "fhir"): lambda raw, args, ctx: _convert_835(raw, args, ctx, "fhir"),
}


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert one file between formats, with the mappings of the config folder; problems → exit 1."""
    from pathlib import Path

    from hub.channels.base import Context
    from hub.message import sniff_content_type

    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"hub: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    raw = raw.strip(b" \t\r\n")
    source = args.source or sniff_content_type(raw)
    fn = CONVERTERS.get((source, args.to))
    if fn is None:
        pairs = ", ".join(f"{a} → {b}" for a, b in CONVERTERS)
        print(
            f"hub: cannot convert {source} to {args.to} (known: {pairs}); use --from to name the input format",
            file=sys.stderr,
        )
        return 1
    try:
        cfg = load_config(args.config)
        ctx = Context(home=cfg.home, mappings_dir=cfg.mappings_dir, config=cfg)
    except (ConfigError, OSError, ValueError):
        ctx = Context()  # no usable config folder: the mappings/ of the working directory
    try:
        outputs, problems = fn(raw, args, ctx)
    except ConfigError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    for out in outputs:
        print(out)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the configuration reference generated from the config models."""
    from pathlib import Path

    from hub.reference import check, render

    out = Path(args.out)
    if args.check:
        try:
            current = out.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"hub: cannot read {out}: {exc.strerror or exc}; run `hub docs` to write it", file=sys.stderr)
            return 1
        why = check(current)
        if why is not None:
            print(f"hub: {out} is out of date ({why}); run `hub docs --out {out}` and commit it", file=sys.stderr)
            return 1
        print(f"{out} is current")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------------------------- parser
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hub",
        description="hub — a healthcare integration engine: channels as YAML, a durable store, HL7 v2/FHIR/X12/CSV.",
    )
    p.add_argument("--version", action="version", version=f"hub {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=str(default_config_dir()),
        metavar="DIR",
        help="config folder (default: ./config or $HUB_CONFIG)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "run", parents=[common], help="start the hub on the config folder: sources, delivery workers, retention"
    ).set_defaults(fn=cmd_run)
    sub.add_parser(
        "check", parents=[common], help="validate hub.yaml and every channel (file:line: problem; exit 1 if any)"
    ).set_defaults(fn=cmd_check)
    t = sub.add_parser(
        "test", parents=[common], help="run every channel's *_test.yaml with in-memory sources and destinations"
    )
    t.add_argument("--channel", help="only this channel")
    t.set_defaults(fn=cmd_test)
    s = sub.add_parser(
        "status",
        parents=[common],
        help="per channel and destination: received, filtered, rejected, queued, retry, sent, dead, oldest queued",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    m = sub.add_parser(
        "messages",
        parents=[common],
        help="search messages by channel, status, time, control id, patient id, type, text",
    )
    m.add_argument("--channel")
    m.add_argument(
        "--status",
        choices=[*MESSAGE_STATUSES, *DELIVERY_STATUSES],
        metavar="STATUS",
        help=f"a message status ({', '.join(MESSAGE_STATUSES)}) or a delivery status ({', '.join(DELIVERY_STATUSES)})",
    )
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
    m.add_argument(
        "--claim-status",
        choices=["submitted", "acknowledged", "accepted", "pending", "rejected"],
        help="charge messages whose X12 claim has this status (from the clearinghouse's 999/277CA)",
    )
    m.set_defaults(fn=cmd_messages)
    sh = sub.add_parser(
        "show", parents=[common], help="one message: raw, per-destination content, responses, attempts, errors"
    )
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
    pr = sub.add_parser(
        "prune", parents=[common], help="delete messages older than a duration (what retention does on schedule)"
    )
    pr.add_argument("--older-than", metavar="DURATION", help="e.g. 30d (default: retention.messages in hub.yaml)")
    pr.add_argument("--include-unsent", action="store_true", help="also delete messages with queued or dead deliveries")
    pr.add_argument(
        "--max-size",
        metavar="SIZE",
        help="then the oldest messages until the store is under SIZE, e.g. 20GB (default: retention.max_size)",
    )
    pr.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: rewrite the file once (VACUUM) so a store made before auto_vacuum gives pruned space back; "
        "holds writes while it runs",
    )
    pr.set_defaults(fn=cmd_prune)
    cv = sub.add_parser(
        "convert",
        parents=[common],
        help="convert a file: HL7 v2 → FHIR Bundle or FHIR → HL7 v2 (stdout; problems → exit 1)",
    )
    cv.add_argument("file", metavar="FILE", help="the input file ('-' for standard input)")
    cv.add_argument("--to", required=True, choices=sorted({b for _, b in CONVERTERS}), help="output format")
    cv.add_argument(
        "--from", dest="source", choices=sorted({a for a, _ in CONVERTERS}), help="input format (default: detected)"
    )
    cv.add_argument(
        "--bundle",
        default="transaction",
        choices=["transaction", "batch", "collection"],
        help="to fhir: the Bundle type",
    )
    cv.add_argument(
        "--explain",
        action="store_true",
        help="to fhir: instead of the Bundle, list which v2 fields reached it, which no map covers and which values "
        "were left out as invalid",
    )
    cv.add_argument("--trigger", help="to hl7v2: the ADT trigger for Patient/Encounter content (A04, A08 …)")
    cv.add_argument(
        "--partner", help="to x12: the trading partner in <mappings>/x12/partners.yaml (default: the only one)"
    )
    cv.add_argument(
        "--kind", choices=["P", "I"], help="to x12: 837P or 837I (default: P for a DFT, the Claim's type for FHIR)"
    )
    cv.set_defaults(fn=cmd_convert)
    dc = sub.add_parser(
        "docs", help="write the configuration reference (docs/reference.md) from the config models; --check compares"
    )
    dc.add_argument("--out", default="docs/reference.md", metavar="FILE", help="default: docs/reference.md")
    dc.add_argument("--check", action="store_true", help="exit 1 when FILE is not what the code generates")
    dc.set_defaults(fn=cmd_docs)
    us = sub.add_parser("user", help="dashboard and API users: add NAME --role ROLE, token NAME, list")
    usub = us.add_subparsers(dest="action", metavar="ACTION", required=True)
    ua = usub.add_parser(
        "add", parents=[common], help="add a user (password from $HUB_PASSWORD or asked on the terminal)"
    )
    ua.add_argument("name")
    ua.add_argument(
        "--role",
        required=True,
        choices=["viewer", "operator", "analyst", "admin", "sender"],
        help="sender: a sending system that posts to the FHIR endpoints (token only)",
    )
    ua.add_argument("--no-password", action="store_true", help="a token-only user (e.g. for Prometheus)")
    ut = usub.add_parser("token", parents=[common], help="print a new API token for a user (shown once)")
    ut.add_argument("name")
    ut.add_argument("--label", help="what the token is for")
    ut.add_argument("--ttl", metavar="DURATION", help="lifetime, e.g. 90d (default: until revoked)")
    usub.add_parser("list", parents=[common], help="list users and roles")
    us.set_defaults(fn=cmd_user)
    ch = sub.add_parser(
        "channel",
        parents=[common],
        help="pause/resume a channel's source or disable/enable the whole channel, on every node (kept in the store)",
    )
    ch.add_argument("action", choices=["pause", "resume", "disable", "enable"])
    ch.add_argument("name", metavar="NAME")
    ch.set_defaults(fn=cmd_channel)
    se = sub.add_parser("send", help="send HL7 v2 files over MLLP and print each ACK code (exit 1 unless all AA/CA)")
    se.add_argument("url", metavar="mllp://HOST:PORT", help="where to send (mllps:// for TLS)")
    se.add_argument(
        "files", nargs="+", metavar="FILE", help="one message per file, several separated by blank lines, or a batch"
    )
    se.add_argument("--timeout", default="30s", help="connect and ACK timeout (default 30s)")
    se.add_argument("--tls", action="store_true", help="use TLS (as mllps:// does)")
    se.add_argument("--ca", help="CA certificate(s) to verify the server with (PEM)")
    se.add_argument("--cert", help="client certificate for mutual TLS (PEM)")
    se.add_argument("--key", help="private key of --cert (PEM)")
    se.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    se.set_defaults(fn=cmd_send)
    va = sub.add_parser(
        "validate", help="report structure problems of message files (HL7 v2: segments, fields, data types, tables)"
    )
    va.add_argument("files", nargs="+", metavar="FILE")
    va.add_argument(
        "--format",
        choices=["hl7v2", "x12", "fhir", "csv"],
        help="the content type (default: detected from the content)",
    )
    va.add_argument("--hl7-version", help="HL7 v2: validate against this version instead of MSH-12")
    va.set_defaults(fn=cmd_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

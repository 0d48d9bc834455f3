"""Composition root: builds channels from their specs, owns the store, the workers and the schedules.

:func:`build` turns a :class:`~hub.spec.Config` into runnable parts and collects every problem it meets with
its file and line, so ``hub check`` and ``hub run`` can never disagree about what is valid. Building never
opens sockets or creates folders; :meth:`Engine.start` does.

:class:`Engine` is also the typed facade of the running hub for what sits above it (the web app, DESIGN.md
§6.6): which channels are paused or disabled (:meth:`Engine.pause`, :meth:`Engine.resume`, :meth:`Engine.disable`,
:meth:`Engine.enable` — kept in the store and applied by every node sharing it within one ``cluster.heartbeat``, by
the heartbeat poller that also takes over a dead node's work: :mod:`hub.store.nodes`), each channel's state
(:meth:`Engine.channel_state`) and its peers' (:meth:`Engine.peer_state`, from the components that implement
:class:`~hub.channels.base.ReportsPeer`), :meth:`Engine.reload`. The engine imports nothing above it: the
command line composes it with the web app by passing :func:`hub.web.start` as one of its ``services``
(started once the channels run, stopped before them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from hub import __version__, registry
from hub.channels.base import Context, Destination, Receiver, ReportsPeer, Source
from hub.channels.channel import Channel, Route
from hub.channels.notify import EVAL_LEASE, EVALUATE_EVERY, AlertEvaluator, Notifier
from hub.channels.schedule import Poller
from hub.channels.worker import DeliveryWorker
from hub.errors import ConfigError, StoreError
from hub.metrics import STORE_OVER_MAX_SIZE, STORE_SIZE
from hub.routes import compile_all, compile_condition
from hub.schedules import parse_size
from hub.spec import (
    BatchSpec,
    Config,
    Problem,
    QueueSpec,
    check_schedule,
    load_config,
    parse_duration,
    parse_listen,
    pydantic_problems,
)
from hub.store import Claimed, NewDelivery, Store
from hub.store.nodes import CHANNEL_STATE_PREFIX
from hub.store.repository import open_store

__all__ = [
    "Engine",
    "Built",
    "build",
    "check",
    "open_store",
    "CHANNEL_STATE_PREFIX",
    "Service",
    "ServiceStarter",
    "ChannelState",
]

log = logging.getLogger("hub.engine")


@dataclass
class Built:
    channels: dict[str, Channel] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    destinations: dict[tuple[str, str], Destination] = field(default_factory=dict)
    queues: dict[tuple[str, str], QueueSpec] = field(default_factory=dict)
    batches: dict[tuple[str, str], tuple[BatchSpec, Any]] = field(default_factory=dict)  # (spec, its assembler)
    problems: list[Problem] = field(default_factory=list)


def _normalise_transform(t: Any) -> Any:
    """``{python: mod:func}`` is short for ``{type: python, function: mod:func}``."""
    if isinstance(t, dict) and "type" not in t and len(t) == 1 and "python" in t:
        return {"type": "python", "function": t["python"]}
    return t


def _component(
    kind: str, data: Any, ctx: Context, cfg: Config, channel: str, loc: tuple[Any, ...], problems: list[Problem]
) -> tuple[Any, Any]:
    """Validate ``data`` with the component's own model and construct it; (config, instance) or (None, None)."""
    file = str(cfg.channel_files[channel])
    cdata = cfg.channel_data[channel]
    if not isinstance(data, dict) or "type" not in data:
        problems.append(Problem(file, cfg.line(channel, *loc)[1], f"{'.'.join(map(str, loc))}: a {kind} needs a type"))
        return None, None
    try:
        cls = registry.lookup(kind, str(data["type"]))
    except KeyError as exc:
        problems.append(
            Problem(file, cfg.line(channel, *loc, "type")[1], f"{'.'.join(map(str, loc))}.type: {exc.args[0]}")
        )
        return None, None
    try:
        conf = cls.Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, cdata, file, loc))
        return None, None
    try:
        return conf, cls(conf, ctx)
    except ConfigError as exc:
        problems.append(Problem(file, cfg.line(channel, *loc)[1], f"{'.'.join(map(str, loc))}: {exc}"))
        return conf, None


def build(cfg: Config, *, store: Store | None = None, engine: Engine | None = None, testing: bool = False) -> Built:
    """Build every enabled channel. With ``testing`` destinations are in-memory and sources are not built."""
    out = Built(problems=list(cfg.problems))
    problems = out.problems
    for folder in cfg.hub.python_path:
        path = str(cfg.resolve(folder))
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        check_schedule(cfg.hub.retention.schedule)
    except ValueError as exc:
        problems.append(Problem(str(cfg.folder / "hub.yaml"), 0, f"retention.schedule: {exc}"))
    listens: dict[tuple[str, int], str] = {}
    if cfg.hub.web.enabled:
        listens[parse_listen(cfg.hub.web.listen)] = "web.listen in hub.yaml"

    for spec in cfg.channels:
        if not spec.enabled:
            continue
        name = spec.name
        file = str(cfg.channel_files[name])
        ctx = Context(
            home=cfg.home,
            mappings_dir=cfg.mappings_dir,
            config=cfg,
            store=store,
            engine=engine,
            channel=name,
            testing=testing,
            executor=engine.executor if engine is not None else None,
        )

        # source: constructors do no I/O, so `hub check` and `hub test` build it too (and then leave it unused)
        src_conf, src = _component("source", spec.source, ctx, cfg, name, ("source",), problems)
        if src is not None and not testing:
            out.sources[name] = src
        listen = getattr(src_conf, "listen", None)
        if listen:
            try:
                addr = parse_listen(listen)
            except ValueError as exc:
                problems.append(Problem(file, cfg.line(name, "source", "listen")[1], f"source.listen: {exc}"))
            else:
                if addr[1] != 0 and addr in listens:  # port 0: any free port, never a clash
                    problems.append(
                        Problem(
                            file,
                            cfg.line(name, "source", "listen")[1],
                            f"source.listen {listen} is already used by {listens[addr]}",
                        )
                    )
                listens[addr] = f"channel {name}"

        # destinations
        dest_confs: dict[str, Any] = {}
        for dname, ddata in spec.destinations.items():
            dconf, dest = _component("destination", ddata, ctx, cfg, name, ("destinations", dname), problems)
            if testing and dconf is not None:  # `hub test`: record what would be sent instead of sending it
                from hub.channels.memory import MemoryDestination

                dest = MemoryDestination(MemoryDestination.Config(type="memory", queue=dconf.queue), ctx)
            if dconf is not None:
                dest_confs[dname] = dconf
                out.queues[(name, dname)] = dconf.queue
                if dconf.batch is not None:
                    _, assembler = _component(
                        "assembler",
                        dconf.batch.assemble,
                        ctx,
                        cfg,
                        name,
                        ("destinations", dname, "batch", "assemble"),
                        problems,
                    )
                    if assembler is not None:
                        out.batches[(name, dname)] = (dconf.batch, assembler)
            if dest is not None:
                out.destinations[(name, dname)] = dest

        # filters and routes
        fmt = (
            getattr(src_conf, "format", None)
            or spec.source.get("format")
            or ("hl7v2" if spec.source.get("type") == "mllp" else None)
        )
        problems.extend(_path_problems(cfg, spec, fmt, dest_confs))
        filters = compile_all(spec.filters) if spec.filters else None
        routes: list[Route] = []
        for ri, rspec in enumerate(spec.routes):
            for ti, dname in enumerate(rspec.to):
                if dname not in spec.destinations:
                    problems.append(
                        Problem(
                            file,
                            cfg.line(name, "routes", ri, "to", ti)[1],
                            f"routes[{rspec.name}].to: no destination named {dname!r}",
                        )
                    )
            transforms = []
            for ti, tdata in enumerate(rspec.transforms):
                tdata = _normalise_transform(tdata)
                _, t = _component("transform", tdata, ctx, cfg, name, ("routes", ri, "transforms", ti), problems)
                if t is not None:
                    transforms.append(t)
            routes.append(
                Route(
                    rspec.name,
                    compile_condition(rspec.when) if rspec.when else None,
                    transforms,
                    [d for d in rspec.to if d in spec.destinations],
                )
            )
        for dname, dconf in dest_confs.items():
            target = getattr(dconf, "channel", None)
            if dconf.type == "channel" and target not in {c.name for c in cfg.channels}:
                problems.append(
                    Problem(
                        file,
                        cfg.line(name, "destinations", dname, "channel")[1],
                        f"destinations.{dname}.channel: no channel named {target!r}",
                    )
                )
        if src_conf is None:
            continue
        out.channels[name] = Channel(
            spec,
            ctx,
            source_config=src_conf,
            filters=filters,
            routes=routes,
            destinations=dest_confs,
            order_by={d: c.queue.order_by for d, c in dest_confs.items()},
        )
    return out


# Declarative transforms whose settings are paths of the message as it is at that step (hub.transforms.mapping).
_PATH_KEYS = {"set": ("path",), "copy": ("from", "to"), "delete": ("path", "paths"), "map": ("path", "to")}


def _path_problems(cfg: Config, spec: Any, fmt: str | None, dest_confs: dict[str, Any]) -> list[Problem]:
    """HL7 v2 paths of a channel's filters, routes, declarative transforms and order_by that cannot address
    anything (``PID-3..1``, ``MSH-99.1x``, ``MSH-55``). In a channel of another named format paths are that
    format's: JSON (``$.a.b``) and XML (``/a/b``) paths are checked by their grammar, others not; when the format is
    not named, a path written like an HL7 v2 one (``XXX-n…``) is checked. The channel's ``meta:`` paths are
    checked in every format whose paths can be (a path's own shape tells when the format is not named)."""
    from hub.transforms.document import check_path as check_format_path
    from hub.transforms.hl7v2.paths import check_path, looks_like_path

    name = spec.name
    file = str(cfg.channel_files[name])
    out: list[Problem] = []
    for key, path in spec.meta.items():
        why = check_format_path(fmt, path)
        if why is not None:
            out.append(Problem(file, cfg.line(name, "meta", key)[1], f"meta.{key}: {why}"))
    if fmt not in (None, "hl7v2", "json", "xml"):
        return out

    def one(path: Any, loc: tuple[Any, ...], what: str) -> None:
        if fmt in ("json", "xml"):
            why = check_format_path(fmt, path)
        elif not isinstance(path, str) or (fmt is None and not looks_like_path(path)):
            return
        else:
            why = check_path(path)
        if why is not None:
            out.append(Problem(file, cfg.line(name, *loc)[1], f"{what}: {why}"))

    def condition(c: Any, loc: tuple[Any, ...]) -> None:
        if c is None:
            return
        if c.path is not None:
            one(c.path, (*loc, "path"), ".".join(map(str, loc)) + ".path")
        for key in ("all", "any"):
            for i, sub in enumerate(getattr(c, key) or ()):
                condition(sub, (*loc, key, i))
        if c.not_ is not None:
            condition(c.not_, (*loc, "not"))

    for i, c in enumerate(spec.filters):
        condition(c, ("filters", i))
    for ri, route in enumerate(spec.routes):
        condition(route.when, ("routes", ri, "when"))
        for ti, t in enumerate(route.transforms):
            ttype = t.get("type") if isinstance(t, dict) else None
            keys = _PATH_KEYS.get(ttype) if isinstance(ttype, str) else None
            if keys is None:
                break  # a conversion (v2_to_fhir …) or code: the paths after it may be another format's
            for key in keys:
                value = t.get(key)
                for j, path in enumerate(value if isinstance(value, list) else [value]):
                    loc = ("routes", ri, "transforms", ti, key, *((j,) if isinstance(value, list) else ()))
                    one(path, loc, f"routes[{route.name}].transforms[{ti}].{key}")
    for dname, dconf in dest_confs.items():
        one(dconf.queue.order_by, ("destinations", dname, "queue", "order_by"), f"destinations.{dname}.queue.order_by")
    return out


def check(cfg: Config) -> list[Problem]:
    return build(cfg).problems


#: How often the running hub indexes new messages for text search (SQLite), and for how long at most each time.
INDEX_EVERY = 1.0
SAMPLE_EVERY = 60.0  # queue depth samples for the dashboard's charts (hub.store.rollups)
SAMPLE_LEASE = "rollups"
INDEX_BUDGET = 5.0

# Threads for pipelines off the event loop. They share the GIL, so more would not add speed; a few let a quick
# message pass one held up by a slow transform (a big 835 through pyx12) and by a python transform waiting on I/O.
PIPELINE_THREADS = 4


def _start_failure(exc: BaseException) -> str:
    """One line saying why a source did not start: the connector's own words, else the exception's."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


class Service(Protocol):
    """Something started beside the channels (the web app): stopped before them, in the reverse order."""

    async def stop(self) -> None: ...


#: Starts a service for a running engine, e.g. :func:`hub.web.start` (``hub run`` passes it when web.enabled).
ServiceStarter = Callable[["Engine"], Awaitable[Service]]

#: What :meth:`Engine.channel_state` says of a channel (the dashboard's and the API's ``state``).
ChannelState = Literal["disabled", "failed", "paused", "running", "no source", "not configured"]

# The order of the keys of :meth:`Engine.peer_state` (the API's ``peers`` object); keys of other components follow.
_PEER_KEYS = ("sftp_error", "mllp", "sftp_last_poll")


class Engine:
    """The running hub: ``await Engine(cfg).start()`` … ``await engine.stop()``.

    ``services`` are started, in order, once the channels run (``hub run`` passes the web app's
    :func:`hub.web.start` when ``web.enabled``) and stopped, in reverse, before anything else.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        store: Store | None = None,
        idle_poll: float = 1.0,
        services: Sequence[ServiceStarter] = (),
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._own_store = store is None
        self.idle_poll = idle_poll
        self.channels: dict[str, Channel] = {}
        self.sources: dict[str, Source] = {}
        self.destinations: dict[tuple[str, str], Destination] = {}
        self.workers: dict[tuple[str, str], DeliveryWorker] = {}
        self.pollers: list[Poller] = []
        self.started_at: float | None = None
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self.failed: dict[str, str] = {}  # channel → why its source could not start (the others run on)
        self._service_starters = list(services)
        self.services: list[Service] = []  # the running services (the web app's hub.web.WebServer …)
        self._paused: set[str] = set()  # channels paused in the store: source stopped (their workers still send)
        self._disabled: set[str] = set()  # channels disabled in the store: neither source nor workers run
        self._source_on: set[str] = set()  # channels whose source this node has started (and not stopped)
        self._built: Built | None = None  # what the running channels were built from (to start workers again)
        self._sync_errors: dict[str, str] = {}  # channel → why applying its shared state failed (logged once)
        self._dead_seen: set[str] = set()  # dead nodes already logged
        self._node_started: float | None = None  # when this node first wrote its heartbeat
        self._state_lock = asyncio.Lock()  # pause/resume/enable/disable against the heartbeat's applying the store
        self._applying: asyncio.Task[None] | None = None  # the heartbeat's applying of the shared channel state
        self.executor: ThreadPoolExecutor | None = None  # pipelines kept off the event loop (hub.channels.channel)
        self.notifier: Notifier | None = None  # alerts: in hub.yaml (hub.channels.notify)
        self.evaluator: AlertEvaluator | None = None  # the hub's own alert rules (GET /api/alerts)

    async def start(self) -> None:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(PIPELINE_THREADS, thread_name_prefix="hub-pipeline")
        if self.store is None:
            self.store = await asyncio.to_thread(open_store, self.cfg)
        store = self.store
        # This node is alive (hub.store.nodes): the others must not take over what it is about to resume.
        await asyncio.to_thread(self._beat)
        # SQLite has one node: everything left "sending" by a previous process is ours to resume.
        recovered = await asyncio.to_thread(store.recover, everything=store.dialect == "sqlite", mine=True)
        if recovered:
            log.info("resuming %d deliveries that were in flight when the hub last stopped", recovered)
        built = build(self.cfg, store=store, engine=self)
        if built.problems:
            raise ConfigError("configuration has problems", [(p.file, p.line, p.message) for p in built.problems])
        await self._start_channels(built)
        for starter in self._service_starters:
            self.services.append(await starter(self))
        retention = self.cfg.hub.retention
        self.pollers.append(Poller(retention.schedule, self.prune, "retention", run_first=False))
        # The heartbeat: tells the other nodes this one is alive, takes over the work of dead nodes (and of expired
        # leases) and applies the channel state (paused, disabled) that any node wrote to the store.
        heartbeat = parse_duration(self.cfg.hub.cluster.heartbeat)
        self.pollers.append(Poller(heartbeat, self._heartbeat, "heartbeat", run_first=False))
        if store.dialect == "sqlite":  # the text search index, built beside the writes (hub.store.search_index)
            self.pollers.append(Poller(INDEX_EVERY, self._index_text, "search index", run_first=True))
        # The dashboard's queue depth over time, and the hub's own alert rules (issue 17): one node at a time each.
        self.pollers.append(Poller(SAMPLE_EVERY, self.sample_queues, "queue samples", run_first=True))
        alerts = self.cfg.hub.alerts
        self.evaluator = AlertEvaluator(store, self._alert_states, alerts.events if alerts is not None else None)
        self.pollers.append(Poller(EVALUATE_EVERY, self.evaluator.evaluate, "alert rules", run_first=True))
        for p in self.pollers:
            p.start()
        if self.cfg.hub.alerts is not None:  # read at start only, like store and web
            self.notifier = Notifier(
                self.cfg.hub.alerts, store, states=self._alert_states, pairs=lambda: list(self.destinations)
            )
            self.notifier.start()
        self.started_at = time.time()

    # ------------------------------------------------------------------ the facade: pause, state, peers
    @property
    def paused(self) -> frozenset[str]:
        """The channels with a source paused in the store (by :meth:`pause` on any node, until :meth:`resume`)."""
        return frozenset(n for n in self._paused if n in self.sources)

    @property
    def disabled(self) -> frozenset[str]:
        """The channels disabled in the store (by :meth:`disable` on any node, until :meth:`enable`)."""
        return frozenset(self._disabled)

    def is_paused(self, channel: str) -> bool:
        return channel in self._paused

    async def pause(self, channel: str, *, by: str | None = None) -> bool:
        """Stop the channel's source on every node (its queued deliveries still go out): kept in the store, applied
        here at once and by the other nodes at their next heartbeat; False when it was paused already.

        KeyError when the channel has no running source (none configured, or it failed to start).
        """
        self.sources[channel]
        async with self._state_lock:
            if channel in self._paused:
                return False
            if self.store is not None:
                await asyncio.to_thread(self.store.set_channel_state, channel, paused=True, by=by)
            self._paused.add(channel)
            await self._sync(channel)
            return True

    async def resume(self, channel: str, *, by: str | None = None) -> bool:
        """Start a paused channel's source again, on every node; False when it was not paused. KeyError when it has
        no source; the source's own exception when it does not start here (the channel stays paused)."""
        self.sources[channel]
        async with self._state_lock:
            if channel not in self._paused:
                return False
            self._paused.discard(channel)
            try:
                await self._sync(channel)
            except Exception:
                self._paused.add(channel)
                raise
            if self.store is not None:
                await asyncio.to_thread(self.store.set_channel_state, channel, paused=False, by=by)
            return True

    async def disable(self, channel: str, *, by: str | None = None) -> bool:
        """Stop the channel altogether on every node — its source and its delivery workers (what is queued waits)
        — and do not start it until :meth:`enable`, across restarts; False when it was disabled already.
        KeyError when no channel of that name runs."""
        self.channels[channel]
        async with self._state_lock:
            if channel in self._disabled:
                return False
            if self.store is not None:
                await asyncio.to_thread(self.store.set_channel_state, channel, enabled=False, by=by)
            self._disabled.add(channel)
            await self._sync(channel)
            return True

    async def enable(self, channel: str, *, by: str | None = None) -> bool:
        """Start a disabled channel again on every node (its source stays stopped while it is paused); False when
        it was not disabled. KeyError when no channel of that name runs."""
        self.channels[channel]
        async with self._state_lock:
            if channel not in self._disabled:
                return False
            self._disabled.discard(channel)
            try:
                await self._sync(channel)
            except Exception:
                self._disabled.add(channel)
                await self._sync(channel)
                raise
            if self.store is not None:
                await asyncio.to_thread(self.store.set_channel_state, channel, enabled=True, by=by)
            return True

    def channel_state(self, channel: str) -> ChannelState:
        """``disabled`` (by :meth:`disable`), ``failed`` (its source could not start; the other channels run),
        ``paused``, ``running``, ``no source`` (running without one) or ``not configured`` (known only from the
        store)."""
        if channel in self._disabled and channel in self.channels:
            return "disabled"
        if channel in self.failed:
            return "failed"
        if channel in self._paused and channel in self.sources:
            return "paused"
        if channel in self.sources:
            return "running"
        if channel in self.channels:
            return "no source"
        return "not configured"

    def sources_running(self) -> dict[str, int]:
        """Each channel with a source: 1 when it takes input, 0 when paused or disabled (``hub_channel_running``)."""
        return {name: int(name in self._source_on) for name in self.sources}

    def peer_state(self, channel: str) -> dict[str, Any]:
        """How the channel's connections to remote peers are, merged from its running source and destinations
        that implement :class:`~hub.channels.base.ReportsPeer` (``{}`` when none does); mappings under one key
        (``mllp``: endpoint → open connections) are merged."""
        parts: list[object] = [self.sources.get(channel)]
        parts += [dest for (ch, _), dest in self.destinations.items() if ch == channel]
        merged: dict[str, Any] = {}
        for part in parts:
            if not isinstance(part, ReportsPeer):
                continue
            try:
                state = part.peer_state()
            except Exception:
                log.exception("channel %s: a component could not report its peer state", channel)
                continue
            for key, value in state.items():
                known = merged.get(key)
                if isinstance(value, dict) and isinstance(known, dict):
                    merged[key] = {**known, **value}
                else:
                    merged[key] = value
        ordered = {k: merged.pop(k) for k in _PEER_KEYS if k in merged}
        return {**ordered, **merged}

    def channel_input(self, channel: str) -> Receiver | None:
        """:class:`~hub.channels.base.ChannelInput`: the running channel's ``receive``, None when it is not running."""
        ch = self.channels.get(channel)
        return ch.receive if ch is not None else None

    async def _start_channels(self, built: Built) -> None:
        assert self.store is not None
        self.channels, self.sources, self.destinations = built.channels, built.sources, built.destinations
        self._built = built
        try:  # paused and disabled channels, as any node left them in the store
            shared = await asyncio.to_thread(self.store.channel_states)
        except Exception as exc:
            log.warning("cannot read the channels' shared state (%s); starting every channel", type(exc).__name__)
            shared = {}
        self._paused = {n for n, st in shared.items() if st.paused and n in self.channels}
        self._disabled = {n for n, st in shared.items() if not st.enabled and n in self.channels}
        self._source_on = set()
        for ch, dname in self.destinations:
            if ch not in self._disabled:
                self._start_worker(ch, dname)
        for channel in self.channels.values():
            channel.on_accepted = self._wake
        self.failed = {}
        for name, src in list(self.sources.items()):
            if name in self._disabled or name in self._paused:
                log.info("channel %s is %s: its source is not started", name, self.channel_state(name))
                continue
            try:
                await src.start(self.channels[name].receive)
            except Exception as exc:
                reason = _start_failure(exc)
                log.error("channel %s failed to start: %s (the other channels run)", name, reason)
                log.debug("channel %s: start failure", name, exc_info=True)
                self.failed[name] = reason
                del self.sources[name]  # not running: nothing to stop; its delivery workers still send what is queued
                try:
                    await src.stop()
                except Exception:
                    pass
                await self._record_state(name, "failed", reason)
                continue
            self._source_on.add(name)
            log.info("channel %s started", name)
            await self._record_state(name, "running")

    def _start_worker(self, channel: str, destination: str) -> None:
        assert self.store is not None and self._built is not None
        batch, assembler = self._built.batches.get((channel, destination), (None, None))
        worker = DeliveryWorker(
            self.store,
            channel,
            destination,
            self.destinations[(channel, destination)],
            self._built.queues[(channel, destination)],
            drop_content=self.channels[channel].drop_content,
            idle_poll=self.idle_poll,
            on_final=self._final,
            batch=batch,
            assembler=assembler,
        )
        self.workers[(channel, destination)] = worker
        worker.start()

    async def _sync(self, name: str) -> None:
        """Run the channel on this node as its state says: its workers unless disabled, its source unless disabled
        or paused. The source's exception when it does not start."""
        disabled = name in self._disabled
        for ch, dname in list(self.destinations):
            if ch != name:
                continue
            worker = self.workers.get((ch, dname))
            if disabled and worker is not None:
                del self.workers[(ch, dname)]
                await worker.stop()
            elif not disabled and worker is None:
                self._start_worker(ch, dname)
        src = self.sources.get(name)
        if src is None:
            return
        wanted = not disabled and name not in self._paused
        if wanted and name not in self._source_on:
            await src.start(self.channels[name].receive)
            self._source_on.add(name)
            log.info("channel %s started", name)
        elif not wanted and name in self._source_on:
            self._source_on.discard(name)
            await src.stop()
            log.info("channel %s is %s: its source stopped", name, "disabled" if disabled else "paused")

    async def _record_state(self, channel: str, state: str, error: str | None = None) -> None:
        """Keep a channel's state in the store for `hub status` (another process): key ``channel_state:<name>``."""
        import json

        if self.store is None:
            return
        value = json.dumps(
            {"state": state, "error": error, "node": getattr(self.store, "node", None), "at": time.time()}
        )
        try:
            await asyncio.to_thread(self.store.set_cursor, f"{CHANNEL_STATE_PREFIX}{channel}", value)
        except Exception as exc:
            log.warning("channel %s: cannot record its state in the store: %s", channel, type(exc).__name__)

    async def _stop_channels(self) -> None:
        """Stop taking input, let workers finish what they hold, close the destinations."""
        for name, src in self.sources.items():
            if name not in self._source_on:  # paused or disabled: stopped already
                continue
            try:
                await src.stop()
            except Exception:
                log.exception("stopping a source failed")
        self._source_on = set()
        for name in self.failed:  # `hub status` must not go on saying "failed" once this hub has stopped
            await self._record_state(name, "stopped")
        self.failed = {}
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        self.workers = {}
        for dest in self.destinations.values():
            try:
                await dest.close()
            except Exception:
                log.exception("closing a destination failed")
        self.sources, self.destinations = {}, {}

    async def reload(self) -> list[Problem]:
        """Apply the config folder as it is on disk now, if it checks clean; returns the problems otherwise.

        Channels are stopped (sources first, workers after finishing what they hold) and started again from the
        new files; nothing queued is lost because the queues are in the store, and paused or disabled channels stay
        so. Settings of the store, the web app and the cluster (store.url, web.listen, web.tls, cluster) are read at
        start only: changing them needs a restart.
        """
        cfg = await asyncio.to_thread(load_config, self.cfg.folder)
        built = await asyncio.to_thread(build, cfg, store=self.store, engine=self)
        if built.problems:
            return built.problems
        if cfg.hub.store != self.cfg.hub.store or cfg.hub.web != self.cfg.hub.web:
            log.warning("reload: store and web settings changed in hub.yaml; they apply at the next restart")
        await self._stop_channels()
        cfg.hub.store, cfg.hub.web = self.cfg.hub.store, self.cfg.hub.web
        self.cfg = cfg
        await self._start_channels(built)  # paused and disabled channels stay so (their state is in the store)
        log.info("reloaded %d channels from %s", len(self.channels), cfg.folder)
        return []

    async def prune(self) -> int:
        """Retention: messages older than ``retention.messages``; then, with ``max_size``, the oldest until the
        store is under it (never an undelivered one); then the space goes back (SQLite). Returns how many."""
        assert self.store is not None
        r = self.cfg.hub.retention
        n = await asyncio.to_thread(
            self.store.prune, parse_duration(r.messages), keep_unsent=r.keep_unsent, vacuum=False
        )
        log.info("retention: pruned %d messages older than %s", n, r.messages)
        await asyncio.to_thread(self.store.prune_rollups)  # the charts' rollups: 8 days; resolved alerts: 7 days
        if r.max_size is not None:
            res = await asyncio.to_thread(self.store.prune_to_size, parse_size(r.max_size), vacuum=False)
            n += res.pruned
            STORE_SIZE.set(res.size_after)
            STORE_OVER_MAX_SIZE.set(1 if res.over else 0)
            if res.pruned:
                log.info("retention: pruned %d messages to bring the store under %s", res.pruned, r.max_size)
            if res.over:
                log.warning(
                    "retention: the store is %d MB, over max_size %s, and only messages with undelivered "
                    "deliveries (queued, sending, retrying, dead) are left to prune: deliver, replay or delete them "
                    "(hub messages --status dead), or raise max_size",
                    res.size_after >> 20,
                    r.max_size,
                )
        if n:
            freed = await asyncio.to_thread(self.store.vacuum)
            if freed:
                log.info("retention: gave %d MB back to the file system", freed >> 20)
        return n

    async def sample_queues(self) -> int:
        """Once a minute, on the node holding the store's lease ``rollups``: record every queue's depth (from the
        counters) for the dashboard's charts. Returns how many queues (0 on the other nodes)."""
        store = self.store
        assert store is not None
        try:
            if not await asyncio.to_thread(store.acquire_lease, SAMPLE_LEASE, 3 * SAMPLE_EVERY):
                return 0
            return await asyncio.to_thread(store.sample_queues)
        except StoreError as exc:
            log.warning("queue samples: the store did not answer (%s)", type(exc).__name__)
            return 0

    def _alert_states(self) -> dict[str, tuple[str, str | None]]:
        """Each channel's (state, reason) for the notifier (called in a thread): this node's view, and ``failed``
        where the store records that another node's source could not start."""
        out: dict[str, tuple[str, str | None]] = {n: (self.channel_state(n), self.failed.get(n)) for n in self.channels}
        store = self.store
        if store is None:
            return out
        for name, rec in store.channel_report(list(out)).items():
            if rec.get("state") == "failed" and rec.get("node") != store.node and out[name][0] == "running":
                out[name] = ("failed", f"on node {rec.get('node')}: {rec.get('error')}")
        return out

    async def _index_text(self) -> None:
        """Index what was stored since the last run (SQLite), at most :data:`INDEX_BUDGET` seconds per run."""
        assert self.store is not None
        try:
            await asyncio.to_thread(self.store.index_text, budget=INDEX_BUDGET)
        except StoreError as exc:
            log.warning("search index: the store did not answer (%s)", type(exc).__name__)

    def _beat(self) -> None:
        assert self.store is not None
        if self._node_started is None:
            self._node_started = time.time()
        self.store.heartbeat(self._node_started, os.getpid(), __version__)
        self.store.fold_counters()  # PostgreSQL: keep the count deltas few even when no screen reads them

    async def _heartbeat(self) -> None:
        """Every ``cluster.heartbeat``: say this node is alive, take over the deliveries and named leases of dead
        nodes (and expired leases), and apply the channel state any node wrote to the store (in a task of its own,
        so a worker finishing its batch before it stops never delays the heartbeat)."""
        store = self.store
        assert store is not None
        try:
            await asyncio.to_thread(self._beat)
            taken, dead = await asyncio.to_thread(store.take_over)
        except Exception as exc:
            log.warning("heartbeat: the store did not answer (%s)", type(exc).__name__)
            return
        for node in sorted(set(dead) - self._dead_seen):
            log.warning("node %s stopped its heartbeat; taking over its work", node)
        self._dead_seen = set(dead)
        if taken:
            log.info("took over %d deliveries of dead nodes or expired leases", taken)
            for w in self.workers.values():
                w.wake()
        if self._applying is None or self._applying.done():
            self._applying = asyncio.create_task(self._apply_shared(), name="apply-channel-state")

    async def _apply_shared(self) -> None:
        """Start or stop this node's sources and workers as the store's channel state says."""
        store = self.store
        assert store is not None
        async with self._state_lock:
            try:
                shared = await asyncio.to_thread(store.channel_states)
            except Exception as exc:
                log.warning("cannot read the channels' shared state (%s)", type(exc).__name__)
                return
            for name in list(self.channels):
                st = shared.get(name)
                paused, disabled = st is not None and st.paused, st is not None and not st.enabled
                if paused != (name in self._paused) or disabled != (name in self._disabled):
                    log.info(
                        "channel %s: %s by %s (applied from the store)",
                        name,
                        "disabled" if disabled else "paused" if paused else "running",
                        st.changed_by if st is not None else "?",
                    )
                (self._paused.add if paused else self._paused.discard)(name)
                (self._disabled.add if disabled else self._disabled.discard)(name)
                try:
                    await self._sync(name)
                except Exception as exc:
                    reason = _start_failure(exc)
                    if self._sync_errors.get(name) != reason:
                        log.error("channel %s: its source did not start: %s (tried again each heartbeat)", name, reason)
                    self._sync_errors[name] = reason
                else:
                    self._sync_errors.pop(name, None)

    def _wake(self, channel: str, deliveries: list[NewDelivery]) -> None:
        for d in deliveries:
            w = self.workers.get((channel, d.destination))
            if w is not None:
                w.wake()

    def _final(self, claimed: Claimed, outcome: str) -> None:
        for fut in self._waiters.get(claimed.message_id, []):
            if not fut.done():
                fut.set_result(None)

    async def wait_delivered(self, message_ids: list[int], timeout: float) -> dict[int, list[str]]:
        """Wait until every delivery of these messages is final (sent or dead), or the timeout passes.

        Returns message id → its deliveries' states; a state still ``queued``/``sending``/``retry`` means the
        timeout won. Used by sources with ``ack: after_delivery``.
        """
        assert self.store is not None
        store = self.store
        deadline = time.monotonic() + timeout
        states: dict[int, list[str]] = {}
        for mid in message_ids:
            while True:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(mid, []).append(fut)
                try:
                    st = await asyncio.to_thread(store.delivery_states, mid)
                    states[mid] = st
                    left = deadline - time.monotonic()
                    if all(s in ("sent", "dead") for s in st) or left <= 0:
                        break
                    try:
                        await asyncio.wait_for(fut, timeout=min(left, 1.0))  # re-read at least every second
                    except TimeoutError:
                        pass
                finally:
                    waiters = self._waiters.get(mid, [])
                    if fut in waiters:
                        waiters.remove(fut)
                    if not waiters:
                        self._waiters.pop(mid, None)
        return states

    async def wait_response(self, message_id: int, destination: str, timeout: float) -> tuple[str, str | None] | None:
        """:class:`~hub.channels.base.DeliveryWaiter`: the state and stored response of the message's delivery to
        ``destination`` once it is final (sent or dead), or as it is when ``timeout`` passed; None when the message
        has no delivery to it. Woken when a worker of this node finishes one of the message's deliveries, and reads
        the store at least every second (another node may send it)."""
        from sqlalchemy import select

        from hub.store.schema import deliveries

        assert self.store is not None
        store = self.store
        d = deliveries.c
        query = (
            select(d.status, d.response)
            .where(d.message_id == message_id, d.destination == destination)
            .order_by(d.id.desc())
            .limit(1)
        )
        deadline = time.monotonic() + timeout
        while True:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(message_id, []).append(fut)
            try:
                row = await asyncio.to_thread(store.run_read, lambda conn: conn.execute(query).first())
                if row is None:
                    return None
                left = deadline - time.monotonic()
                if row.status in ("sent", "dead") or left <= 0:
                    return str(row.status), row.response
                try:
                    await asyncio.wait_for(fut, timeout=min(left, 1.0))
                except TimeoutError:
                    pass
            finally:
                waiters = self._waiters.get(message_id, [])
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters:
                    self._waiters.pop(message_id, None)

    async def stop(self) -> None:
        """Stop taking input, let workers finish what they hold, close everything. Idempotent."""
        while self.services:
            await self.services.pop().stop()
        if self.notifier is not None:
            await self.notifier.stop()
            self.notifier = None
        for p in self.pollers:
            await p.stop()
        self.pollers = []
        if self.store is not None and self._node_started is not None:
            for lease in (SAMPLE_LEASE, EVAL_LEASE):  # this node's singletons: another node takes them at once
                try:
                    await asyncio.to_thread(self.store.release_lease, lease)
                except Exception as exc:
                    log.debug("cannot release the lease %s: %s", lease, type(exc).__name__)
        if self._applying is not None:
            await asyncio.gather(self._applying, return_exceptions=True)
            self._applying = None
        await self._stop_channels()
        if self.store is not None and self._node_started is not None:
            try:  # a clean stop: nothing in flight is left, the others need not wait for this node
                await asyncio.to_thread(self.store.leave)
            except Exception as exc:
                log.warning("cannot remove this node's heartbeat from the store: %s", type(exc).__name__)
            self._node_started = None
        if self.executor is not None:
            # The sources have stopped; a pipeline still running belongs to an input that was not answered (it is
            # sent again, or its file stays in the inbox): nothing of it is stored, so it is not waited for.
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if self.store is not None and self._own_store:
            await asyncio.to_thread(self.store.close)
            self.store = None

    async def run_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        log.info("hub running: %d channels, store %s", len(self.channels), self.store.dialect if self.store else "?")
        await stop.wait()
        log.info("stopping")
        await self.stop()

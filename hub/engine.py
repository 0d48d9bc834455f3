"""Composition root: builds channels from their specs, owns the store, the workers and the schedules.

:func:`build` turns a :class:`~hub.spec.Config` into runnable parts and collects every problem it meets with
its file and line, so ``hub check`` and ``hub run`` can never disagree about what is valid. Building never
opens sockets or creates folders; :meth:`Engine.start` does.

:class:`Engine` is also the typed facade of the running hub for what sits above it (the web app, DESIGN.md
§6.6): which channels are paused (:meth:`Engine.pause`, :meth:`Engine.resume`), each channel's state
(:meth:`Engine.channel_state`) and its peers' (:meth:`Engine.peer_state`, from the components that implement
:class:`~hub.channels.base.ReportsPeer`), :meth:`Engine.reload`. The engine imports nothing above it: the
command line composes it with the web app by passing :func:`hub.web.start` as one of its ``services``
(started once the channels run, stopped before them).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from hub import registry
from hub.channels.base import Context, Destination, Receiver, ReportsPeer, Source
from hub.channels.channel import Channel, Route
from hub.channels.schedule import Poller
from hub.channels.worker import DeliveryWorker
from hub.errors import ConfigError
from hub.routes import compile_all, compile_condition
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

__all__ = [
    "Engine",
    "Built",
    "build",
    "check",
    "open_store",
    "CHANNEL_STATE_PREFIX",
    "channel_states",
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
    format's; when the format is not named, a path written like an HL7 v2 one (``XXX-n…``) is checked."""
    from hub.transforms.hl7v2.paths import check_path, looks_like_path

    if fmt not in (None, "hl7v2"):
        return []
    name = spec.name
    file = str(cfg.channel_files[name])
    out: list[Problem] = []

    def one(path: Any, loc: tuple[Any, ...], what: str) -> None:
        if not isinstance(path, str) or (fmt is None and not looks_like_path(path)):
            return
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


def channel_states(store: Store, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each channel's last state as a running hub recorded it ({state, error, node, at}); channels never started:
    absent."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        raw = store.get_cursor(f"{CHANNEL_STATE_PREFIX}{name}")
        if raw:
            try:
                out[name] = json.loads(raw)
            except ValueError:
                continue
    return out


# Threads for pipelines off the event loop. They share the GIL, so more would not add speed; a few let a quick
# message pass one held up by a slow transform (a big 835 through pyx12) and by a python transform waiting on I/O.
PIPELINE_THREADS = 4


def open_store(cfg: Config, *, migrate: bool = True) -> Store:
    s = cfg.hub.store
    return Store(
        cfg.store_url(), batch_max=s.batch_max, synchronous=s.synchronous, pool_size=s.pool_size, node=cfg.hub.node
    ).open(migrate=migrate)


#: Prefix of the store cursors holding each channel's last state as the running hub saw it (read by `hub status`).
CHANNEL_STATE_PREFIX = "channel_state:"


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
ChannelState = Literal["failed", "paused", "running", "no source", "not configured"]

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
        self._paused: set[str] = set()  # channels whose source was stopped by pause() (their workers still send)
        self.executor: ThreadPoolExecutor | None = None  # pipelines kept off the event loop (hub.channels.channel)

    async def start(self) -> None:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(PIPELINE_THREADS, thread_name_prefix="hub-pipeline")
        if self.store is None:
            self.store = await asyncio.to_thread(open_store, self.cfg)
        store = self.store
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
        # Another node's expired leases (it died mid-send) go back to the queue for whoever is alive.
        self.pollers.append(Poller(max(1.0, store.lease_seconds / 4), self._recover, "lease-recovery", run_first=False))
        for p in self.pollers:
            p.start()
        self.started_at = time.time()

    # ------------------------------------------------------------------ the facade: pause, state, peers
    @property
    def paused(self) -> frozenset[str]:
        """The channels paused by :meth:`pause` (until :meth:`resume` or a reload that applied)."""
        return frozenset(self._paused)

    def is_paused(self, channel: str) -> bool:
        return channel in self._paused

    async def pause(self, channel: str) -> bool:
        """Stop the channel's source (its queued deliveries still go out); False when it was paused already.

        KeyError when the channel has no running source (none configured, or it failed to start).
        """
        src = self.sources[channel]
        if channel in self._paused:
            return False
        await src.stop()
        self._paused.add(channel)
        return True

    async def resume(self, channel: str) -> bool:
        """Start a paused channel's source again; False when it was not paused. KeyError when it has no source;
        the source's own exception when it does not start (the channel stays paused)."""
        src = self.sources[channel]
        if channel not in self._paused:
            return False
        await src.start(self.channels[channel].receive)
        self._paused.discard(channel)
        return True

    def channel_state(self, channel: str) -> ChannelState:
        """``failed`` (its source could not start; the other channels run), ``paused``, ``running``, ``no source``
        (running without one) or ``not configured`` (known only from the store)."""
        if channel in self.failed:
            return "failed"
        if channel in self._paused:
            return "paused"
        if channel in self.sources:
            return "running"
        if channel in self.channels:
            return "no source"
        return "not configured"

    def sources_running(self) -> dict[str, int]:
        """Each channel with a source: 1 when it takes input, 0 when paused (the ``hub_channel_running`` gauge)."""
        return {name: 0 if name in self._paused else 1 for name in self.sources}

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
        for (ch, dname), dest in self.destinations.items():
            batch, assembler = built.batches.get((ch, dname), (None, None))
            worker = DeliveryWorker(
                self.store,
                ch,
                dname,
                dest,
                built.queues[(ch, dname)],
                drop_content=self.channels[ch].drop_content,
                idle_poll=self.idle_poll,
                on_final=self._final,
                batch=batch,
                assembler=assembler,
            )
            self.workers[(ch, dname)] = worker
            worker.start()
        for channel in self.channels.values():
            channel.on_accepted = self._wake
        self.failed = {}
        for name, src in list(self.sources.items()):
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
            log.info("channel %s started", name)
            await self._record_state(name, "running")

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
        for src in self.sources.values():
            try:
                await src.stop()
            except Exception:
                log.exception("stopping a source failed")
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
        new files; nothing queued is lost because the queues are in the store. Settings of the store and the web
        app (store.url, web.listen, web.tls) are read at start only: changing them needs a restart.
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
        await self._start_channels(built)
        self._paused.clear()  # every channel was started again from the files
        log.info("reloaded %d channels from %s", len(self.channels), cfg.folder)
        return []

    async def prune(self) -> int:
        assert self.store is not None
        r = self.cfg.hub.retention
        n = await asyncio.to_thread(self.store.prune, parse_duration(r.messages), keep_unsent=r.keep_unsent)
        log.info("retention: pruned %d messages older than %s", n, r.messages)
        return n

    async def _recover(self) -> None:
        assert self.store is not None
        n = await asyncio.to_thread(self.store.recover)
        if n:
            log.info("took over %d deliveries whose sender's lease expired", n)
            for w in self.workers.values():
                w.wake()

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

    async def stop(self) -> None:
        """Stop taking input, let workers finish what they hold, close everything. Idempotent."""
        while self.services:
            await self.services.pop().stop()
        for p in self.pollers:
            await p.stop()
        self.pollers = []
        await self._stop_channels()
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

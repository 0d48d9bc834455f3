"""The web app: JSON API, dashboard, /metrics, /healthz (issue 7). ``await start(engine)`` → object with ``stop()``.

:func:`start` is a :data:`hub.engine.ServiceStarter`: ``hub run`` (:mod:`hub.cli`) passes it to the
:class:`~hub.engine.Engine` when ``web.enabled``, and the engine calls it once its channels run (and stops the
server before them). It creates the first admin from ``HUB_ADMIN_USER``/``HUB_ADMIN_PASSWORD`` when the store has
no user, registers the queue gauges, binds ``web.listen`` (HTTPS when ``web.tls`` names a certificate and key) and
serves the app with uvicorn as a task of the engine's own event loop. The web app sees the hub only through the
engine's facade (:class:`hub.engine.Engine`); the engine imports nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from hub.engine import Engine
    from hub.metrics import QueueCollector

__all__ = ["start", "WebServer"]

log = logging.getLogger("hub.web")


class WebServer:
    """The running web app. ``await stop()`` is idempotent."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        collector: QueueCollector | None,
        app: FastAPI,
        address: tuple[str, int],
        scheme: str,
    ) -> None:
        self.server = server
        self.task: asyncio.Task[None] | None = task
        self.collector = collector
        self.app = app
        self.address = address
        self.scheme = scheme

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{self.scheme}://{host}:{port}"

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()
        except Exception:
            log.exception("web: the server stopped with an error")
        self.task = None
        if self.collector is not None:
            from hub import metrics

            with contextlib.suppress(KeyError):
                metrics.REGISTRY.unregister(self.collector)
            self.collector = None
        log.info("web: stopped")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP, and an
    # accepted socket takes its proto from this one. With Nagle on, every answer written in two parts (headers,
    # body) waited for the client's delayed ACK: 40 ms per request, 20 requests/s on one connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start(engine: Engine, *, env: dict[str, str] | None = None) -> WebServer:
    import uvicorn

    from hub import metrics
    from hub.errors import ConfigError
    from hub.spec import parse_listen
    from hub.web import queries
    from hub.web.app import create_app, ensure_first_admin

    cfg = engine.cfg
    web = cfg.hub.web
    app = create_app(engine)
    state = app.state.hub
    await ensure_first_admin(state.auth, dict(os.environ) if env is None else env)

    for name, channel in engine.channels.items():
        metrics.touch_channel(name, channel.destinations)
    collector = metrics.QueueCollector(
        lambda: queries.queue_rows(state.store), state.running, known=lambda: list(engine.workers)
    )
    with contextlib.suppress(ValueError):  # another engine in this process registered one (tests)
        metrics.REGISTRY.register(collector)

    host, port = parse_listen(web.listen)
    kwargs: dict[str, Any] = {}
    scheme = "http"
    if web.tls is not None:
        cert, key = cfg.resolve(web.tls.cert), cfg.resolve(web.tls.key)
        ca = cfg.resolve(web.tls.ca) if web.tls.ca else None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            if ca is not None:
                ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"web.tls: cannot load {cert} / {key}{f' / {ca}' if ca else ''}: {exc}",
                [(str(cfg.folder / "hub.yaml"), 0, f"web.tls: {exc}")],
            ) from None
        kwargs.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
        if web.tls.client_cert != "none":  # mutual TLS: the handshake fails without a certificate signed by ca
            kwargs.update(
                ssl_ca_certs=str(ca),
                ssl_cert_reqs=ssl.CERT_REQUIRED if web.tls.client_cert == "required" else ssl.CERT_OPTIONAL,
            )
        scheme = "https"
    try:
        sock = _bind(host, port)
    except OSError as exc:
        with contextlib.suppress(KeyError):
            metrics.REGISTRY.unregister(collector)
        raise ConfigError(
            f"web.listen {web.listen}: {exc.strerror or exc}",
            [(str(cfg.folder / "hub.yaml"), 0, f"web.listen {web.listen}: {exc.strerror or exc}")],
        ) from None
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
        **kwargs,
    )

    class _Server(uvicorn.Server):
        def capture_signals(self) -> Any:  # the engine owns SIGINT/SIGTERM
            return contextlib.nullcontext()

    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
    while not server.started:
        if task.done():
            error = task.exception()
            raise ConfigError(f"web app did not start: {error}", [(str(cfg.folder / "hub.yaml"), 0, f"web: {error}")])
        await asyncio.sleep(0.01)
    bound = sock.getsockname()[:2]
    ws = WebServer(server, task, collector, app, (bound[0], bound[1]), scheme)
    log.info("web: dashboard and API at %s", ws.url)
    return ws

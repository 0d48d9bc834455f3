"""`hub run` serves the app with uvicorn inside the engine's loop: HTTPS with a configured certificate, the first
admin from the environment, the queue gauges on /metrics, routes of HTTP sources, a clean stop."""

from __future__ import annotations

import datetime
import socket
import ssl

import httpx
import pytest
from fastapi import APIRouter
from websupport import ADT, OTHER, hl7, start_hub, until, web_engine, web_server

from hub.engine import Engine
from hub.errors import ConfigError
from hub.spec import load_config
from support import write_config

PW = "a-long-synthetic-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "hub.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "hub.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "hub.crt", folder / "hub.key"


def config(tmp_path, port, extra=""):
    hub = f"store: {{url: 'sqlite:///{tmp_path / 'hub.db'}'}}\nweb:\n  listen: 127.0.0.1:{port}\n{extra}"
    return load_config(write_config(tmp_path / "cfg", hub, {"adt": ADT, "other": OTHER}))


async def test_https_first_admin_from_env_metrics_and_stop(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    port = free_port()
    monkeypatch.setenv("HUB_ADMIN_USER", "root")
    monkeypatch.setenv("HUB_ADMIN_PASSWORD", PW)
    eng = web_engine(config(tmp_path, port, f"  tls: {{cert: '{cert}', key: '{key}'}}\n"), idle_poll=0.05)
    await eng.start()
    web = web_server(eng)
    try:
        assert web is not None and web.url == f"https://127.0.0.1:{port}"
        await eng.sources["adt"].push(hl7("S1", "MRN1"))
        async with httpx.AsyncClient(
            base_url=web.url, verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        ) as c:
            r = await c.get("/healthz")
            assert r.json() == {"status": "ok"} and r.headers["strict-transport-security"]
            assert (await c.get("/api/channels")).status_code == 401
            r = await c.post("/api/login", json={"username": "root", "password": PW})
            assert r.status_code == 200 and r.json()["role"] == "admin"
            assert "secure" in r.headers["set-cookie"].lower()
            token = (
                await c.post("/api/users/root/tokens", json={}, headers={"X-CSRF-Token": r.json()["csrf"]})
            ).json()["token"]
            await until(lambda: eng.store.delivery_states(1) == ["sent", "dead"])
            m = (await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text
            assert 'hub_dead_letters{channel="adt",destination="flaky"} 1.0' in m
            assert 'hub_queue_depth{channel="adt",destination="ehr"} 0.0' in m
            assert 'hub_channel_running{channel="adt"} 1.0' in m and "hub_store_up 1.0" in m
            assert (
                'hub_messages_received_total{channel="other"}' in m
            )  # a silent channel has its series (counters are per process)
        # plain HTTP to the HTTPS port does not get an answer with data
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            with pytest.raises(httpx.HTTPError):
                (await c.get("/api/channels")).raise_for_status()
    finally:
        await eng.stop()
    assert web_server(eng) is None and web.task is None
    with pytest.raises(OSError):  # nobody listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_an_env_admin_is_not_made_when_users_exist_and_a_busy_port_is_a_config_error(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.delenv("HUB_ADMIN_USER", raising=False)
    monkeypatch.delenv("HUB_ADMIN_PASSWORD", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        eng = web_engine(config(tmp_path, port), idle_poll=0.05)
        with pytest.raises(ConfigError, match=r"web\.listen"):
            await eng.start()
        await eng.stop()


async def test_bad_tls_files_are_a_config_error(tmp_path):
    eng = web_engine(
        config(tmp_path, free_port(), f"  tls: {{cert: '{tmp_path}/nope.crt', key: '{tmp_path}/nope.key'}}\n"),
        idle_poll=0.05,
    )
    with pytest.raises(ConfigError, match=r"web\.tls"):
        await eng.start()
    await eng.stop()


async def test_routes_of_sources_with_a_router_are_served_by_the_app(tmp_path):
    from hub.web.app import create_app

    hub = await start_hub(tmp_path)
    try:
        r = APIRouter()

        @r.get("/fhir/metadata")
        def metadata() -> dict:
            return {"resourceType": "CapabilityStatement"}

        hub.engine.sources["other"].router = lambda: r
        app = create_app(hub.engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as c:
            assert (await c.get("/fhir/metadata")).json() == {"resourceType": "CapabilityStatement"}
    finally:
        await hub.close()


async def test_mutual_tls_on_the_web_port_takes_only_clients_with_a_certificate_from_its_ca(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
    from test_mllp_support import make_pki

    pki = make_pki(tmp_path / "pki")
    port = free_port()
    tls = f"  tls: {{cert: '{pki.server_cert}', key: '{pki.server_key}', ca: '{pki.ca}', client_cert: required}}\n"
    eng = web_engine(config(tmp_path, port, tls), idle_poll=0.05)
    await eng.start()
    web = web_server(eng)
    assert web is not None
    try:

        def ctx(cert=None, key=None):
            c = ssl.create_default_context(cafile=str(pki.ca))
            if cert:
                c.load_cert_chain(str(cert), str(key))
            return c

        async with httpx.AsyncClient(base_url=web.url, verify=ctx(pki.client_cert, pki.client_key), timeout=10) as c:
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            assert (await c.get("/api/channels")).status_code == 401  # the certificate opens the door, not the API
        for bad in (ctx(), ctx(pki.rogue_cert, pki.rogue_key)):  # no certificate; one from another CA
            async with httpx.AsyncClient(base_url=web.url, verify=bad, timeout=5) as c:
                with pytest.raises((httpx.HTTPError, ssl.SSLError)):
                    (await c.get("/healthz")).raise_for_status()
    finally:
        await eng.stop()


def test_a_client_certificate_needs_the_ca_that_signs_it(tmp_path):
    cfg = config(tmp_path, free_port(), "  tls: {cert: a.crt, key: a.key, client_cert: required}\n")
    assert any("client_cert needs ca" in str(p) for p in cfg.problems)


async def test_web_enabled_false_serves_nothing(tmp_path):
    port = free_port()
    cfg = config(tmp_path, port, "  enabled: false\n")
    eng = web_engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        assert eng.services == [] and web_server(eng) is None and "adt" in eng.sources
        with pytest.raises(OSError):  # nobody listens
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        await eng.stop()


async def test_services_start_once_the_channels_run_and_stop_before_them(tmp_path):
    seen: list[str] = []

    class Service:
        def __init__(self, name: str, eng: Engine) -> None:
            self.name, self.eng = name, eng
            seen.append(f"start {name}: {sorted(eng.sources)} {eng.channel_state('adt')}")

        async def stop(self) -> None:
            seen.append(f"stop {self.name}: {sorted(self.eng.sources)}")

    async def first(eng: Engine) -> Service:
        return Service("first", eng)

    async def second(eng: Engine) -> Service:
        return Service("second", eng)

    eng = Engine(config(tmp_path, free_port(), "  enabled: false\n"), idle_poll=0.05, services=[first, second])
    await eng.start()
    await eng.stop()
    assert seen == [
        "start first: ['adt', 'other'] running",
        "start second: ['adt', 'other'] running",
        "stop second: ['adt', 'other']",
        "stop first: ['adt', 'other']",
    ]
    assert eng.services == []


def test_the_web_port_turns_nagle_off_for_every_connection():
    """An answer is written in two parts (headers, body); with Nagle's algorithm on, the second waited for the
    client's delayed ACK — 40 ms a request. asyncio turns it off on accepted sockets that say they are TCP, and an
    accepted socket is made like the listening one: it must be IPPROTO_TCP, with TCP_NODELAY set."""
    import socket

    from hub.web import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client = socket.create_connection(sock.getsockname()[:2])
        sock.setblocking(True)
        accepted, _ = sock.accept()
        with client, accepted:
            assert accepted.proto == socket.IPPROTO_TCP and accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()

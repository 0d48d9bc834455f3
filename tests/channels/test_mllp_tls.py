"""MLLP over TLS and mutual TLS, with a throwaway CA and certificates made by ``cryptography`` for each test run."""

from __future__ import annotations

import ssl

import pytest
from test_mllp_support import Client, Peer, adt, make_pki, mllp_channel, msa, start_engine, until

from hub.channels.base import Context
from hub.channels.mllp import MllpDestination
from hub.errors import RetryableDelivery
from hub.message import Message


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_ctx(pki, cert=None, key=None) -> ssl.SSLContext:
    c = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        c.load_cert_chain(str(cert), str(key))
    return c


async def refused(port: int, ctx: ssl.SSLContext | None) -> bool:
    """The connection is refused: the handshake fails, or the server closes before answering."""
    try:
        c = await Client.connect(port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    try:
        await c.send(adt("NO"), timeout=3)
    except (ssl.SSLError, ConnectionError, OSError, EOFError, Exception):
        return True
    finally:
        c.close()
    return False


async def test_tls_listener(tmp_path, pki):
    tls = f"tls: {{cert: '{pki.server_cert}', key: '{pki.server_key}'}}"
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel(tls)})
    try:
        port = eng.sources["c"].port
        c = await Client.connect(port, ssl=client_ctx(pki), server_hostname="127.0.0.1")
        assert msa(await c.send(adt("T1")))[:2] == ["AA", "T1"]
        c.close()
        assert await refused(port, None)  # plain MLLP on a TLS port gets nothing
    finally:
        await eng.stop()


async def test_mutual_tls_listener_takes_only_certificates_from_its_ca(tmp_path, pki):
    tls = f"tls: {{cert: '{pki.server_cert}', key: '{pki.server_key}', ca: '{pki.ca}', client_cert: required}}"
    eng = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", {"c": mllp_channel(tls)})
    try:
        port = eng.sources["c"].port
        c = await Client.connect(
            port, ssl=client_ctx(pki, pki.client_cert, pki.client_key), server_hostname="127.0.0.1"
        )
        assert msa(await c.send(adt("M1")))[:2] == ["AA", "M1"]
        c.close()
        assert await refused(port, client_ctx(pki))  # no client certificate
        assert await refused(port, client_ctx(pki, pki.rogue_cert, pki.rogue_key))  # signed by another CA
        await until(lambda: eng.sources["c"].counts["tls_failed"] == 2)
        c = await Client.connect(
            port, ssl=client_ctx(pki, pki.client_cert, pki.client_key), server_hostname="127.0.0.1"
        )
        assert msa(await c.send(adt("M2")))[:2] == ["AA", "M2"]  # still serving
        c.close()
    finally:
        await eng.stop()


async def test_hub_to_hub_over_mutual_tls(tmp_path, pki):
    """The hub's sender delivers to the hub's listener, both sides checking certificates."""
    listen = f"tls: {{cert: '{pki.server_cert}', key: '{pki.server_key}', ca: '{pki.ca}', client_cert: required}}"
    receiver = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'rx.db'}", {"c": mllp_channel(listen)})
    port = receiver.sources["c"].port
    sender_chan = f"""
name: c
source: {{type: memory, format: hl7v2}}
routes: [{{name: all, to: [lab]}}]
destinations:
  lab:
    type: mllp
    address: "127.0.0.1:{port}"
    tls: {{ca: '{pki.ca}', cert: '{pki.client_cert}', key: '{pki.client_key}'}}
    queue: {{backoff: {{initial: 50ms, max: 100ms}}}}
"""
    sender = await start_engine(tmp_path, f"sqlite:///{tmp_path / 'tx.db'}", {"c": sender_chan})
    try:
        r = await sender.sources["c"].push(adt("HH1"))
        mid = r.results[0].message_id
        await until(lambda: sender.store.delivery_states(mid) == ["sent"])
        assert "MSA|AA|HH1" in sender.store.get_message(mid)["deliveries"][0]["response"]
        await until(lambda: [m.meta["control_id"] for m in receiver.destinations[("c", "out")].sent] == ["HH1"])
    finally:
        await sender.stop()
        await receiver.stop()


async def test_tls_sender_checks_the_server(tmp_path, pki):
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    peer = await Peer().start(ssl=server)

    def dest(**tls) -> MllpDestination:
        conf = MllpDestination.Config.model_validate(
            {
                "type": "mllp",
                "address": f"127.0.0.1:{peer.port}",
                "tls": tls,
                "reconnect": {"initial": "10ms", "max": "10ms"},
            }
        )
        return MllpDestination(conf, Context(channel="c"))

    msg = Message(raw=adt("S1"), content_type="hl7v2", meta={"destination": "lab"})
    try:
        good = dest(ca=str(pki.ca))
        assert "MSA|AA|S1" in await good.send(msg)
        await good.close()
        stranger = dest(ca=str(pki.rogue_cert))  # trusts someone else: the server is not verified
        with pytest.raises(RetryableDelivery, match="cannot connect"):
            await stranger.send(msg)
        await stranger.close()
        lax = dest(verify=False)
        assert "MSA|AA|S1" in await lax.send(msg)
        await lax.close()
    finally:
        await peer.stop()

"""The ``http`` destination against a real HTTP(S) server on 127.0.0.1 (:mod:`http_peer`): templates, statuses
judged retry or dead, Retry-After, timeouts, bearer/basic/OAuth 2 (cached, renewed on 401 and on expiry), mutual
TLS, the answer stored with the delivery and ``response_to`` feeding another channel."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest
from http_peer import Answer, HttpPeer
from test_mllp_support import make_pki

from hub.channels.base import Context
from hub.channels.http import HttpDestination, decode_answer
from hub.engine import Engine
from hub.errors import PermanentDelivery, RetryableDelivery
from hub.message import Message
from hub.spec import load_config
from hub.store import SearchQuery
from support import until, write_config

ADT = (
    b"MSH|^~\\&|PM|CLINIC|LAB|CLINIC|20260310090000||ADT^A04^ADT_A01|CTRL1|P|2.5.1\r"
    b"PID|1||MRN 42^^^CLINIC^MR||DOE^JANE||19800214|F\r"
)


@pytest.fixture
def peer():
    p = HttpPeer()
    yield p
    p.close()


def dest(tmp_path=None, **cfg) -> HttpDestination:
    conf = HttpDestination.Config.model_validate({"type": "http", **cfg})
    return HttpDestination(conf, Context(home=tmp_path) if tmp_path else Context())


def adt(mid: int = 7) -> Message:
    return Message(
        raw=ADT, content_type="hl7v2", id=mid, channel="lab", meta={"delivery_id": 70, "control_id": "CTRL1"}
    )


async def test_a_templated_request_is_sent_and_the_answer_is_stored(peer):
    peer.script = [Answer(201, b'{"id":"o-1"}', {"Content-Type": "application/json", "Location": "/orders/o-1"})]
    d = dest(
        url=peer.url + "/orders/{PID-3.1}?control={control_id}",
        method="PUT",
        headers={"X-Correlation-Id": "{message_id}-{delivery_id}", "X-Tenant": "clinic"},
    )
    try:
        stored = await d.send(adt())
    finally:
        await d.close()
    seen = peer.seen[0]
    assert seen.method == "PUT" and seen.path == "/orders/MRN%2042?control=CTRL1"  # values are percent-encoded
    assert seen.headers["x-correlation-id"] == "7-70" and seen.headers["x-tenant"] == "clinic"
    assert seen.headers["content-type"] == "x-application/hl7-v2+er7" and seen.body == ADT
    status, ctype, body = decode_answer(stored)
    assert (status, ctype, body) == (201, "application/json", '{"id":"o-1"}')
    assert stored.startswith("HTTP 201 Created\n")


async def test_a_missing_template_value_is_dead_not_sent_elsewhere(peer):
    d = dest(url=peer.url + "/p/{PV1-19}")
    with pytest.raises(PermanentDelivery, match=r"\{PV1-19\} has no value"):
        await d.send(adt())
    assert peer.seen == []


@pytest.mark.parametrize(
    "status,retry",
    [(400, False), (404, False), (409, False), (408, True), (429, True), (500, True), (502, True), (503, True)],
)
async def test_statuses_decide_retry_or_dead_and_the_answer_is_kept(peer, status, retry):
    peer.script = [Answer(status, b"why: synthetic", {"Content-Type": "text/plain"})]
    d = dest(url=peer.url + "/in")
    with pytest.raises(RetryableDelivery if retry else PermanentDelivery) as info:
        await d.send(adt())
    await d.close()
    assert f"HTTP {status}" in str(info.value) and info.value.response.endswith("why: synthetic")
    assert decode_answer(info.value.response)[0] == status


async def test_retry_after_is_honoured_as_seconds_and_as_a_date(peer):
    from email.utils import formatdate

    peer.script = [
        Answer(429, b"slow down", {"Retry-After": "120"}),
        Answer(503, b"", {"Retry-After": formatdate(time.time() + 60, usegmt=True)}),
    ]
    d = dest(url=peer.url + "/in")
    with pytest.raises(RetryableDelivery) as a:
        await d.send(adt())
    with pytest.raises(RetryableDelivery) as b:
        await d.send(adt())
    await d.close()
    assert a.value.retry_after == 120
    assert 55 <= b.value.retry_after <= 61


async def test_a_slow_peer_times_out_and_a_closed_port_is_a_connection_error(peer):
    peer.script = [Answer(200, b"late", delay=1.5)]
    d = dest(url=peer.url + "/slow", timeout="0.3s")
    t0 = time.monotonic()
    with pytest.raises(RetryableDelivery, match=r"no answer within 0\.3s"):
        await d.send(adt())
    assert time.monotonic() - t0 < 1.4
    await d.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    d = dest(url=f"http://127.0.0.1:{port}/x")
    with pytest.raises(RetryableDelivery, match="ConnectError"):
        await d.send(adt())
    await d.close()


async def test_a_redirect_is_dead_with_a_reason(peer):
    peer.script = [Answer(301, b"", {"Location": "https://elsewhere.example/in"})]
    d = dest(url=peer.url + "/old")
    with pytest.raises(PermanentDelivery, match="redirects are not followed"):
        await d.send(adt())
    await d.close()


async def test_an_hl7_ack_in_the_answer_is_judged(peer):
    ae = b"MSH|^~\\&|LAB|CLINIC|PM|CLINIC|20260310||ACK^A04^ACK|A1|P|2.5.1\rMSA|AE|CTRL1\rERR||||E||||busy\r"
    ar = ae.replace(b"MSA|AE", b"MSA|AR")
    aa = ae.replace(b"MSA|AE", b"MSA|AA").split(b"ERR")[0]
    peer.script = [Answer(200, ae), Answer(200, ar), Answer(200, aa)]
    d = dest(url=peer.url + "/hl7")
    with pytest.raises(RetryableDelivery, match="ACK is AE"):
        await d.send(adt())
    with pytest.raises(PermanentDelivery, match="ACK is AR"):
        await d.send(adt())
    assert "MSA|AA" in await d.send(adt())
    await d.close()


async def test_bearer_and_basic_auth(peer):
    peer.basic = ("hub", "pw-synthetic")
    d = dest(url=peer.url + "/b", auth={"type": "basic", "username": "hub", "password": "pw-synthetic"})
    await d.send(adt())
    bad = dest(url=peer.url + "/b", auth={"type": "basic", "username": "hub", "password": "wrong"})
    with pytest.raises(PermanentDelivery, match="HTTP 401"):
        await bad.send(adt())
    peer.basic = None
    tok = dest(url=peer.url + "/t", auth={"type": "bearer", "token": "abc"}, method="GET")
    await tok.send(adt())
    assert peer.seen[-1].headers["authorization"] == "Bearer abc" and peer.seen[-1].body == b""  # GET: no body
    for x in (d, bad, tok):
        await x.close()


async def test_oauth2_client_credentials_token_is_cached_renewed_on_401_and_on_expiry(peer):
    peer.need_bearer = True
    auth = {
        "type": "oauth2",
        "token_url": peer.url + "/token",
        "client_id": peer.client_id,
        "client_secret": peer.client_secret,
        "scope": "orders.write",
    }
    d = dest(url=peer.url + "/api", auth=auth)
    for _ in range(3):
        await d.send(adt())
    assert peer.tokens == ["tok-1"]  # one token for three requests
    assert peer.token_requests[0] == {"grant_type": "client_credentials", "scope": "orders.write"}
    assert {s.headers["authorization"] for s in peer.seen} == {"Bearer tok-1"}
    peer.revoke()  # the server forgets it: a 401, one new token, the request again
    await d.send(adt())
    assert peer.tokens == ["tok-1", "tok-2"] and peer.seen[-1].headers["authorization"] == "Bearer tok-2"
    d.authorizer.token.expires = time.time() - 1  # expired: a new one before the request
    await d.send(adt())
    assert peer.tokens[-1] == "tok-3" and peer.seen[-1].headers["authorization"] == "Bearer tok-3"
    await d.close()
    # client_secret_post, and a wrong secret is dead (the token endpoint's 401)
    post = dest(url=peer.url + "/api", auth={**auth, "client_auth": "post"})
    await post.send(adt())
    assert peer.token_requests[-1]["client_secret"] == peer.client_secret
    wrong = dest(url=peer.url + "/api", auth={**auth, "client_secret": "nope"})
    with pytest.raises(PermanentDelivery, match="token endpoint answered HTTP 401"):
        await wrong.send(adt())
    for x in (post, wrong):
        await x.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_mutual_tls(pki, tmp_path):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    ctx.load_verify_locations(cafile=str(pki.ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    peer = HttpPeer(tls=ctx)
    try:
        good = dest(
            tmp_path,
            url=peer.url + "/m",
            tls={"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)},
        )
        await good.send(adt())
        subject = dict(x[0] for x in peer.seen[-1].client_cert["subject"])
        assert subject["commonName"] == "lab-interface"
        no_cert = dest(tmp_path, url=peer.url + "/m", tls={"ca": str(pki.ca)})
        with pytest.raises(RetryableDelivery):  # the handshake fails: retried (an operator fixes the certificate)
            await no_cert.send(adt())
        unknown_server = dest(tmp_path, url=peer.url + "/m")  # the system CAs do not know the test CA
        with pytest.raises(RetryableDelivery, match="ConnectError"):
            await unknown_server.send(adt())
        for x in (good, no_cert, unknown_server):
            await x.close()
    finally:
        peer.close()


def test_configs_are_checked():
    with pytest.raises(ValueError, match="not an http"):
        HttpDestination.Config.model_validate({"type": "http", "url": "ftp://x"})
    with pytest.raises(ValueError, match="unbalanced"):
        HttpDestination.Config.model_validate({"type": "http", "url": "http://x/{PID-3"})
    with pytest.raises(ValueError, match="both cert and key"):
        HttpDestination.Config.model_validate({"type": "http", "url": "http://x", "tls": {"cert": "c.pem"}})
    with pytest.raises(ValueError, match="Extra inputs"):
        HttpDestination.Config.model_validate({"type": "http", "url": "http://x", "retries": 3})
    with pytest.raises(ValueError):
        HttpDestination.Config.model_validate({"type": "http", "url": "http://x", "auth": {"type": "oauth2"}})


# ---------------------------------------------------------------------------------------------- in a running hub
HUB = "store: {{url: 'sqlite:///{db}'}}\nweb: {{enabled: false}}\nenv: {{CLEARINGHOUSE_TOKEN: synthetic-token}}\n"
ELIG = """
name: eligibility
source: {{type: memory, format: x12, validate: none}}
routes:
  - {{name: all, to: [clearinghouse]}}
destinations:
  clearinghouse:
    type: http
    url: '{url}/270?id={{message_id}}'
    auth: {{type: bearer, token: '${{CLEARINGHOUSE_TOKEN}}'}}
    response_to: replies
    queue: {{max_attempts: 3, backoff: {{initial: 0.05s, max: 0.1s}}}}
"""
REPLIES = """
name: replies
source: {type: channel}
routes:
  - {name: all, to: [kept]}
destinations:
  kept: {type: memory}
"""
X270 = (
    b"ISA*00*          *00*          *ZZ*CLINIC         *ZZ*PAYER          *260310*0900*^*00501*000000101*0*P*:~"
    b"GS*HS*CLINIC*PAYER*20260310*0900*101*X*005010X279A1~ST*270*0001*005010X279A1~SE*2*0001~GE*1*101~IEA*1*000000101~"
)
X271 = X270.replace(b"270*0001", b"271*0001").replace(b"*HS*", b"*HB*")


async def test_the_answer_becomes_a_message_of_the_response_to_channel_once(tmp_path, peer):
    peer.script = [Answer(503, b"", {"Retry-After": "0"}), Answer(200, X271, {"Content-Type": "application/edi-x12"})]
    cfg = load_config(
        write_config(
            tmp_path / "cfg",
            HUB.format(db=tmp_path / "hub.db"),
            {"eligibility": ELIG.format(url=peer.url), "replies": REPLIES},
        )
    )
    assert not cfg.problems
    eng = Engine(cfg, idle_poll=0.05)
    await eng.start()
    try:
        receipt = await eng.channels["eligibility"].receive(X270)
        mid = receipt.results[0].message_id
        kept = eng.destinations[("replies", "kept")]
        await until(lambda: len(kept.sent) == 1, what="the 271 reached the replies channel")
        reply = kept.sent[0]
        assert reply.raw == X271 and reply.content_type == "x12" and reply.meta["in_reply_to"] == mid
        assert peer.seen[-1].headers["authorization"] == "Bearer synthetic-token"  # ${VAR} through the spec
        assert peer.seen[-1].path == f"/270?id={mid}"
        msg = await asyncio.to_thread(eng.store.get_message, mid)
        (d,) = msg["deliveries"]
        assert d["status"] == "sent" and d["attempts"] == 2
        status, ctype, body = decode_answer(d["response"])
        assert (status, ctype, body.encode()) == (200, "application/edi-x12", X271)
        assert "X-Hub-Reply: accepted by channel replies as message" in d["response"]
        replies = await asyncio.to_thread(eng.store.search, SearchQuery(channel="replies"))
        assert len(replies) == 1  # once, though the request was sent twice
    finally:
        await eng.stop()


async def test_hub_check_finds_a_response_to_channel_that_does_not_exist(tmp_path, peer):
    from hub.engine import check

    cfg = load_config(
        write_config(tmp_path / "cfg", HUB.format(db=tmp_path / "hub.db"), {"eligibility": ELIG.format(url=peer.url)})
    )
    problems = [str(p) for p in check(cfg)]
    assert any("response_to: no channel named 'replies'" in p for p in problems), problems

"""Ids beyond the store's 64-bit integers are refused (422) like any other bad id, never an HTTP 500 (issue 13)."""

from __future__ import annotations

import pytest
from websupport import hl7, start_hub

HUGE = "99999999999999999999"  # 20 digits: more than a 64-bit integer holds
TINY = "-99999999999999999999"


@pytest.fixture
async def hub(tmp_path):
    h = await start_hub(tmp_path)
    yield h
    await h.close()


@pytest.mark.parametrize("number", [HUGE, TINY])
async def test_ids_too_large_for_the_store_are_refused_with_422(hub, number):
    await hub.push(hl7("CTRL1", "MRN1"))
    admin = hub.client("admin")
    for method, path, params, body in [
        ("GET", f"/api/messages/{number}", None, None),
        ("GET", f"/api/messages/{number}/raw", None, None),
        ("POST", f"/api/messages/{number}/replay", None, {}),
        ("GET", "/api/messages", {"before_id": number}, None),
        ("GET", "/api/dead-letters", {"before_id": number}, None),
        ("GET", "/api/audit", {"message_id": number}, None),
        ("GET", "/api/audit", {"before_id": number}, None),
        ("POST", "/api/replay", None, {"message_ids": [int(number)]}),
        ("DELETE", f"/api/tokens/{number}", None, None),
    ]:
        r = await admin.request(method, path, params=params, json=body)
        assert r.status_code == 422, (method, path, params, r.status_code, r.text)


async def test_the_largest_64_bit_id_is_simply_not_found(hub):
    admin = hub.client("admin")
    biggest = str(2**63 - 1)
    assert (await admin.get(f"/api/messages/{biggest}")).status_code == 404
    assert (await admin.get(f"/api/messages/{biggest}/raw")).status_code == 404
    r = await admin.get("/api/messages", params={"before_id": biggest})
    assert r.status_code == 200 and [m["control_id"] for m in r.json()["items"]] == []
    assert (await admin.get("/api/dead-letters", params={"before_id": biggest})).status_code == 200
    assert (await admin.get("/api/audit", params={"message_id": biggest, "before_id": biggest})).status_code == 200

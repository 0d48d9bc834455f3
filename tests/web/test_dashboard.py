"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright; no browser is downloaded):
log in, see the overview, find a message by patient id, open it (HL7 segment by segment), replay it.
Screenshots are saved (to $HUB_SCREENSHOT_DIR when set) and checked: PNG files of the viewport's size."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
from websupport import ADT, OTHER, hl7, until, web_engine, web_server

from hub.spec import load_config
from hub.store.auth import AuthStore
from support import need_peer, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
PW = "synthetic-browser-pass"
PATIENT = "MRN-BROWSER-42"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def running(tmp_path):
    port = free_port()
    hub_yaml = f"store: {{url: 'sqlite:///{tmp_path / 'hub.db'}'}}\nweb: {{listen: '127.0.0.1:{port}'}}\n"
    eng = web_engine(
        load_config(write_config(tmp_path / "cfg", hub_yaml, {"adt": ADT, "other": OTHER})), idle_poll=0.05
    )
    await eng.start()
    auth = AuthStore(eng.store)
    auth.add_user("olivia", "operator", PW)
    receipt = await eng.sources["adt"].push(hl7("CTRL-B42", PATIENT, trigger="A08", name="DOE^JANE^Q"))
    mid = receipt.results[0].message_id
    for i in range(4):
        await eng.sources["adt"].push(hl7(f"CTRL{i}", f"MRN-OTHER-{i}", name=f"SAMPLE{i}^ALEX"))
    await until(lambda: eng.store.delivery_states(mid) == ["sent", "dead"])  # its 'flaky' delivery went dead
    try:
        yield eng, mid
    finally:
        await eng.stop()


async def test_log_in_find_a_message_by_patient_id_open_it_and_replay_it(running, tmp_path):
    need_peer(Path(CHROMIUM).exists(), "Debian's chromium is not installed (tests/peers.sh installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        need_peer(False, "the playwright package is not installed (pip install -e '.[test]')")
    eng, mid = running
    web = web_server(eng)
    assert web is not None
    base = web.url
    shots = Path(os.environ.get("HUB_SCREENSHOT_DIR") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    requests: list[str] = []

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))

            # 1. the dashboard sends a stranger to the login page
            await page.goto(base + "/")
            await page.wait_for_url("**/login?next=%2F")
            await page.screenshot(path=shots / "1-login.png")
            await page.fill("#username", "olivia")
            await page.fill("#password", "wrong password here")
            await page.click("#login-button")
            await page.wait_for_selector("#login-error:not([hidden])")
            assert "Wrong name or password" in await page.inner_text("#login-error")
            await page.fill("#password", PW)
            await page.click("#login-button")

            # 2. the overview: channels, destinations, counts, dead letters
            await page.wait_for_selector("#channels tr.channel[data-channel='adt']")
            row = await page.inner_text("tr.channel[data-channel='adt']")
            assert "running" in row and "5" in row
            assert await page.locator("tr.dest[data-destination='adt/flaky']").is_hidden()  # until the row is clicked
            await page.click("tr.channel[data-channel='adt'] td.hcell")
            cells = await page.locator("tr.dest[data-destination='adt/flaky'] td").all_inner_texts()
            assert "sent 4" in cells[3] and cells[7] == "1"  # sent, dead
            assert "olivia (operator)" in await page.inner_text("#who")
            await page.screenshot(path=shots / "2-overview.png")

            # 3. find the message by patient id
            await page.click("#nav a[data-page='messages']")
            await page.wait_for_selector("#message-table")
            await page.fill("#f-patient_id", PATIENT)
            await page.click("#search-button")
            await page.wait_for_selector(
                "#message-table tbody tr:only-child"
            )  # one match (the CSP forbids eval'd waits)
            found = await page.inner_text("#message-table tbody tr")
            assert PATIENT in found and "CTRL-B42" in found and "ADT^A08" in found
            await page.screenshot(path=shots / "3-search.png")

            # 4. open it: HL7 v2 one line a segment, a click shows a segment's fields with their names; each
            # delivery's copy with its response and attempts on a tab of its own
            await page.click(f"#message-table tbody tr[data-id='{mid}']")
            await page.wait_for_selector(".segments.hl7 .seg[data-segment='PID']")
            await page.click(".segments.hl7 .seg[data-segment='PID'] .seg-line")
            pid5 = await page.inner_text(".segments.hl7 tr[data-field='PID-5']")
            assert "Patient Name" in pid5 and "DOE^JANE^Q" in pid5
            await page.click(".segments.hl7 .seg[data-segment='MSH'] .seg-line")
            assert "Message Type" in await page.inner_text(".segments.hl7 tr[data-field='MSH-9']")
            assert "dead" in await page.inner_text("#deliveries tr[data-destination='flaky']")
            await page.click(".main-tabs button[data-tab='d:ehr']")
            assert "ok" in await page.locator("section.delivery[data-destination='ehr']").inner_text()  # the answer
            await page.screenshot(path=shots / "4-detail.png")
            await page.click(".main-tabs button[data-tab='received']")
            await page.click(".expand-all")
            await page.screenshot(path=shots / "4-detail-full.png", full_page=True)

            # 5. replay the dead delivery (the confirmation names it, and only it); it is sent this time
            await page.locator("#deliveries tr[data-destination='flaky'] button.replay-one").click()
            await page.wait_for_selector("dialog#confirm[open] #replay-plan")
            assert await page.locator("#replay-plan li").all_inner_texts() == [f"message {mid} → flaky dead"]
            await page.click("#confirm-ok")
            await page.wait_for_selector("#toast:not([hidden])")
            assert "Queued 1 delivery again" in await page.inner_text("#toast")
            await until(lambda: eng.store.delivery_states(mid) == ["sent", "sent"])
            await page.reload()
            await page.wait_for_selector("#deliveries tr[data-destination='flaky'] .badge.sent")
            await page.screenshot(path=shots / "5-replayed.png")
        finally:
            await browser.close()

    problems = [m for m in problems if "401 (Unauthorized)" not in m]  # the wrong password on purpose
    assert problems == [], problems  # no script error, no blocked resource (CSP), no missing asset
    assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]  # no CDN
    for name in ("1-login", "2-overview", "3-search", "4-detail", "5-replayed"):
        path = shots / f"{name}.png"
        assert png_size(path) == (VIEWPORT["width"], VIEWPORT["height"]), name
        assert path.stat().st_size > 10_000, name  # a rendered page, not a blank one
    width, height = png_size(shots / "4-detail-full.png")
    assert width == VIEWPORT["width"] and height > VIEWPORT["height"]  # the whole message, below the fold too
    actions = [(a["action"], a["message_id"]) for a in AuthStore(eng.store).search_audit(username="olivia")]
    assert ("view_message", mid) in actions and ("replay", mid) in actions and ("login", None) in actions

"""Every dashboard page in a real browser (Debian's headless Chromium driven by Playwright), as an operator, an
analyst and an admin, on a running engine with traffic, a dead letter, a retrying delivery and a rejected message.

Screenshots of every page are written at 1440×900 and 390×844 (and the wide ones again in dark mode) to
$HUB_SCREENSHOT_DIR, else var/screenshots/ of the repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import ARGS, CHROMIUM, free_port, png_size
from websupport import hl7, until, web_engine, web_server

from hub.spec import load_config
from hub.store.auth import AuthStore
from support import ROOT, SAMPLES, need_peer, write_config

PW = "synthetic-pages-pass"
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 390, "height": 844}

ADT = """
name: adt
description: Registrations from the PM system (test)
source: {type: memory, format: hl7v2}
routes:
  - name: to_ehr
    transforms:
      - {type: set, path: MSH-5, value: EHR-INBOX}
    to: [ehr]
  - {name: others, to: [flaky, slow]}
destinations:
  ehr: {type: memory}
  flaky: {type: memory, fail: permanent, fail_times: 1, queue: {max_attempts: 1}}
  slow: {type: memory, fail: retry, fail_times: 100000, queue: {max_attempts: 50, backoff: {initial: 1h, max: 2h}}}
"""

RAW = """
name: {name}
description: Feed number {n} (test)
source: {{type: memory, format: raw}}
routes:
  - {{name: all, to: [out]}}
destinations:
  out: {{type: memory}}
"""

CHANNELS = ["adt"] + [f"feed{n:02d}" for n in range(1, 20)]  # 20 channels


def adt6(control_id: str, patient: str) -> bytes:
    """A six-segment ADT^A08 (MSH EVN PID NK1 PV1 AL1)."""
    return (
        f"MSH|^~\\&|PM|CLINIC|EHR|CLINIC|20260310090000||ADT^A08^ADT_A01|{control_id}|P|2.5.1\r"
        "EVN|A08|20260310090000\r"
        f"PID|1||{patient}^^^CLINIC^MR||DOE^JANE^Q||19800214|F|||1 MAIN ST^^SPRINGFIELD^IL^62701||555-0100\r"
        "NK1|1|DOE^JOHN|SPO|1 MAIN ST^^SPRINGFIELD^IL^62701|555-0101\r"
        "PV1|1|O|CLINIC^101^1||||1234^WELBY^MARCUS\r"
        "AL1|1|DA|PCN^PENICILLIN|SV|RASH\r"
    ).encode()


def shot_dir() -> Path:
    d = Path(os.environ.get("HUB_SCREENSHOT_DIR") or ROOT / "var" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
async def hub(tmp_path):
    port = free_port()
    hub_yaml = f"store: {{url: 'sqlite:///{tmp_path / 'hub.db'}'}}\nweb: {{listen: '127.0.0.1:{port}'}}\n"
    chans = {"adt": ADT} | {n: RAW.format(name=n, n=i) for i, n in enumerate(CHANNELS[1:], start=1)}
    chans["feed18"] = chans["feed18"].replace("format: raw", "format: fhir")
    chans["feed19"] = chans["feed19"].replace("format: raw", "format: x12")
    eng = web_engine(load_config(write_config(tmp_path / "cfg", hub_yaml, chans)), idle_poll=0.05)
    await eng.start()
    auth = AuthStore(eng.store)
    for name, role in (("olivia", "operator"), ("anna", "analyst"), ("adam", "admin")):
        auth.add_user(name, role, PW)
    adt = eng.sources["adt"]
    mid = (await adt.push(adt6("CTRL-P1", "MRN-PAGES-1"))).results[0].message_id  # its flaky copy goes dead
    others = [(await adt.push(hl7(f"CTRL-P{i + 2}", f"MRN-PAGES-{i + 2}"))).results[0].message_id for i in range(3)]
    rejected = (await adt.push(b"not hl7 at all")).results[0].message_id
    patient = b'{"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe", "given": ["Jane"]}]}'
    fhir = (await eng.sources["feed18"].push(patient)).results[0].message_id
    ack = (SAMPLES / "x12" / "ack_999_accepted.999").read_bytes()
    x12 = (await eng.sources["feed19"].push(ack)).results[0].message_id
    for n in CHANNELS[1:6]:
        for i in range(3):
            await eng.sources[n].push(f"line {i} of {n}\n".encode())
    await until(lambda: eng.store.delivery_states(mid) == ["sent", "dead", "retry"])
    for o in others:  # sent to the EHR and the flaky one; queued behind the retrying one to the slow one
        await until(lambda o=o: eng.store.delivery_states(o) == ["sent", "sent", "queued"])
    if getattr(eng, "evaluator", None) is not None:  # the hub's own alert rules, now rather than in 30 s
        await eng.evaluator.evaluate()
    web = web_server(eng)
    assert web is not None
    try:
        yield {"engine": eng, "mid": mid, "rejected": rejected, "fhir": fhir, "x12": x12, "base": web.url}
    finally:
        await eng.stop()


class Browser:
    """One logged-in page; collects console errors and every requested URL; takes the screenshot sets."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.shots: list[Path] = []
        page.on("console", lambda m: self.problems.append(f"{m.text} {m.location}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    async def login(self, user: str) -> None:
        await self.page.goto(self.base + "/login")
        await self.page.fill("#username", user)
        await self.page.fill("#password", PW)
        await self.page.click("#login-button")
        await self.ready()

    async def ready(self) -> None:
        await self.page.wait_for_selector("body[data-ready='1']")

    async def go(self, path: str) -> None:
        await self.page.goto(self.base + path)
        await self.ready()

    async def shoot(self, name: str, *, dark: bool = True) -> None:
        """The page at 1440×900, at 390×844 and (wide) in dark mode."""
        d = shot_dir()
        page = self.page
        await page.set_viewport_size(WIDE)
        await page.screenshot(path=d / f"{name}.png")
        self.shots.append(d / f"{name}.png")
        if dark:
            await page.emulate_media(color_scheme="dark")
            await page.screenshot(path=d / f"{name}-dark.png")
            self.shots.append(d / f"{name}-dark.png")
            await page.emulate_media(color_scheme="light")
        await page.set_viewport_size(NARROW)
        await page.screenshot(path=d / f"{name}-narrow.png")
        self.shots.append(d / f"{name}-narrow.png")
        await page.set_viewport_size(WIDE)

    def check(self) -> None:
        assert self.problems == [], self.problems  # no script error, no CSP block, no missing asset
        outside = [u for u in self.requests if not u.startswith(self.base)]
        assert outside == [], outside  # no CDN, nothing outside the hub's origin
        for path in self.shots:
            assert png_size(path) in ((1440, 900), (390, 844)), path
            assert path.stat().st_size > 8_000, path  # a rendered page, not a blank one


async def browser_for(p: Any, base: str) -> tuple[Any, Browser]:
    browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = await browser.new_page(viewport=WIDE)
    return browser, Browser(page, base)


def playwright() -> Any:
    need_peer(Path(CHROMIUM).exists(), "Debian's chromium is not installed (tests/peers.sh installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        need_peer(False, "the playwright package is not installed (pip install -e '.[test]')")
    return async_playwright()


async def test_operator_overview_messages_message_view_and_replay(hub):
    eng, mid, base = hub["engine"], hub["mid"], hub["base"]
    async with playwright() as p:
        browser, b = await browser_for(p, base)
        page = b.page
        try:
            await page.goto(base + "/login")
            await page.wait_for_selector("#login-button")
            await b.shoot("login")
            await b.login("olivia")
            # overview: one compact row per channel, 20 fit in 900 px; destinations open on a click
            await page.wait_for_selector("#channels tr.channel[data-channel='feed19']")
            assert await page.locator("#channels tr.channel").count() == 20
            box = await page.locator("#channels").bounding_box()
            assert box["height"] < 900 - 48, box  # the whole table, below the header, on a laptop screen
            assert await page.locator("tr.dest[data-destination='adt/flaky']").is_hidden()
            assert await page.locator("tr.channel[data-channel='adt']").get_attribute("data-health") == "error"
            await b.shoot("overview")
            await page.click("tr.channel[data-channel='adt'] td.hcell")
            flaky = page.locator("tr.dest[data-destination='adt/flaky']")
            await flaky.wait_for(state="visible")
            assert (await flaky.locator("td").all_inner_texts())[7] == "1"  # dead
            await b.shoot("overview-destinations", dark=False)

            # messages: pickers hold the channel names; the search goes into the URL and a reload restores it
            await page.click("#nav a[data-page='messages']")
            await page.wait_for_selector("#message-table")
            options = await page.locator("#f-channel option").all_inner_texts()
            assert options == ["any", *sorted(CHANNELS)]
            await page.select_option("#f-channel", "adt")
            assert await page.locator("#f-destination option").all_inner_texts() == ["any", "ehr", "flaky", "slow"]
            await page.select_option("#f-destination", "flaky")
            await page.click("#search-button")
            await page.wait_for_url("**/messages?channel=adt&destination=flaky")
            await b.ready()
            await page.reload()
            await b.ready()
            assert await page.input_value("#f-channel") == "adt" and await page.input_value("#f-destination") == "flaky"
            assert await page.locator("#message-table tbody tr").count() == 4
            # the status rolled up from the deliveries: dead, or queued (behind the one retrying to 'slow')
            assert await page.locator(f"#message-table tr[data-id='{mid}']").get_attribute("data-rollup") == "dead"
            assert await page.locator("#message-table tr[data-rollup='queued']").count() == 3
            # a saved search
            await page.click("#save-search")
            assert "channel=adt destination=flaky" in await page.inner_text("#saved-searches")
            # export of this search: CSV of metadata, raw messages as a zip (an operator sees content)
            csv = await page.get_attribute("#export-csv", "href")
            assert csv == "/api/messages/export.csv?channel=adt&destination=flaky"
            zipped = await page.get_attribute("#export-zip", "href")
            assert zipped == "/api/messages/export.zip?channel=adt&destination=flaky"
            got = await page.request.get(base + csv)
            assert got.status == 200 and (await got.text()).startswith("id,received_at,channel")
            # bulk selection: two messages, the confirmation lists each delivery it would queue (none sent)
            await page.locator(f"#message-table input.pick[data-id='{mid}']").check()
            await page.locator("#message-table tr[data-rollup='queued'] input.pick").first.check()
            assert await page.inner_text("#selected-count") == "2 selected"
            await b.shoot("messages", dark=True)
            await page.click("#bulk-replay")
            await page.wait_for_selector("dialog#confirm[open] #replay-plan")
            plan = await page.locator("#replay-plan li").all_inner_texts()
            assert any(f"message {mid} → flaky" in x for x in plan), plan
            assert all("sent again" not in x for x in plan), plan
            assert not any("→ ehr" in x for x in plan), plan  # the sent EHR copies are not queued
            await page.screenshot(path=shot_dir() / "messages-bulk-confirm.png")
            b.shots.append(shot_dir() / "messages-bulk-confirm.png")
            await page.click("#confirm-cancel")
            assert await page.locator("dialog#confirm").count() == 0

            # dead letters: replaying them lists exactly the dead deliveries
            await b.go("/dead-letters?channel=adt")
            await b.shoot("dead-letters")
            await page.click("#replay-dead")
            await page.wait_for_selector("dialog#confirm[open] #replay-plan")
            assert await page.locator("#replay-plan li").all_inner_texts() == [f"message {mid} → flaky dead"]
            await page.click("#confirm-cancel")
            await page.go_back()
            await b.ready()

            # the message: collapsed (one line a segment), under ~1,000 px; a segment expands on a click
            await page.click(f"#message-table tr[data-id='{mid}'] a")
            await page.wait_for_selector(".segments.hl7 .seg[data-segment='PID']")
            assert await page.locator(".segments.hl7 .seg").count() == 6
            height = (await page.locator("main").bounding_box())["height"]
            assert height < 1000, height
            assert await page.locator(".seg[data-segment='PID'] table.seg-fields").is_hidden()
            await b.shoot("message")
            await page.click(".seg[data-segment='PID'] .seg-line")
            pid5 = page.locator(".seg[data-segment='PID'] tr[data-field='PID-5']")
            await pid5.wait_for(state="visible")
            assert "Patient Name" in await pid5.inner_text() and "DOE^JANE^Q" in await pid5.inner_text()
            # deliveries: status, next attempt of the retrying one
            assert await page.locator("#deliveries tr[data-destination='flaky'] .badge.dead").count() == 1
            # long error texts wrap between words (a single overlong token may still break)
            err = page.locator("#deliveries tr[data-destination='flaky'] td.error")
            assert await err.evaluate("e => getComputedStyle(e).wordBreak") == "normal"
            assert await err.evaluate("e => getComputedStyle(e).overflowWrap") == "anywhere"
            nxt = await page.inner_text("#deliveries tr[data-destination='slow'] td.next-attempt")
            assert "in " in nxt, nxt  # a time in the future (the backoff is an hour)
            # the EHR's copy and its response
            await page.click(".main-tabs button[data-tab='d:ehr']")
            ehr = page.locator("section.delivery[data-destination='ehr']")
            await ehr.wait_for()
            assert "ok" in await ehr.inner_text()
            # the diff: received vs sent to the EHR, MSH-5 changed
            await page.click(".main-tabs button[data-tab='diff']")
            await page.wait_for_selector(".diff-table")
            assert await page.input_value("#diff-destination") == "ehr"
            changed = page.locator(".diff-table tr.d-changed[data-segment='MSH'] td.d-right mark[data-field='MSH-5']")
            assert await changed.inner_text() == "EHR-INBOX"
            assert await page.locator(".diff-table tr.d-changed").count() == 1
            assert "tab=diff" in page.url
            await b.shoot("message-diff")
            await page.select_option("#diff-destination", "flaky")
            await page.wait_for_selector(".diff-table")
            assert await page.locator(".diff-table tr.d-changed").count() == 0

            # replay: the confirmation lists exactly what will be queued, not the sent EHR copy (unless asked)
            await page.click("#replay-all")
            await page.wait_for_selector("dialog#confirm[open] #replay-plan")
            items = await page.locator("#replay-plan li.will-queue").all()
            queued = [await li.get_attribute("data-destination") for li in items]
            assert "flaky" in queued and "ehr" not in queued, queued
            await page.check("#include-sent")
            await page.wait_for_selector("#replay-plan li.will-queue[data-destination='ehr']")
            assert "sent again" in await page.inner_text("#replay-plan li[data-destination='ehr']")
            await page.uncheck("#include-sent")
            await page.wait_for_selector("#replay-plan li.will-queue[data-destination='ehr']", state="detached")
            await page.screenshot(path=shot_dir() / "message-replay-confirm.png")
            b.shots.append(shot_dir() / "message-replay-confirm.png")
            await page.click("#confirm-ok")
            await page.wait_for_selector("#toast:not([hidden])")
            assert "Queued" in await page.inner_text("#toast")
            await until(lambda: eng.store.delivery_states(mid)[:2] == ["sent", "sent"])

            # a rejected message: reprocessing says so and asks first
            await b.go(f"/messages/{hub['rejected']}")
            await page.click("#reprocess")
            await page.wait_for_selector("dialog#confirm[open] #replay-plan li.will-reprocess")
            await page.click("#confirm-cancel")

            # FHIR as a tree of collapsible nodes; X12 with element names
            await b.go(f"/messages/{hub['fhir']}")
            tree = page.locator(".json-tree.fhir")
            await tree.wait_for()
            assert "Patient/p1" in await tree.locator("summary").first.inner_text()
            given = tree.locator("summary", has_text="given").first
            assert await given.is_hidden()  # deeper nodes start collapsed
            await tree.locator("summary", has_text="{ 2 }").first.click()  # name[0]
            await given.wait_for()
            await b.shoot("message-fhir", dark=False)
            await b.go(f"/messages/{hub['x12']}")
            await page.click(".segments.x12 .seg[data-segment='ISA'] .seg-line")
            assert "Interchange Sender ID" in await page.inner_text(
                ".segments.x12 .seg[data-segment='ISA'] tr[data-field='ISA06']"
            )
            await b.shoot("message-x12", dark=False)

            # alerts
            await b.go("/alerts")
            await page.wait_for_selector("#firing, .unavailable")
            await b.shoot("alerts")
            if await page.locator("#firing").count():  # the dead letter fired: linked to its messages
                dead = page.locator("#firing tr[data-rule='dead_letter']")
                assert "adt → flaky" in await dead.inner_text()
                await dead.locator("a.alert-messages").click()
                await page.wait_for_url("**/messages?channel=adt&status=dead&destination=flaky")
                await b.ready()
                assert await page.input_value("#f-status") == "dead"
                assert await page.input_value("#f-destination") == "flaky"  # (replayed above: no dead one left)
        finally:
            await browser.close()
    b.check()


async def test_analyst_channel_page_pause_confirmation_config_and_admin_pages(hub):
    eng, mid, base = hub["engine"], hub["mid"], hub["base"]
    async with playwright() as p:
        browser, b = await browser_for(p, base)
        page = b.page
        try:
            await b.login("anna")
            await page.click("tr.channel[data-channel='adt'] td.cname a")
            await page.wait_for_selector("body[data-page='channel'] #channel-controls")
            assert page.url.endswith("/channels/adt")
            # charts (or a note when this hub has no chart endpoint yet)
            await page.wait_for_selector("#charts svg.chart, #charts .unavailable")
            # the configuration: YAML highlighted read-only, or the settings as loaded on an older hub
            await page.wait_for_selector("#config .yaml-box, #config .json-tree")
            if await page.locator("#config .yaml-box").count():
                assert await page.locator("#config .yaml-box[data-file='yaml'] .y-key").count() > 5
            await b.shoot("channel")
            await page.locator("#config").scroll_into_view_if_needed()
            await b.shoot("channel-config", dark=True)
            await page.locator("h1").scroll_into_view_if_needed()
            await page.click("#chart-controls button[data-range='24h']")
            assert "range=24h" in page.url

            await page.click("#run-check")
            await page.wait_for_selector("#check-out p, #check-out ul")
            # pause asks first and says what it does; cancel changes nothing
            await page.click("#ch-pause")
            await page.wait_for_selector("dialog#confirm[open]")
            text = await page.inner_text("dialog#confirm")
            assert "Pause adt?" in text and "every node" in text
            await page.screenshot(path=shot_dir() / "channel-pause-confirm.png")
            b.shots.append(shot_dir() / "channel-pause-confirm.png")
            await page.click("#confirm-cancel")
            assert eng.channel_state("adt") == "running"
            await page.click("#ch-pause")
            await page.click("dialog#confirm[open] #confirm-ok")
            await until(lambda: eng.channel_state("adt") == "paused")
            await page.wait_for_selector("#ch-resume")
            await page.click("#ch-resume")
            await page.click("dialog#confirm[open] #confirm-ok")
            await until(lambda: eng.channel_state("adt") == "running")

            # reload: asks first, then the page says who reloaded and when
            await page.click("#run-reload")
            await page.click("dialog#confirm[open] #confirm-ok")
            await page.wait_for_selector("#toast:has-text('Configuration reloaded')")
            if await page.locator("#last-reload").count():
                await page.wait_for_selector("#last-reload:has-text('by anna: ok')")

            # an analyst sees no content: the message page says so, the deliveries are still listed
            await b.go(f"/messages/{mid}")
            assert "does not show message content" in await page.inner_text("#main")
            assert await page.locator("#deliveries tr").count() == 4
            assert await page.locator("#replay-all").count() == 0  # no replay permission
            await b.shoot("message-analyst", dark=False)
            await page.click("#logout")
            await page.wait_for_url("**/login")

            # the admin's pages: the audit log (its Detail column never shows "{}"), users
            await b.login("adam")
            await b.go("/audit")
            await page.wait_for_selector("#audit-table tbody tr")
            details = await page.locator("#audit-table td.detail").all_inner_texts()
            assert details and "{}" not in details, details
            pause = page.locator("#audit-table tr[data-action='pause']")
            assert await pause.count() == 1
            check = await page.inner_text("#audit-table tr[data-action='config_check'] td.detail")
            assert check.split() == ["problems", "0"], check  # key and value, not a JSON dump
            await b.shoot("audit")
            await b.go("/users")
            await page.wait_for_selector("#users-table")
            await b.shoot("users", dark=False)
        finally:
            await browser.close()
    b.check()


async def test_an_older_hub_without_the_new_endpoints_degrades_to_notes_and_still_replays_exactly(hub):
    """The dashboard reads which endpoints the hub has from its API description: here it says none of issue 17's,
    so the pages show a small "not available" note and the replay confirmation works out its list itself."""
    eng, mid, base = hub["engine"], hub["mid"], hub["base"]
    async with playwright() as p:
        browser, b = await browser_for(p, base)
        page = b.page
        try:
            await page.route("**/api/openapi.json", lambda route: route.fulfill(json={"paths": {}, "components": {}}))
            await b.login("olivia")
            await page.wait_for_selector("#channels tr.channel[data-channel='adt']")
            assert "Sparklines: not available" in await page.inner_text("#main")
            await b.go("/messages?channel=adt")
            assert "Export: not available" in await page.inner_text("#exports")
            await b.go("/alerts")
            assert "Alerts: not available" in await page.inner_text("#main")

            await b.go(f"/messages/{mid}")
            await page.click("#replay-all")
            await page.wait_for_selector("dialog#confirm[open] #replay-plan")
            items = await page.locator("#replay-plan li.will-queue").all()
            assert sorted([await li.get_attribute("data-destination") for li in items]) == ["flaky", "slow"]
            assert "ehr (sent)" in await page.inner_text("#replay-skipped")
            await page.check("#include-sent")
            await page.wait_for_selector("#replay-plan li.will-queue[data-destination='ehr']")
            await page.uncheck("#include-sent")
            await page.wait_for_selector("#replay-plan li.will-queue[data-destination='ehr']", state="detached")
            await page.click("#confirm-ok")
            await page.wait_for_selector("#toast:not([hidden])")
            await until(lambda: eng.store.delivery_states(mid)[1] == "sent")
            ehr = next(d for d in eng.store.get_message(mid)["deliveries"] if d["destination"] == "ehr")
            assert ehr["attempts"] == 1  # the EHR's copy was not sent again

            await page.click("#logout")
            await page.wait_for_url("**/login")
            await b.login("anna")
            await b.go("/channels/adt")
            await page.wait_for_selector("#charts .unavailable")
            await page.wait_for_selector("#config .json-tree")  # the settings as loaded, instead of the YAML
            assert "not available" in await page.inner_text("#config")
        finally:
            await browser.close()
    b.check()

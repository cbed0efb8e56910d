"""The console in headless Chromium (Debian's ``chromium``, driven by Playwright), used as an
operator would: sign in with the token; a pusher-js client connects and appears in the log and
the counters; an event from the official SDK shows in the log; one sent from the event creator
reaches the pusher-js client; a presence channel's members are listed; the log pauses and
resumes; the charts have drawn points; the console's own pusher-js subscriber gets an event.
The run saves ``docs/console.png`` (the README's screenshot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from reverbpy.console.web import vendor_missing
from tests.conftest import CHROMIUM, ROOT, ServerProcess, launch_chromium
from tests.console.conftest import SECRET, TOKEN
from tests.functional.jsclient import AuthEndpoint, JSClients, in_thread, sdk, user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.node,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (`make browser-deps`)"
    ),
    pytest.mark.skipif(
        bool(vendor_missing()), reason="run `make reverbpy/console/static/vendor/.installed`"
    ),
]
SCREENSHOT = ROOT / "docs" / "console.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as browser:
        yield browser


def log_line(page: Page, kind: str, text: str) -> object:
    return page.locator(f'[data-testid="log-line"][data-kind="{kind}"]', has_text=text)


# Pixels of a chart's canvas in a series' colour: the line and points uPlot drew, not the axes.
DRAWN = """
([selector, rgb]) => {
  const canvas = document.querySelector(selector);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - rgb[0]) < 12 && Math.abs(data[i + 1] - rgb[1]) < 12
        && Math.abs(data[i + 2] - rgb[2]) < 12 && data[i + 3] > 200) n++;
  }
  return n;
}
"""


async def test_an_operator_watches_and_pokes_the_server(
    console_server: ServerProcess, browser: Browser
) -> None:
    errors: list[str] = []
    context = await browser.new_context(viewport={"width": 1440, "height": 1100})
    context.set_default_timeout(10_000)
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Sign in: a wrong token is refused, the right one opens the console.
    await page.goto(f"{console_server.http_url}/console")
    await page.fill("#token", "not-the-token")
    await page.click('button[type="submit"]')
    await expect(page.get_by_test_id("login-error")).to_have_text("Wrong token.")
    await page.fill("#token", TOKEN)
    await page.click('button[type="submit"]')
    await expect(page.get_by_test_id("stream-state")).to_have_attribute("data-state", "open")
    await expect(page.get_by_test_id("stat-connections")).to_have_text("0")

    async with JSClients() as js, AuthEndpoint(console_server) as auth:
        # A pusher-js client appears in the log and in the counters.
        alice = await js.pusher(console_server, "alice", auth=auth, params=user("1", "Alice"))
        alice_id = await alice.connected()
        await alice.subscribed("presence-lobby")
        await expect(log_line(page, "connected", alice_id)).to_have_count(1)
        await expect(log_line(page, "subscribed", "presence-lobby")).to_have_count(1)
        await expect(page.get_by_test_id("stat-connections")).to_have_text("1")
        await expect(page.get_by_test_id("stat-users")).to_have_text("0")

        # An event from the official SDK is in the log.
        await in_thread(sdk(console_server).trigger, "presence-lobby", "sdk-hello", {"n": 1})
        await alice.wait_for("event", channel="presence-lobby", event="sdk-hello")
        await expect(log_line(page, "api_event", "sdk-hello")).to_have_count(1)

        # One from the event creator reaches the pusher-js client, and the answer is shown.
        await page.fill('[data-testid="event-channels"]', "presence-lobby")
        await page.fill('[data-testid="event-name"]', "from-console")
        await page.fill('[data-testid="event-data"]', '{"greeting": "hi Alice"}')
        await page.click('[data-testid="event-send"]')
        await expect(page.get_by_test_id("event-answer")).to_have_text("HTTP 200 {}")
        got = await alice.wait_for("event", channel="presence-lobby", event="from-console")
        assert got["data"] == {"greeting": "hi Alice"}
        await expect(log_line(page, "api_event", "from-console")).to_have_count(1)
        # The API's own validation answers too.
        await page.fill('[data-testid="event-channels"]', "not a channel!")
        await page.click('[data-testid="event-send"]')
        await expect(page.get_by_test_id("event-answer")).to_contain_text("HTTP 400")

        # A presence channel's members.
        bob = await js.pusher(console_server, "bob", auth=auth, params=user("2", "Bob"))
        await bob.connected()
        await bob.subscribed("presence-lobby")
        await bob.call("trigger", channel="presence-lobby", event="client-wave", data={"hi": 1})
        await expect(log_line(page, "client_event", "client-wave")).to_have_count(1)
        await page.fill('[data-testid="channel-prefix"]', "presence-")
        await page.click('[data-testid="channels-refresh"]')
        row = page.locator('[data-testid="channel-row"][data-channel="presence-lobby"]')
        await expect(row).to_contain_text("2")
        await row.click()
        members = page.get_by_test_id("member")
        await expect(members).to_have_count(2)
        await expect(members.nth(0)).to_contain_text('1  {"name":"Alice"}')
        await expect(members.nth(1)).to_contain_text('2  {"name":"Bob"}')

        # Pause: lines are held and counted; resume shows them.
        await page.click('[data-testid="pause"]')
        await in_thread(sdk(console_server).trigger, "presence-lobby", "while-paused", {})
        await expect(page.get_by_test_id("paused-count")).to_have_text("1 new while paused")
        assert await log_line(page, "api_event", "while-paused").count() == 0
        await page.click('[data-testid="pause"]')
        await expect(log_line(page, "api_event", "while-paused")).to_have_count(1)

        # A filter: only what names the event.
        await page.fill('[data-testid="filter-event"]', "filtered-")
        await page.click('[data-testid="filter-apply"]')
        await expect(page.get_by_test_id("stream-state")).to_have_attribute("data-state", "open")
        await page.click("#clear")
        await in_thread(sdk(console_server).trigger, "presence-lobby", "unwanted", {})
        await in_thread(sdk(console_server).trigger, "presence-lobby", "filtered-in", {})
        await expect(log_line(page, "api_event", "filtered-in")).to_have_count(1)
        assert await log_line(page, "api_event", "unwanted").count() == 0
        await page.fill('[data-testid="filter-event"]', "")
        await page.click('[data-testid="filter-apply"]')

        # The console's own pusher-js subscriber, against this server, gets a created event.
        await page.fill('[data-testid="listen-channel"]', "public-news")
        await page.click('[data-testid="listen-start"]')
        await expect(page.get_by_test_id("listen-state")).to_contain_text("subscribed")
        await page.fill('[data-testid="event-channels"]', "public-news")
        await page.fill('[data-testid="event-name"]', "headline")
        await page.click('[data-testid="event-send"]')
        await expect(page.locator('[data-testid="listen-event"][data-event="headline"]')).to_have_count(1)

        # The charts have points: the samples are in uPlot and drawn in the series' colour.
        await expect(page.get_by_test_id("stat-connections")).to_have_text("3")  # + the page's own
        lengths = await page.evaluate(
            "window.__console.charts.map((c) => c.plot.data[0].length)"
        )
        assert len(lengths) == 4 and min(lengths) >= 3, lengths
        drawn = await page.evaluate(
            DRAWN, ['[data-testid="chart"]:nth-child(1) canvas', [56, 189, 248]]
        )
        assert drawn > 20, drawn

        await page.click('[data-testid="channel-row"][data-channel="presence-lobby"]')
        await expect(members).to_have_count(2)
        await asyncio.sleep(1.2)  # one more sample in the charts for the screenshot
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert errors == []
    html = await page.content()
    assert SECRET not in html and TOKEN not in html
    await context.close()

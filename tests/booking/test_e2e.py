"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright), written from the
seed's checklist:

1. open the dashboard -> the indicator turns green;
2. a guest books in a second page -> the order is in the feed within 2 s, pending and total go
   up by one, with no page reload;
3. the admin confirms -> the counters move and the guest page shows "confirmed" live (and a
   second admin tab updates in place);
4. stop reverbpy under `make run` -> the indicator turns red and the app keeps serving; run
   the command the launcher prints -> green again, and events flow, with no reload.

Steps 1-3 get their own reverbpy process (`tests.conftest.start_server`) and a booking app on a
free port in the test's event loop; step 4 runs the real launcher (`make run`'s entry point).
Each test has its own SQLite file and its own browser.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from examples.booking_app.app import create_app, vendor_missing
from tests.booking.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Launcher,
    answers,
    make_config,
    restart_command,
    run_in_shell,
    start_launcher,
    stop_group,
    wait_for,
)
from tests.conftest import CHROMIUM, ROOT, free_port, launch_chromium, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="needs Debian's chromium (`make browser-deps`)"
    ),
    pytest.mark.skipif(
        bool(vendor_missing()), reason="run `make examples/booking_app/static/vendor/.installed`"
    ),
]

SCREENSHOT = ROOT / "docs" / "dashboard.png"
STATUS = '[data-testid="connection-status"]'


@dataclass
class Site:
    url: str
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    reverb = await asyncio.to_thread(start_server, tmp_path)
    config = make_config(
        tmp_path,
        app_id=reverb.app_id,
        app_key=reverb.key,
        app_secret=reverb.secret,
        reverb_host="127.0.0.1",
        reverb_port=reverb.port,
        seed_demo_bookings=True,  # a realistic dashboard, and a better screenshot
    )
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Site(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        await asyncio.to_thread(reverb.stop)


# Not the demo's defaults: the restart command must carry them over from the same shell.
E2E_CREDENTIALS = {
    "REVERB_APP_ID": "246810",
    "REVERB_APP_KEY": "e2e-key",
    "REVERB_APP_SECRET": "e2e-secret",
}


@pytest.fixture
async def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:
    launcher = await asyncio.to_thread(start_launcher, tmp_path, extra_env=E2E_CREDENTIALS)
    try:
        yield launcher
    finally:
        await asyncio.to_thread(launcher.close)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as browser:
        yield browser


async def new_page(browser: Browser, site: Site) -> Page:
    """A page in a fresh context (own cookies), failing the test on any uncaught JS error."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    page = await context.new_page()
    page.on("pageerror", lambda error: site.page_errors.append(str(error)))
    return page


async def open_dashboard(browser: Browser, site: Site) -> Page:
    page = await new_page(browser, site)
    await page.goto(f"{site.url}/admin/reservations/realtime")
    await page.fill('input[name="email"]', ADMIN_EMAIL)
    await page.fill('input[name="password"]', ADMIN_PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url("**/admin/reservations/realtime")
    await expect(page.locator(STATUS)).to_have_attribute("data-state", "connected", timeout=10_000)
    await expect(page.locator(STATUS)).to_have_text("Connected")
    # Marker that a reload would wipe: updates must arrive without one.
    await page.evaluate("window.__noReload = true")
    return page


async def stat(page: Page, name: str) -> int:
    return int(await page.locator(f'[data-testid="stat-{name}"]').inner_text())


async def guest_books(
    page: Page, site: Site, *, villa_id: int, nights_from_now: int
) -> tuple[int, float]:
    """Fill and send the booking form like a guest; returns (booking id, submit time in ms).

    The submit time is the browser's `Date.now()`, the clock every page of the browser shares,
    so it can be compared with when another page saw the order.
    """
    check_in = date.today() + timedelta(days=nights_from_now)
    await page.goto(f"{site.url}/villas/{villa_id}")
    await page.fill('input[name="guest_name"]', "Budi Santoso")
    await page.fill('input[name="guest_email"]', "budi@example.com")
    await page.fill('input[name="check_in"]', check_in.isoformat())
    await page.fill('input[name="check_out"]', (check_in + timedelta(days=3)).isoformat())
    await page.fill('input[name="guests"]', "2")
    submitted = float(await page.evaluate("Date.now()"))
    await page.click('button[type="submit"]')
    await page.wait_for_url("**/bookings/*?token=*")
    return int(page.url.split("/bookings/")[1].split("?")[0]), submitted


# Records, in the dashboard, when each feed item appeared (Date.now(), shared by all pages).
WATCH_FEED = """
window.__feedSeen = {};
new MutationObserver((mutations) => {
  for (const m of mutations) for (const node of m.addedNodes) {
    if (node.dataset && node.dataset.orderId) window.__feedSeen[node.dataset.orderId] = Date.now();
  }
}).observe(document.querySelector('[data-testid="orders-feed"]'), { childList: true });
"""


async def test_dashboard_follows_bookings_and_status_changes_live(
    site: Site, browser: Browser
) -> None:
    dashboard = await open_dashboard(browser, site)
    second_admin = await dashboard.context.new_page()  # same session, another tab
    second_admin.on("pageerror", lambda error: site.page_errors.append(str(error)))
    await second_admin.goto(f"{site.url}/admin/reservations/realtime")
    await expect(second_admin.locator(STATUS)).to_have_attribute("data-state", "connected")

    pending, confirmed, total = [
        await stat(dashboard, n) for n in ("pending", "confirmed", "total")
    ]
    assert total == 4  # the seeded demo bookings

    # 2. A guest books in a second page.
    guest = await new_page(browser, site)
    await dashboard.evaluate(WATCH_FEED)
    booking_id, submitted = await guest_books(guest, site, villa_id=1, nights_from_now=10)
    item = dashboard.locator(
        f'[data-testid="orders-feed"] [data-testid="feed-item"][data-order-id="{booking_id}"]'
    )
    await expect(item).to_be_visible(timeout=5_000)
    seen = await dashboard.evaluate(f"window.__feedSeen[{booking_id}]")
    assert seen is not None and seen - submitted <= 2_000, (
        f"in the feed after {seen - submitted} ms"
    )
    await expect(
        dashboard.locator('[data-testid="orders-feed"] [data-testid="feed-item"]').first
    ).to_have_attribute("data-order-id", str(booking_id))  # newest first
    await expect(item).to_contain_text("Budi Santoso")
    await expect(item).to_contain_text("Villa Kembang")
    await expect(item).to_contain_text("Rp 4.500.000")
    await expect(item.locator('[data-testid="status-badge"]')).to_have_text("pending")
    await expect(dashboard.locator('[data-testid="stat-pending"]')).to_have_text(str(pending + 1))
    await expect(dashboard.locator('[data-testid="stat-total"]')).to_have_text(str(total + 1))
    row = dashboard.locator(f'[data-testid="orders-table"] tr[data-order-id="{booking_id}"]')
    await expect(row.locator('[data-testid="status-select"]')).to_have_value("pending")
    assert await dashboard.evaluate("window.__noReload") is True

    guest_status = guest.locator('[data-testid="booking-status"]')
    await expect(guest.locator(STATUS)).to_have_attribute("data-state", "connected")
    await expect(guest_status).to_have_text("pending")

    # 3. The admin confirms from the table.
    await row.locator('[data-testid="status-select"]').select_option("confirmed")
    await expect(dashboard.locator('[data-testid="stat-pending"]')).to_have_text(str(pending))
    await expect(dashboard.locator('[data-testid="stat-confirmed"]')).to_have_text(
        str(confirmed + 1)
    )
    await expect(dashboard.locator('[data-testid="stat-total"]')).to_have_text(str(total + 1))
    await expect(item.locator('[data-testid="status-badge"]')).to_have_text("confirmed")
    await expect(guest_status).to_have_text("confirmed", timeout=5_000)
    await expect(guest.locator('[data-testid="booking-notice"]')).to_contain_text("confirmed")
    assert "token=" in guest.url and await guest.evaluate("document.readyState") == "complete"

    # The other admin tab was not the sender, so it hears the event and updates in place.
    other_row = second_admin.locator(
        f'[data-testid="orders-table"] tr[data-order-id="{booking_id}"]'
    )
    await expect(other_row.locator('[data-testid="status-select"]')).to_have_value("confirmed")
    await expect(second_admin.locator('[data-testid="stat-confirmed"]')).to_have_text(
        str(confirmed + 1)
    )
    await expect(second_admin.locator('[data-testid="stat-pending"]')).to_have_text(str(pending))

    assert await dashboard.evaluate("window.__noReload") is True
    await dashboard.mouse.move(0, 0)
    await asyncio.sleep(0.6)  # let the slide-in and counter animations settle for the picture
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await dashboard.screenshot(path=str(SCREENSHOT))

    # Sound settings survive a reload.
    await dashboard.click('[data-testid="sound-toggle"]')
    await dashboard.reload()
    await expect(dashboard.locator('[data-testid="sound-toggle"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    assert site.page_errors == []


# Autoplay refused: the context stays suspended and resume() rejects, as Chrome does without a
# user gesture. The beep must fail silently.
BLOCK_AUDIO = """
Object.defineProperty(AudioContext.prototype, "state", { get() { return "suspended"; } });
AudioContext.prototype.resume = function () {
  return Promise.reject(new DOMException("blocked by autoplay policy", "NotAllowedError"));
};
"""


async def test_dashboard_recovers_when_reverbpy_restarts(
    launcher: Launcher, browser: Browser, tmp_path: Path
) -> None:
    site = Site(launcher.app_url)
    dashboard = await open_dashboard(browser, site)
    await dashboard.add_init_script(BLOCK_AUDIO)
    await dashboard.reload()
    await expect(dashboard.locator(STATUS)).to_have_attribute("data-state", "connected")
    await dashboard.evaluate("window.__noReload = true")
    total = await stat(dashboard, "total")

    # 4. Stop reverbpy as Ctrl-C in its own terminal would: red within 10 s, while the booking
    # app keeps serving, a guest's booking included.
    os.kill(launcher.reverb_pid(), signal.SIGTERM)
    await expect(dashboard.locator(STATUS)).to_have_attribute(
        "data-state", "disconnected", timeout=10_000
    )
    await expect(dashboard.locator(STATUS)).to_have_text("Disconnected")
    assert await asyncio.to_thread(answers, f"{site.url}/")
    guest = await new_page(browser, site)
    offline_id, _ = await guest_books(guest, site, villa_id=1, nights_from_now=10)

    # The launcher says so in one line, with the command that starts reverbpy again.
    await asyncio.to_thread(wait_for, launcher.restart_lines, 15, "the launcher's line")
    [line] = launcher.restart_lines()
    assert line["status"] == "exit code 0", line[0]
    assert line["first"].startswith("make serve"), line[0]
    assert E2E_CREDENTIALS["REVERB_APP_SECRET"] not in launcher.output()
    command = restart_command(line, launcher.env)
    restarted = run_in_shell(command, launcher, tmp_path / "restarted.log")
    try:
        # Green by itself, no reload; the dashboard re-reads the orders on re-subscribing, so
        # the booking made while reverbpy was down is in the feed.
        await expect(dashboard.locator(STATUS)).to_have_attribute(
            "data-state", "connected", timeout=20_000
        )
        feed = dashboard.locator('[data-testid="orders-feed"]')
        await expect(feed.locator(f'[data-order-id="{offline_id}"]')).to_be_visible()

        # Events flow again: a booking made now arrives live.
        booking_id, _ = await guest_books(guest, site, villa_id=2, nights_from_now=20)
        item = feed.locator(f'[data-testid="feed-item"][data-order-id="{booking_id}"]')
        await expect(item).to_be_visible(timeout=5_000)
        await expect(item).to_contain_text("Rp 9.750.000")  # 3 nights x Rp 3.250.000
        await expect(dashboard.locator('[data-testid="stat-total"]')).to_have_text(str(total + 2))
        assert await dashboard.evaluate("window.__noReload") is True
        assert site.page_errors == []
    finally:
        await asyncio.to_thread(stop_group, restarted)
    assert launcher.proc.poll() is None, "the launcher must not stop with reverbpy"
    assert len(launcher.restart_lines()) == 1, launcher.output()

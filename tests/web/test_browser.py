"""A visitor's whole tour in a real browser: Debian's Chromium driven by Playwright, against a real
``signalmint demo`` subprocess.

Home, the live feed moving, the Premium button, sign-up, the confirmation email read from the
demo's mail catcher, the test-mode checkout, the paid dashboard with real-time unmasked signals, a
signal's chart, a webhook added to the demo's request inspector with a test event that verifies,
and the operator's revenue showing the new MRR. Each step saves a screenshot (desktop and
390×844) to ``test-artifacts/screenshots/`` and every page is checked for horizontal overflow
on the phone-sized viewport.

The steps are small functions so that a changed flow swaps one of them: today a paid plan is
bought after signing up free (Upgrade → Subscribe → TEST MODE checkout → Pay).

No browser is downloaded: the tests use ``/usr/bin/chromium`` (``.ci/run`` installs Debian's
``chromium`` package) and skip, saying so, when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
VISITOR = "visitor@example.com"
SETTLED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
#: What reaches past the right edge (boxes, or content spilling out of a box), for the failure message.
WIDE = """() => [...document.querySelectorAll('body *')].filter(el => {
  const box = el.getBoundingClientRect();
  const spills = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === 'visible'
    && box.left + el.scrollWidth > innerWidth + 0.5;
  return box.right > innerWidth + 0.5 || spills;
}).slice(-5).map(el => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`)"""


@dataclass
class Demo:
    url: str
    admin_password: str
    keys: dict[str, str]


@dataclass
class Tour:
    """The screenshots taken so far and the pages that scrolled sideways on a phone."""

    page: Page
    demo: Demo
    taken: list[Path] = field(default_factory=list)
    overflowing: list[str] = field(default_factory=list)
    timings: list[str] = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)

    def step(self, name: str) -> None:
        """Screenshot the page (desktop, then phone) and check it fits 390 px without scrolling sideways."""
        page = self.page
        page.wait_for_load_state("load")
        n = len(self.taken) // 2 + 1
        desktop = SHOTS / f"{n:02d}-{name}.png"
        page.screenshot(path=str(desktop), full_page=True)
        page.set_viewport_size(PHONE)
        page.evaluate(SETTLED)  # the resized layout is painted before it is measured
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        phone = SHOTS / f"{n:02d}-{name}-390.png"
        page.screenshot(path=str(phone), full_page=True)
        page.set_viewport_size(DESKTOP)
        self.taken += [desktop, phone]
        now = time.monotonic()
        self.timings.append(f"{name} {now - self.last:.1f}s")
        self.last = now
        if widths[0] > widths[1]:
            culprits = page.evaluate(WIDE)
            self.overflowing.append(f"{name} ({page.url}): {widths[0]} px wide at {widths[1]} px: {culprits}")


# --- the demo and the browser ---------------------------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    url: str
    keys_file: Path
    log: Path


@pytest.fixture(scope="module")
def started_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """A real ``signalmint demo`` on a free port, five times the default pace so the feed moves fast,
    started first: Chromium starts while it does (``demo`` waits for it to be ready)."""
    tmp = tmp_path_factory.mktemp("browser-demo")
    port, keys_file = free_port(), tmp / "keys.json"
    command = [sys.executable, "-m", "signalmint.cli", "demo", "--port", str(port), "--speed", "5",
               "--db", str(tmp / "demo.db"), "--keys-file", str(keys_file), "--for", "240"]  # fmt: skip
    with (tmp / "demo.log").open("w") as log:
        proc = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log)
        try:
            yield Started(proc, f"http://127.0.0.1:{port}", keys_file, tmp / "demo.log")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def demo(started_demo: Started) -> Demo:
    """The demo, once it serves and has written its accounts' keys."""
    proc, url, keys_file = started_demo.proc, started_demo.url, started_demo.keys_file
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as http:  # one client: each new one loads the CA bundle again (~40 ms of CPU)
        while True:
            assert proc.poll() is None, started_demo.log.read_text()
            assert time.monotonic() < deadline, "the demo did not start within 60 s"
            try:
                if keys_file.exists() and http.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    found = json.loads(keys_file.read_text())
    keys = {a["role"]: a["api_key"] for a in found["accounts"]}
    return Demo(url, found["admin_password"], keys)


@pytest.fixture(scope="module")
def browser(started_demo: Started) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def tour(browser: Browser, demo: Demo) -> Iterator[Tour]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    context = browser.new_context(base_url=demo.url, viewport=DESKTOP)
    context.set_default_timeout(15_000)
    try:
        yield Tour(context.new_page(), demo)
    finally:
        context.close()
        print(f"\nscreenshots: {SHOTS}")


# --- the steps -----------------------------------------------------------------------------------


def visit_home(tour: Tour) -> None:
    tour.page.goto("/")
    expect(tour.page.locator("a[href='/automations/us-stocks-volume']").first).to_be_visible()
    for niche in ("shop-price-drop", "news-keyword"):  # the local shop and feed: two more businesses
        expect(tour.page.locator(f"a[href='/automations/{niche}']").first).to_be_visible()
    tour.step("home")


def check_the_status_page(tour: Tour) -> None:
    page = tour.page
    page.get_by_role("link", name="Status").first.click()
    page.wait_for_url(re.compile(r"/status$"))
    expect(page.locator("tr[data-automation]")).to_have_count(4)  # two markets, a shop, a feed
    expect(page.locator("tr[data-automation] .badge").first).to_have_text("Live")
    expect(page.locator("#queue-depth")).to_be_visible()
    tour.step("status")


def watch_the_live_feed(tour: Tour) -> None:
    """The public feed of the historical replay: a new row streams in (server-sent events) within 60 s."""
    page = tour.page
    page.goto("/automations/us-stocks-volume")
    first = page.locator("tbody[data-feed] tr.feed-row").first
    before = first.get_attribute("data-id") if first.count() else ""
    page.wait_for_function(
        "before => { const row = document.querySelector('tbody[data-feed] tr.feed-row');"
        " return row && row.dataset.id && row.dataset.id !== before; }",
        arg=before,
        timeout=60_000,
    )
    tour.step("live-feed")


def press_premium(tour: Tour, email: str) -> None:
    """The Premium card on the automation page: an email and its button, then "check your inbox"."""
    page = tour.page
    card = page.locator("article.plan-card", has=page.locator("#plan-premium"))
    tour.step("pricing")
    card.locator("input[type=email]").fill(email)
    card.get_by_role("button").click()
    expect(page.locator("#inbox-title")).to_be_visible()
    tour.step("check-inbox")


def confirm_from_the_mail_catcher(tour: Tour, email: str) -> None:
    """The confirmation email, read in the demo's mail catcher; its link opens Premium's checkout."""
    page = tour.page
    page.goto("/demo/mail")
    row = page.locator("tr[data-message]", has_text=email).first
    expect(row).to_contain_text("Confirm")
    tour.step("mail-catcher")
    row.locator("a").click()
    link = page.locator("#mail-text a[href*='/confirm?token=']")
    expect(link).to_have_count(1)
    tour.step("confirmation-email")
    link.click()


def pay_for_premium(tour: Tour) -> None:
    """The confirmation link lands on the TEST MODE checkout of the plan chosen: Pay, then the dashboard."""
    page = tour.page
    expect(page.get_by_text("TEST MODE").first).to_be_visible()
    assert "Premium" in page.content(), "the checkout is for the plan the visitor chose"
    tour.step("checkout")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    page.wait_for_url(re.compile(r"/dashboard"))
    expect(page.get_by_text("Premium").first).to_be_visible()
    tour.step("paid")


def see_real_time_unmasked_signals(tour: Tour) -> None:
    """The paid dashboard: live synthetic-market signals, every number shown."""
    page = tour.page
    expect(page.get_by_text("Premium plan").first).to_be_visible()
    live = page.locator("tbody[data-feed] tr.feed-row", has=page.locator("a.sym", has_text="SYN"))
    expect(live.first).to_be_visible(timeout=30_000)
    expect(live.first.locator("[data-f=ratio]")).to_have_text(re.compile(r"\d.*×"))
    tour.step("dashboard-premium")


def alerts_arrive_by_email(tour: Tour, email: str) -> None:
    """Premium includes email: the demo's mail catcher receives the alerts (each with its chart)."""
    page = tour.page
    page.goto("/demo/mail")
    alert = page.locator("tr[data-message]", has_text=email).filter(has_text="its usual volume").first
    deadline = time.monotonic() + 30
    while not alert.count():
        assert time.monotonic() < deadline, "no email alert reached the mail catcher within 30 s"
        page.wait_for_timeout(200)  # polls the static page; the loop ends as soon as the alert is there
        page.reload()
    alert.locator("a").click()
    expect(page.locator("iframe.demo-frame")).to_be_visible()
    tour.step("email-alert")


def open_a_signal_chart(tour: Tour) -> None:
    page = tour.page
    page.locator("tbody[data-feed] tr.feed-row a.sym").first.click()
    page.wait_for_url(re.compile(r"/signals/\d+"))
    expect(page.locator(".chart-box svg").first).to_be_visible()
    tour.step("signal-chart")


def webhook_to_the_inspector(tour: Tour) -> None:
    page = tour.page
    page.goto("/dashboard#delivery")
    page.get_by_role("button", name="Send webhooks to the demo's inspector").click()
    expect(page.locator("[data-secret]")).to_contain_text("whsec_")
    tour.step("webhook-created")
    page.get_by_role("button", name="Send a test event").click()
    expect(page.locator("#delivery-flash")).to_contain_text("Test event delivered")
    tour.step("webhook-tested")
    page.get_by_role("link", name="Inspector").first.click()
    request = page.locator(".demo-request").first
    expect(request).to_have_attribute("data-valid", "true")
    expect(request).to_contain_text("Signature verified with the endpoint's secret.")
    tour.step("inspector")


def mrr_cents(demo: Demo) -> int:
    admin = {"Authorization": f"Bearer {demo.keys['admin']}"}
    body = httpx.get(f"{demo.url}/api/v1/admin/revenue", params={"months": 1}, headers=admin, timeout=10).json()
    return int(next(r for r in body["period"]["total"] if r["currency"] == "usd")["mrr"])


def admin_sees_the_new_mrr(tour: Tour, browser: Browser, expected_cents: int) -> None:
    context = browser.new_context(base_url=tour.demo.url, viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto("/admin/login")
        page.locator("#password").fill(tour.demo.admin_password)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/admin/revenue")
        tile = page.locator(".tile", has=page.locator(".tile-label", has_text="MRR")).locator(".tile-value").first
        shown = tile.inner_text()
        assert round(float(re.sub(r"[^\d.]", "", shown)) * 100) == expected_cents, shown
        admin = Tour(page, tour.demo, tour.taken, tour.overflowing, tour.timings, tour.last)
        admin.step("admin-revenue")
    finally:
        context.close()


# --- the tour --------------------------------------------------------------------------------------


def test_a_visitor_becomes_a_paying_subscriber_and_tries_every_tool(tour: Tour, browser: Browser) -> None:
    started = time.monotonic()
    mrr_before = mrr_cents(tour.demo)
    visit_home(tour)
    check_the_status_page(tour)
    watch_the_live_feed(tour)
    press_premium(tour, VISITOR)
    confirm_from_the_mail_catcher(tour, VISITOR)
    pay_for_premium(tour)
    see_real_time_unmasked_signals(tour)
    open_a_signal_chart(tour)
    alerts_arrive_by_email(tour, VISITOR)
    webhook_to_the_inspector(tour)
    admin_sees_the_new_mrr(tour, browser, mrr_before + 2900)
    assert mrr_cents(tour.demo) == mrr_before + 2900
    assert all(p.stat().st_size > 1000 for p in tour.taken), "a screenshot is empty"
    assert not tour.overflowing, "pages scroll sideways at 390×844:\n" + "\n".join(tour.overflowing)
    print(f"\nthe tour took {time.monotonic() - started:.1f} s: {', '.join(tour.timings)}")


def test_the_api_docs_render_offline(browser: Browser, demo: Demo) -> None:
    """Swagger UI from the package's own files: the browser may reach nothing but the demo."""
    context = browser.new_context(base_url=demo.url, viewport=DESKTOP)
    outside: list[str] = []

    def only_the_demo(route: Any) -> None:
        if route.request.url.startswith(demo.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        context.route("**/*", only_the_demo)
        page = context.new_page()
        page.goto("/docs")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
        expect(page.get_by_text("/api/v1/signals").first).to_be_visible()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "docs.png"))
        assert outside == []
    finally:
        context.close()

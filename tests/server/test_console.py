"""The operators' console (/console) in a real browser: Playwright drives Debian's chromium
against the real app served by uvicorn, with the job worker running in it.

A page that logs a console error or throws fails its test. Screenshots of every page are kept
under the test's tmp path; with PARTNERBILL_CONSOLE_SCREENSHOTS=<dir> they are also copied
there (docs/console holds the ones the README shows)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import events
from server.app import create_app
from server.console import console_routes
from server.settings import Settings
from tests.billrun_worker import arq_pool
from tests.server.test_subscriptions import gql, serve, subscribed

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not at /usr/bin/chromium (.ci/run installs it with apt-get)",
)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is in the test extra: pip install -e '.[test]'"
)
expect = playwright_api.expect

WAIT_MS = 15_000  # any expected change on a page may take this long
expect.set_options(timeout=WAIT_MS)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

PRODUCT = """mutation { createProduct(input: {name: "Fleet Tracking", ratePlans: [{
  name: "Per seat", productRatePlanNumber: "PRP-C", charges: [{name: "Seat",
  productRatePlanChargeNumber: "PRPC-C", chargeType: RECURRING, chargeModel: PER_UNIT,
  listPrice: "10.00", billingPeriod: MONTH, billingTiming: IN_ADVANCE}]}]}) {
  errors { code message } } }"""
ORDER = """mutation($n: String!) { createOrder(input: {existingAccountNumber: $n,
  orderDate: "2026-11-01", subscriptions: [{orderActions: [{createSubscription: {
  ratePlans: [{productRatePlanNumber: "PRP-C", chargeOverrides: [
  {productRatePlanChargeNumber: "PRPC-C", quantity: "5"}]}]}}]}]}) { errors { code message } } }"""
INVOICE = """mutation($n: String!, $a: Decimal!) { createStandaloneInvoice(input: {
  accountNumber: $n, invoiceDate: "2026-10-31", status: POSTED,
  items: [{chargeName: "Migrated balance", amount: $a}]}) { errors { code message } } }"""
PAYMENT = """mutation($n: String!) { createPayment(input: {accountNumber: $n, amount: "40.00",
  effectiveDate: "2026-11-02", method: WIRE}) { errors { code message } } }"""
REFRESH = """mutation($n: String!) { refreshAccountMetrics(input: {accountNumber: $n}) {
  errors { code message } } }"""
HAS_FIELD = """query($t: String!) { __type(name: $t) { fields { name } } }"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def base(database_url: str, redis_url: str) -> AsyncIterator[str]:
    """The app with its job worker (bill runs, refreshes), per test: the job queue is emptied
    before each test, so a worker must not outlive its test."""
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=True, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield addr


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


@dataclass
class Console:
    """A page of the console with what it logged."""

    page: Any
    base: str
    shots: Path
    problems: list[str] = field(default_factory=list)

    async def open(self, fragment: str) -> None:
        await self.page.goto(f"http://{self.base}/console/{fragment}")

    async def screenshot(self, name: str) -> None:
        await self.page.wait_for_load_state("networkidle")
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        keep_screenshot(path)

    async def check_accessible(self) -> None:
        """Every control has a label, and the page did not log an error."""
        unlabelled = await self.page.evaluate(
            """[...document.querySelectorAll("input, select, textarea")]
                 .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label"))
                 .map((e) => e.name || e.outerHTML)"""
        )
        assert unlabelled == []
        assert self.problems == []


def keep_screenshot(path: Path) -> None:
    target = os.environ.get("PARTNERBILL_CONSOLE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def new_console(browser: Any, base: str, shots: Path, viewport: dict[str, int]) -> Console:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    console = Console(page, base, shots)
    page.on(
        "console",
        lambda m: (
            console.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: console.problems.append(f"page error: {e}"))
    return console


def amount(text: str) -> Decimal:
    """The number of a money cell ("100.00 USD")."""
    return Decimal(text.split()[0])


async def shows_amount(cell: Any, expected: str) -> None:
    """Wait until a money cell shows ``expected``, compared as a number (the API's formatting
    of amounts is not this test's business)."""
    deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
    while True:
        text = await cell.inner_text()
        try:
            if amount(text) == Decimal(expected):
                return
        except InvalidOperation:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"shows {text!r}, not {expected}"
        await asyncio.sleep(0.05)


def metric_cell(page: Any, metric: str, kind: str) -> Any:
    return page.locator(f'tr[data-metric="{metric}"] td[data-kind="{kind}"]')


async def has_field(base: str, key: str, type_name: str, name: str) -> bool:
    data = await gql(base, key, HAS_FIELD, t=type_name)
    return name in {f["name"] for f in data["__type"]["fields"]}


async def has_account_field(base: str, key: str, name: str) -> bool:
    return await has_field(base, key, "Account", name)


async def has_query_field(base: str, key: str, name: str) -> bool:
    return await has_field(base, key, "Query", name)


# --------------------------------------------------------------------------- the operator's day


async def test_an_operator_creates_a_partner_account_watches_its_metrics_and_bills_it(
    base: str, browser: Any, shots: Path, tenant: Any, redis_url: str
) -> None:
    key = tenant.api_key
    console = await new_console(browser, base, shots, DESKTOP)
    page = console.page

    # No key yet, and anonymous access is off: the console asks for one before anything else.
    await console.open("")
    await expect(page.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    await page.get_by_role("textbox", name="API key").fill(key)
    await page.get_by_role("button", name="Save key").click()
    await expect(page.get_by_role("heading", name="Accounts", level=1)).to_be_visible()

    # The form shows the API's typed error at its field, then creates the partner account.
    await page.get_by_role("link", name="New account").click()
    await page.get_by_label("Account number").fill("RES-1")
    await page.get_by_label("Name").first.fill("Fleet Reseller")
    await page.get_by_label("Bill cycle day").fill("40")
    await page.get_by_label("Partner Account").check()
    bill_to = page.get_by_role("group", name="Bill-to contact")
    await bill_to.get_by_label("First name").fill("Rita")
    await bill_to.get_by_label("Last name").fill("Reseller")
    await page.get_by_role("button", name="Create account").click()
    day = page.get_by_label("Bill cycle day")
    await expect(day).to_have_attribute("aria-invalid", "true")
    day_field = page.locator('.field[data-path="billCycleDay"] .field-error')
    await expect(day_field).to_be_visible()
    await expect(day).to_be_focused()
    await console.check_accessible()
    await console.screenshot("account-form-error")
    await day.fill("1")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Fleet Reseller")
    await expect(page.get_by_text("Partner account", exact=True)).to_be_visible()

    # It is in the list, found by the partner filter and by its number.
    await page.get_by_role("link", name="Accounts", exact=True).first.click()
    await page.get_by_label("Partner accounts").select_option("yes")
    await page.get_by_label("Search number or name").fill("RES-1")
    await page.get_by_role("button", name="Apply").click()
    row = page.locator('tr[data-account="RES-1"]')
    await expect(row).to_contain_text("Fleet Reseller")
    await expect(row).to_contain_text("Partner")
    await console.check_accessible()

    # Writes through the API: a partner account's stored metrics do not move, the changes wait.
    await gql(base, key, PRODUCT)
    await gql(base, key, ORDER, n="RES-1")
    await gql(base, key, INVOICE, n="RES-1", a="100.00")
    freshness = await has_account_field(base, key, "pendingMetricChanges")
    live = await has_account_field(base, key, "liveMetrics")
    await console.open("#/accounts/RES-1")
    await page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    stored_balance = metric_cell(page, "balance", "stored")
    await shows_amount(stored_balance, "0")
    if freshness:
        pending = page.locator('[data-fact="pendingMetricChanges"]')
        await expect(pending).not_to_have_text("0")
    if live:
        await shows_amount(metric_cell(page, "balance", "live"), "100")
    await console.check_accessible()
    await console.screenshot("account-pending")

    # A refresh lands while the page is open (its subscription registered): the values change
    # without a reload.
    redis = await arq_pool(redis_url)
    try:
        await subscribed(redis, events.metrics_channel(redis, tenant.id))
    finally:
        await redis.aclose()
    await gql(base, key, REFRESH, n="RES-1")
    await shows_amount(stored_balance, "100")
    if freshness:
        await expect(page.locator('[data-fact="pendingMetricChanges"]')).to_have_text("0")
    await expect(page.locator(".update-note")).to_contain_text("Metrics updated (refresh)")

    # Another write, then "Refresh now": the payment's 40.00 comes off the balance.
    await gql(base, key, PAYMENT, n="RES-1")
    if freshness:
        await expect(page.locator('[data-fact="pendingMetricChanges"]')).not_to_have_text("0")
    await page.get_by_role("button", name="Refresh now").click()
    await shows_amount(stored_balance, "60")
    assert await page.evaluate("window.__sameDocument === true")
    # The documents behind the metrics are shown as they are now, too.
    await expect(page.get_by_role("table", name="Payments")).to_contain_text("WIRE")
    # Where the server reconciles, the live metrics are checked against the documents.
    if await has_query_field(base, key, "metricsReconciliation"):
        await page.get_by_role("button", name="Check against documents").click()
        await expect(page.get_by_text("Live metrics match the documents.")).to_be_visible()
        await shows_amount(metric_cell(page, "balance", "recomputed"), "60")
    await console.check_accessible()
    await console.screenshot("account")

    # A bill run for the account, followed live until its drafts wait; posted; settled.
    await page.get_by_role("link", name="Bill this account").click()
    await expect(page.get_by_label("Account numbers")).to_have_value("RES-1")
    await page.get_by_label("Target date").fill("2026-11-30")
    await console.check_accessible()
    await console.screenshot("billruns")
    await page.get_by_role("button", name="Create bill run").click()
    status = page.locator('[data-fact="status"]')
    await expect(status).to_contain_text("waiting to be posted or canceled")
    await expect(page.locator('[data-fact="invoices"]')).to_have_text("1")
    await page.get_by_role("button", name="Post invoices").click()
    await expect(status).to_have_text("POSTED")
    await expect(page.get_by_role("status").filter(has_text="Settled")).to_be_visible()
    await console.check_accessible()
    await console.screenshot("billrun")

    # Tenant settings: a refused value is shown at its field; a good one is saved.
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Lock wait (milliseconds)").fill("70000")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_label("Lock wait (milliseconds)")).to_have_attribute(
        "aria-invalid", "true"
    )
    await page.get_by_label("Lock wait (milliseconds)").fill("500")
    await page.get_by_label("Metrics refresh interval (seconds)").fill("60")
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.get_by_text("Saved: refresh every 60 s, lock wait 500 ms.")).to_be_visible()
    await console.check_accessible()
    await console.screenshot("settings")

    await page.get_by_role("link", name="Accounts", exact=True).first.click()
    await expect(page.locator('tr[data-account="RES-1"]')).to_be_visible()
    await console.screenshot("accounts")
    await page.context.close()
    assert console.problems == []


async def test_the_console_fits_a_phone_and_works_from_the_keyboard(
    base: str, browser: Any, shots: Path, tenant: Any
) -> None:
    key = tenant.api_key
    await gql(base, key, PRODUCT)
    for n in ("PHONE-1", "PHONE-2"):
        await gql(
            base, key,
            """mutation($n: String!) { createAccount(input: {accountNumber: $n, name: $n,
                 currency: "USD", partnerAccount: true, billToContact: {firstName: "A",
                 lastName: "B"}}) { errors { code message } } }""",
            n=n,
        )  # fmt: skip
    console = await new_console(browser, base, shots, PHONE)
    page = console.page
    # The key as the Settings page saves it (the first test types it there); about:blank
    # has no storage.
    await page.context.add_init_script(
        f"if (location.protocol === 'http:') "
        f"localStorage.setItem('partnerbill.console.apiKey', {key!r})"
    )
    for fragment, name, ready in (
        ("#/accounts", "phone-accounts", page.locator('tr[data-account="PHONE-1"]')),
        ("#/accounts/PHONE-1", "phone-account", metric_cell(page, "balance", "stored")),
        ("#/accounts/new", "phone-account-form", page.get_by_label("Partner Account")),
    ):
        await console.open(fragment)
        await expect(ready).to_be_visible()
        # Nothing is wider than the screen: wide tables scroll inside their own region.
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{fragment} is {overflow}px wider than the screen"
        await console.check_accessible()
        await console.screenshot(name)

    # The keyboard alone: skip link first, then the form's controls, with a visible focus ring.
    await page.goto("about:blank")  # a fresh load, not a move inside the console
    await console.open("#/accounts/new")
    await expect(page.get_by_label("Partner Account")).to_be_visible()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="New account", level=1)).to_be_focused()
    await page.get_by_label("Account number").focus()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Name").first).to_be_focused()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    await page.context.close()
    assert console.problems == []


# --------------------------------------------------------------------------- the page itself


async def test_the_page_carries_the_development_key_only_with_anonymous_access(
    database_url: str, redis_url: str
) -> None:
    async def page_config(allow_anonymous: bool) -> str:
        settings = Settings(
            database_url=database_url, redis_url=redis_url, allow_anonymous=allow_anonymous
        )
        app = create_app(settings, dev_api_key="pb_dev_secret")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            assert (await client.get("/console")).headers["location"] == "/console/"
            r = await client.get("/console/")
            assert r.status_code == 200
            assert r.headers["cache-control"] == "no-store"
            script = await client.get("/console/assets/js/main.js")
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]
            return r.text

    assert '"devApiKey": "pb_dev_secret"' in await page_config(True)
    closed = await page_config(False)
    assert "pb_dev_secret" not in closed and '"devApiKey": null' in closed


def test_every_asset_the_page_loads_is_in_the_package() -> None:
    """The page names only files shipped under server/static/console (no CDN, no build)."""
    import re

    from server.console import CONSOLE_DIR

    html = (CONSOLE_DIR / "index.html").read_text()
    js = {p.relative_to(CONSOLE_DIR / "assets").as_posix() for p in CONSOLE_DIR.rglob("*.js")}
    for ref in re.findall(r'(?:href|src)="([^"#][^"]*)"', html):
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/console/assets/"), ref
        assert (CONSOLE_DIR / "assets" / ref.removeprefix("/console/assets/")).is_file(), ref
    for path in (CONSOLE_DIR / "assets").rglob("*.js"):
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path
        for ref in re.findall(r'from "(\.[^"]+)"', text):
            target = (path.parent / ref).resolve()
            assert target.is_file(), f"{path.name} imports {ref}"
    assert "main.js" in {Path(p).name for p in js}
    assert console_routes()  # mounted by server.app.create_app

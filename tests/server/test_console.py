"""The operators' console (/console) in a real browser: Playwright drives Debian's chromium
against the real app served by uvicorn, with the job worker running in it.

A page that logs a console error or throws fails its test. Screenshots of every page are kept
under the test's tmp path; with PARTNERBILL_CONSOLE_SCREENSHOTS=<dir> they are also copied
there (docs/console holds the ones the README shows)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from jobs import events
from server.app import create_app
from server.console import console_routes
from server.importer import ImportKind, read_rows
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
        ("#/imports", "phone-imports", page.get_by_label("File (CSV or JSON Lines)")),
        ("#/reconciliation", "phone-reconciliation", page.locator("main h1")),
        ("#/events", "phone-events", page.locator("main h1")),
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


# --------------------------------------------------------------------------- imports, reconciling

ACCOUNT = """mutation($n: String!, $p: Boolean!) { createAccount(input: {accountNumber: $n,
  name: $n, currency: "USD", partnerAccount: $p, billToContact: {firstName: "A",
  lastName: "B"}}) { errors { code message } } }"""
INVOICES = """query($n: String!) { account(accountNumber: $n) { invoices(first: 50) {
  totalCount edges { node { invoiceNumber amount } } } } }"""
# Row 1 (two lines, one invoice of two items) and row 4 are good; row 3 names an account that
# does not exist (refused alone); row 5's date cannot be read, which refuses a whole call until
# that row stands alone.
IMPORT_CSV = (
    "accountNumber,invoiceNumber,invoiceDate,status,chargeName,amount\n"
    "IMP-P,IMP-INV-1,2026-11-01,POSTED,Seats,10.00\n"
    'IMP-P,IMP-INV-1,2026-11-01,POSTED,"Support, premium",5.00\n'
    "NOPE-9,,2026-11-01,POSTED,Seats,7.00\n"
    "IMP-O,,2026-11-02,POSTED,Seats,20.00\n"
    "IMP-O,,2026-11-31,POSTED,Seats,3.00\n"
)


async def keyed_console(browser: Any, base: str, shots: Path, key: str) -> Console:
    """A console whose browser already holds the key (as the Settings page saves it)."""
    console = await new_console(browser, base, shots, DESKTOP)
    await console.page.context.add_init_script(
        f"if (location.protocol === 'http:') "
        f"localStorage.setItem('partnerbill.console.apiKey', {key!r})"
    )
    return console


async def invoices_of(base: str, key: str, number: str) -> list[tuple[str, Decimal]]:
    data = await gql(base, key, INVOICES, n=number)
    conn = data["account"]["invoices"]
    assert conn["totalCount"] == len(conn["edges"])
    return sorted((e["node"]["invoiceNumber"], Decimal(e["node"]["amount"])) for e in conn["edges"])


async def test_an_operator_imports_invoices_checking_first_and_taking_the_failed_rows_back(
    base: str, browser: Any, shots: Path, tenant: Any, tmp_path: Path
) -> None:
    key = tenant.api_key
    await gql(base, key, ACCOUNT, n="IMP-P", p=True)
    await gql(base, key, ACCOUNT, n="IMP-O", p=False)
    source = tmp_path / "november.csv"
    source.write_text(IMPORT_CSV)
    console = await keyed_console(browser, base, shots, key)
    page = console.page
    await console.open("#/imports")
    await expect(page.get_by_role("heading", name="Imports", level=1)).to_be_visible()
    await page.get_by_label("Kind of rows").select_option("invoices")
    await page.get_by_label("File (CSV or JSON Lines)").set_input_files(source)
    summary = page.locator('[data-fact="import-summary"]')

    # The dry run checks every row and writes nothing.
    await page.get_by_role("button", name="Dry run").click()
    await expect(summary).to_have_text(
        "Dry run: 2 of 4 invoices would be written, 2 refused. Nothing was written."
    )
    assert await invoices_of(base, key, "IMP-P") == []
    assert await invoices_of(base, key, "IMP-O") == []

    # The import writes the good rows; the progress bar ends full, counting the refused ones.
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(summary).to_contain_text("Import: 2 of 4 invoices written")
    await expect(page.locator('[data-fact="import-progress"]')).to_contain_text("Sent 4 of 4 rows")
    await expect(page.locator('[data-fact="import-progress"]')).to_contain_text("2 failed")
    assert await page.locator("#import-progress").evaluate("(p) => p.value === p.max")
    partner = await invoices_of(base, key, "IMP-P")
    assert [(n, a) for n, a in partner] == [("IMP-INV-1", Decimal("15"))]
    ordinary = await invoices_of(base, key, "IMP-O")
    assert [a for _, a in ordinary] == [Decimal("20")]
    refused = page.get_by_role("table", name="Refused rows")
    await expect(refused.locator('tr[data-row="3"]')).to_contain_text("NOT_FOUND")
    await expect(refused.locator('tr[data-row="5"]')).to_contain_text("VALIDATION")
    await console.check_accessible()
    await console.screenshot("imports")

    # The failed rows come back as a CSV in the input's columns, with _row and _errors.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download failed rows (november.failed.csv)").click()
    download = await info.value
    assert download.suggested_filename == "november.failed.csv"
    failed = tmp_path / "november.failed.csv"
    await download.save_as(failed)
    lines = list(csv.DictReader(failed.open(newline="")))
    assert [line["_row"] for line in lines] == ["3", "5"]
    assert lines[0]["accountNumber"] == "NOPE-9" and "NOT_FOUND" in lines[0]["_errors"]
    assert lines[1]["invoiceDate"] == "2026-11-31" and lines[1]["_errors"].startswith("VALIDATION")

    # The same file again writes nothing more: every row's key was used.
    await page.get_by_label("File (CSV or JSON Lines)").set_input_files(source)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(summary).to_contain_text("Import: 2 of 4 invoices written")
    assert await invoices_of(base, key, "IMP-P") == partner
    assert await invoices_of(base, key, "IMP-O") == ordinary

    # Corrected, the failed-rows file is taken back: its two rows are written.
    fixed = failed.read_text().replace("NOPE-9", "IMP-O").replace("2026-11-31", "2026-11-30")
    failed.write_text(fixed)
    await page.get_by_label("File (CSV or JSON Lines)").set_input_files(failed)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(summary).to_have_text(
        "Import: 2 of 2 invoices written (or already written by an earlier run of this file), "
        "0 refused."
    )
    amounts = sorted(a for _, a in await invoices_of(base, key, "IMP-O"))
    assert amounts == [Decimal("3"), Decimal("7"), Decimal("20")]
    await page.context.close()
    assert console.problems == []


KEY_FILES: list[tuple[str, str, str]] = [
    (
        "invoices",
        "migration.csv",
        "accountNumber,invoiceNumber,invoiceDate,status,chargeName,quantity,amount,idempotencyKey\r\n"
        "A-1,INV-1,2026-11-01,POSTED, Seats ,2,10.00,\r\n"
        'A-1,INV-1,2026-11-01,POSTED,"Café, ✓ 😀 ""quoted""",,5.00,\r\n'
        "\r\n"
        'A-2,,2026-11-02,DRAFT,"two\nlines",,1.00,own-key\r\n'
        "A-3,,2026-11-03,POSTED,Seats,,2.50,",
    ),
    (
        "payments",
        "payments.csv",
        "accountNumber,amount,effectiveDate,method,invoiceNumber,debitMemoNumber,appliedAmount\n"
        "A-1,20,2026-11-02,WIRE,INV-1,,20\n"
        "A-1,5,2026-11-02,CHECK,,DM-1,\n",
    ),
    (
        "credit-memos",
        "memos.failed.csv",
        "accountNumber,invoiceNumber,amount,reasonCode,autoPost,_row,_errors\n"
        "A-1,INV-1,3.00,Correction,true,7,NOT_FOUND: no\n"
        "A-1,INV-1,4.00,,,x,\n",
    ),
    (
        "payments",
        "payments.jsonl",
        '{"accountNumber": "A-1", "amount": "20", "effectiveDate": "2026-11-02", '
        '"invoices": [{"invoiceNumber": "INV-1", "amount": "20"}], "reference": "Zürich \\u00e9"}\n'
        "\n"
        '{"accountNumber": "A-2", "amount": "1", "_row": 9, "_errors": [], "method": "ACH", '
        '"quantity": 3, "autoPost": false, "note": null}\n',
    ),
]


async def test_the_console_reads_import_files_as_the_command_does(
    base: str, browser: Any, shots: Path, tenant: Any, tmp_path: Path
) -> None:
    """Same rows, same numbers, same derived keys as `partnerbill import` (server/importer.py),
    so a file sent through both writes nothing twice."""
    console = await keyed_console(browser, base, shots, tenant.api_key)
    await console.open("#/imports")
    await expect(console.page.get_by_role("heading", name="Imports", level=1)).to_be_visible()
    for kind, name, content in KEY_FILES:
        path = tmp_path / name
        path.write_bytes(content.encode())
        command = [[row.number, row.input] for row in read_rows(ImportKind(kind), path)]
        in_browser = await console.page.evaluate(
            """async ([kind, name, text]) => {
                const m = await import("/console/assets/js/importfile.js");
                const { rows } = await m.readRows(kind, name, text);
                return rows.map((r) => [r.number, r.input]);
            }""",
            [kind, name, content],
        )
        assert in_browser == command, name
    await console.page.context.close()
    assert console.problems == []


async def test_the_reconciliation_page_lists_an_account_whose_metrics_no_document_explains(
    base: str, browser: Any, shots: Path, tenant: Any, sessionmaker: Any
) -> None:
    key = tenant.api_key
    if not await has_query_field(base, key, "metricsReconciliation"):
        pytest.skip("this server has no Query.metricsReconciliation")
    for n, partner in (("RC-P", True), ("RC-O", False)):
        await gql(base, key, ACCOUNT, n=n, p=partner)
        await gql(base, key, INVOICE, n=n, a="45.00")
    console = await keyed_console(browser, base, shots, key)
    page = console.page
    await console.open("#/reconciliation")
    start = page.get_by_role("button", name="Reconcile all accounts")
    summary = page.locator('[data-fact="reconcile-summary"]')
    await start.click()
    await expect(summary).to_have_text("All 2 accounts checked match their documents.")

    # A stored total that no document explains.
    async with sessionmaker.begin() as s:
        await s.execute(
            text(
                "UPDATE account_metrics m SET unapplied_payment_amount = 25 FROM account a "
                "WHERE a.id = m.account_id AND a.tenant_id = :t AND a.account_number = 'RC-O'"
            ),
            {"t": tenant.id},
        )
    await start.click()
    await expect(summary).to_have_text("1 of 2 accounts do not match their documents.")
    await expect(page.locator('[data-fact="reconcile-progress"]')).to_contain_text(
        "2 of 2 accounts checked · 1 mismatching"
    )
    row = page.locator('tr[data-account="RC-O"][data-metric="unappliedPaymentAmount"]')
    await expect(row).to_be_visible()
    assert amount(await row.locator("td.differs").inner_text()) == Decimal("25")
    # Only the metrics that differ, as `partnerbill reconcile` lists them.
    differing = await page.locator('tr[data-account="RC-O"]').evaluate_all(
        "(rows) => rows.map((r) => r.dataset.metric)"
    )
    assert differing == ["balance", "unappliedPaymentAmount"]
    assert await page.locator('tr[data-account="RC-P"]').count() == 0
    await console.check_accessible()
    await console.screenshot("reconciliation")
    await page.context.close()
    assert console.problems == []


# --------------------------------------------------------------------------- events

WEBHOOK = """mutation($url: String!) { createWebhookEndpoint(input: {url: $url,
  description: "console test"}) { webhookEndpoint { id } errors { code message } } }"""
DELIVERIES = """query($id: ID!) { webhookDeliveries(endpointId: $id) { totalCount } }"""


async def test_the_events_page_shows_a_write_as_it_lands_and_the_webhook_deliveries(
    base: str, browser: Any, shots: Path, tenant: Any
) -> None:
    key = tenant.api_key
    if not await has_query_field(base, key, "events"):
        pytest.skip("this server has no Query.events")
    await gql(base, key, ACCOUNT, n="EV-1", p=False)
    console = await keyed_console(browser, base, shots, key)
    page = console.page
    await console.open("#/accounts")
    await page.get_by_role("link", name="Events").click()
    await expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    await expect(page.locator('[data-fact="events-status"]')).to_contain_text("Following live")
    created = page.locator('tr[data-event-type="ACCOUNT_CREATED"]')
    await expect(created).to_contain_text("EV-1")
    await page.evaluate("window.__sameDocument = true")

    # A write while the page is open: its event arrives on top, without a reload.
    await gql(base, key, INVOICE, n="EV-1", a="12.00")
    posted = page.locator('tr[data-event-type="INVOICE_POSTED"]')
    await expect(posted).to_contain_text("EV-1")
    rows = page.get_by_role("table", name="Events").locator("tbody tr")
    newest, oldest = rows.first, rows.last
    await expect(newest).not_to_have_attribute("data-event-type", "ACCOUNT_CREATED")
    await expect(oldest).to_have_attribute("data-event-type", "ACCOUNT_CREATED")
    assert await page.evaluate("window.__sameDocument === true")

    # Narrowed to a type and an account.
    await page.get_by_label("Type").select_option("INVOICE_POSTED")
    await page.get_by_label("Account numbers").fill("EV-1")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator('[data-fact="events-status"]')).to_contain_text("1 events read")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-event-type", "INVOICE_POSTED")

    if await has_query_field(base, key, "webhookEndpoints"):
        # An endpoint nothing listens at: the worker's failed attempts are listed.
        made = await gql(base, key, WEBHOOK, url="http://127.0.0.1:9/hook")
        endpoint_id = made["createWebhookEndpoint"]["webhookEndpoint"]["id"]
        await gql(base, key, INVOICE, n="EV-1", a="13.00")
        deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
        while (await gql(base, key, DELIVERIES, id=endpoint_id))["webhookDeliveries"][
            "totalCount"
        ] == 0:
            assert asyncio.get_running_loop().time() < deadline, "no delivery attempted"
            await asyncio.sleep(0.2)
        await console.open("#/events")
        endpoint = page.locator(f'tr[data-endpoint="{endpoint_id}"]')
        await expect(endpoint).to_contain_text("http://127.0.0.1:9/hook")
        await endpoint.get_by_role("button", name="Show deliveries").click()
        delivery = page.get_by_role("table", name="Deliveries to http://127.0.0.1:9/hook")
        await expect(delivery.locator("tbody tr").first).to_contain_text("Failed")
    await console.check_accessible()
    await console.screenshot("events")
    await page.context.close()
    assert console.problems == []


async def test_an_import_call_the_service_does_not_answer_is_sent_again(
    base: str, browser: Any, shots: Path, tenant: Any, tmp_path: Path
) -> None:
    key = tenant.api_key
    await gql(base, key, ACCOUNT, n="RETRY-O", p=False)
    source = tmp_path / "retry.csv"
    source.write_text(
        "accountNumber,invoiceDate,status,chargeName,amount\n"
        "RETRY-O,2026-11-01,POSTED,Seats,1.00\n"
        "RETRY-O,2026-11-02,POSTED,Seats,2.00\n"
    )
    console = await keyed_console(browser, base, shots, key)
    page = console.page
    calls: list[int] = []  # the rows of each bulk call

    async def busy_once(route: Any) -> None:
        # The first bulk call is answered 503 by "the service"; the rest go through.
        body = route.request.post_data or ""
        if "ConsoleImport" not in body:
            await route.continue_()
            return
        calls.append(len(json.loads(body)["variables"]["rows"]))
        if len(calls) == 1:
            await route.fulfill(status=503, body="busy")
        else:
            await route.continue_()

    await page.route("**/graphql", busy_once)
    await console.open("#/imports")
    await page.get_by_label("File (CSV or JSON Lines)").set_input_files(source)
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.locator('[data-fact="import-summary"]')).to_contain_text(
        "Import: 2 of 2 invoices written"
    )
    # The same call again, whole (a refused call would have been split).
    assert calls == [2, 2]
    amounts = sorted(a for _, a in await invoices_of(base, key, "RETRY-O"))
    assert amounts == [Decimal("1"), Decimal("2")]
    await page.context.close()
    # The browser reports the refused load itself; nothing else went wrong.
    assert [p for p in console.problems if "status of 503" not in p] == []

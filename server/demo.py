"""``partnerbill demo``: the seeds' reseller scenario, built through the public GraphQL API.

A catalog (one product, a per-seat monthly charge), a reseller that is the invoice owner and
is flagged a partner account the way the seeds do it (created, then updated to
``partnerAccount: true``), partner end customers that own the subscriptions, orders sent in
parallel (partner accounts take no account lock, so none of them waits on another), and the
month-end bill run for the reseller, posted when it completes. It talks to a running service
over HTTP like any other client, so what it makes is what the console then shows.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SEAT_PRICE = Decimal("10.00")
# Errors the API marks retryable come back as these codes; the demo waits and sends again.
RETRY_ATTEMPTS = 6
RETRY_FIRST_WAIT_S = 0.2
BILL_RUN_POLL_S = 0.5
BILL_RUN_TIMEOUT_S = 600.0
SETTLED = {"POSTED", "CANCELED", "ERROR"}

CREATE_ACCOUNT = """mutation DemoAccount($i: CreateAccountInput!) { createAccount(input: $i) {
  account { accountNumber } errors { code message field retryable } } }"""
UPDATE_ACCOUNT = """mutation DemoPartner($i: UpdateAccountInput!) { updateAccount(input: $i) {
  account { accountNumber partnerAccount } errors { code message field retryable } } }"""
CREATE_PRODUCT = """mutation DemoProduct($i: CreateProductInput!) { createProduct(input: $i) {
  product { productNumber } errors { code message field retryable } } }"""
CREATE_ORDER = """mutation DemoOrder($i: CreateOrderInput!) { createOrder(input: $i) {
  order { orderNumber } errors { code message field retryable } } }"""
CREATE_BILL_RUN = """mutation DemoBillRun($i: CreateBillRunInput!) { createBillRun(input: $i) {
  billRun { billRunNumber status } errors { code message field retryable } } }"""
BILL_RUN = """query DemoBillRunState($n: String!) { billRun(billRunNumber: $n) {
  status accountsTotal accountsProcessed invoicesGenerated errors { accountNumber message } } }"""
EXISTING = """query DemoExisting($n: String!) { account(accountNumber: $n) { accountNumber } }"""


class DemoError(RuntimeError):
    """The service refused a step; the message says which and why."""


@dataclass(frozen=True)
class DemoPlan:
    """What to build: ``customers`` end customers and ``subscriptions`` subscriptions in all,
    ``per_order`` to an order, ``concurrency`` orders in flight at once."""

    customers: int = 10
    subscriptions: int = 100
    per_order: int = 5
    concurrency: int = 8
    prefix: str = "DEMO"
    today: date = field(default_factory=date.today)

    def __post_init__(self) -> None:
        for name in ("customers", "subscriptions", "per_order", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")

    @property
    def reseller(self) -> str:
        return f"{self.prefix}-RESELLER"

    @property
    def rate_plan(self) -> str:
        return f"{self.prefix}-PRP-FLEET"

    @property
    def seat_charge(self) -> str:
        return f"{self.prefix}-PRPC-SEAT"

    def customer_numbers(self) -> list[str]:
        return [f"{self.prefix}-CUST-{i:04d}" for i in range(1, self.customers + 1)]

    @property
    def order_date(self) -> date:
        return self.today.replace(day=1)

    @property
    def month_end(self) -> date:
        return self.today.replace(day=calendar.monthrange(self.today.year, self.today.month)[1])

    def orders(self) -> list[tuple[str, list[int]]]:
        """(subscription owner, seats of each of its new subscriptions) per order: round robin
        over the customers, ``per_order`` subscriptions each, the last order smaller."""
        out: list[tuple[str, list[int]]] = []
        owners = itertools.cycle(self.customer_numbers())
        made = 0
        while made < self.subscriptions:
            count = min(self.per_order, self.subscriptions - made)
            # 1 to 10 seats, varied so the bill run's invoice lines differ.
            out.append((next(owners), [(made + k) % 10 + 1 for k in range(count)]))
            made += count
        return out


@dataclass
class DemoResult:
    reseller: str
    customers: int
    orders: int
    subscriptions: int
    bill_run: str
    bill_run_status: str
    invoices: int
    mrr: Decimal


class Client:
    """GraphQL over HTTP with the API key, retrying what the API says is retryable."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, query: str, **variables: Any) -> dict[str, Any]:
        wait = RETRY_FIRST_WAIT_S
        for attempt in range(RETRY_ATTEMPTS):
            last = attempt == RETRY_ATTEMPTS - 1
            try:
                response = await self.http.post(
                    self.url, json={"query": query, "variables": variables}
                )
            except httpx.TransportError as e:
                if last:
                    raise DemoError(f"the service cannot be reached: {e}") from e
                await asyncio.sleep(wait)
                wait *= 2
                continue
            if response.status_code in (429, 503) and not last:
                await asyncio.sleep(wait)
                wait *= 2
                continue
            body = _json(response)
            errors = body.get("errors") or []
            if response.status_code != 200 or errors:
                message = errors[0].get("message") if errors else response.text[:200]
                raise DemoError(f"HTTP {response.status_code}: {message}")
            data: dict[str, Any] = body["data"]
            payload_errors = [
                e for value in data.values() if isinstance(value, dict)
                for e in value.get("errors") or []
            ]  # fmt: skip
            if payload_errors and all(e.get("retryable") for e in payload_errors) and not last:
                await asyncio.sleep(wait)
                wait *= 2
                continue
            if payload_errors:
                raise DemoError("; ".join(_describe(e) for e in payload_errors))
            return data
        raise AssertionError("unreachable: the last attempt returns or raises")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise DemoError(f"HTTP {response.status_code}: {response.text[:200]}") from None
    if not isinstance(body, dict):
        raise DemoError(f"HTTP {response.status_code}: an unexpected answer")
    return body


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(error.get("field") or [])
    return f"{error.get('code')}: {error.get('message')}" + (f" (at {where})" if where else "")


def _account(number: str, name: str, *, partner: bool, first: str, last: str) -> dict[str, Any]:
    return {
        "accountNumber": number,
        "name": name,
        "currency": "USD",
        "partnerAccount": partner,
        "billCycleDay": 1,
        "paymentTerm": "NET_30",
        "billToContact": {"firstName": first, "lastName": last},
    }


async def build(
    client: Client,
    plan: DemoPlan,
    console: Console,
) -> DemoResult:
    """Build the scenario; each step shows a bar on ``console``."""
    if (await client.call(EXISTING, n=plan.reseller))["account"] is not None:
        raise DemoError(
            f"account {plan.reseller} exists already: run the demo again with another "
            "--prefix (for example --prefix DEMO2)"
        )
    orders = plan.orders()
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        catalog = progress.add_task("Catalog", total=1)
        await client.call(
            CREATE_PRODUCT,
            i={
                "name": "Fleet Tracking",
                "productNumber": f"{plan.prefix}-FLEET",
                "ratePlans": [{
                    "name": "Per seat",
                    "productRatePlanNumber": plan.rate_plan,
                    "charges": [{
                        "name": "Seat",
                        "productRatePlanChargeNumber": plan.seat_charge,
                        "chargeType": "RECURRING",
                        "chargeModel": "PER_UNIT",
                        "listPrice": str(SEAT_PRICE),
                        "billingPeriod": "MONTH",
                        "billingTiming": "IN_ADVANCE",
                    }],
                }],
            },
        )  # fmt: skip
        progress.advance(catalog)

        accounts = progress.add_task("Reseller and end customers", total=plan.customers + 2)
        # The seeds' first step: an existing invoice-owner account is flagged a partner.
        await client.call(
            CREATE_ACCOUNT,
            i=_account(
                plan.reseller, "Fleet Reseller", partner=False, first="Rita", last="Reseller"
            ),
        )
        progress.advance(accounts)
        await client.call(
            UPDATE_ACCOUNT, i={"accountNumber": plan.reseller, "partnerAccount": True}
        )
        progress.advance(accounts)
        gate = asyncio.Semaphore(plan.concurrency)

        async def customer(i: int, number: str) -> None:
            async with gate:
                await client.call(
                    CREATE_ACCOUNT,
                    i=_account(
                        number, f"End Customer {i}", partner=True, first="Eve", last=f"Customer {i}"
                    ),
                )
            progress.advance(accounts)

        await asyncio.gather(
            *(customer(i, n) for i, n in enumerate(plan.customer_numbers(), start=1))
        )

        subs = progress.add_task("Subscriptions (parallel orders)", total=plan.subscriptions)

        async def order(owner: str, seats: list[int]) -> None:
            group = [
                {"orderActions": [{"createSubscription": {
                    "subscriptionOwnerAccountNumber": owner,
                    "invoiceOwnerAccountNumber": plan.reseller,
                    "ratePlans": [{"productRatePlanNumber": plan.rate_plan, "chargeOverrides": [
                        {"productRatePlanChargeNumber": plan.seat_charge, "quantity": str(n)}]}],
                }}]}
                for n in seats
            ]  # fmt: skip
            async with gate:
                await client.call(
                    CREATE_ORDER,
                    i={
                        "existingAccountNumber": owner,
                        "orderDate": plan.order_date.isoformat(),
                        "subscriptions": group,
                    },
                )
            progress.advance(subs, len(seats))

        await asyncio.gather(*(order(owner, seats) for owner, seats in orders))

        run = progress.add_task("Month-end bill run", total=1)
        created = await client.call(
            CREATE_BILL_RUN,
            i={
                "accountNumbers": [plan.reseller],
                "targetDate": plan.month_end.isoformat(),
                "invoiceDate": plan.month_end.isoformat(),
                "autoPost": True,
            },
        )
        number = created["createBillRun"]["billRun"]["billRunNumber"]
        progress.update(run, description=f"Month-end bill run {number}")
        state = await _wait_for_run(client, number, progress, run)

    seats = sum(n for _, s in orders for n in s)
    return DemoResult(
        reseller=plan.reseller,
        customers=plan.customers,
        orders=len(orders),
        subscriptions=plan.subscriptions,
        bill_run=number,
        bill_run_status=state["status"],
        invoices=state["invoicesGenerated"],
        mrr=SEAT_PRICE * seats,
    )


async def _wait_for_run(
    client: Client, number: str, progress: Progress, task: Any
) -> dict[str, Any]:
    """Poll the run until it settles (the worker bills and posts it)."""
    async with asyncio.timeout(BILL_RUN_TIMEOUT_S):
        while True:
            state: dict[str, Any] = (await client.call(BILL_RUN, n=number))["billRun"]
            progress.update(
                task, total=max(state["accountsTotal"], 1), completed=state["accountsProcessed"]
            )
            if state["status"] in SETTLED:
                if state["status"] == "ERROR":
                    why = "; ".join(
                        f"{e['accountNumber']}: {e['message']}" for e in state["errors"]
                    )
                    raise DemoError(f"bill run {number} ended in ERROR: {why}")
                return state
            await asyncio.sleep(BILL_RUN_POLL_S)


async def run_demo(url: str, api_key: str | None, plan: DemoPlan, console: Console) -> DemoResult:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=plan.concurrency + 2)
    async with httpx.AsyncClient(headers=headers, timeout=60.0, limits=limits) as http:
        return await build(Client(http, url), plan, console)


def print_result(result: DemoResult, console: Console, console_url: str) -> None:
    console.print(
        f"[bold]Done.[/bold] Reseller [bold]{result.reseller}[/bold] (partner account, invoice "
        f"owner) with {result.customers} partner end customers owning {result.subscriptions} "
        f"subscriptions from {result.orders} parallel orders; contracted MRR "
        f"{result.mrr} USD. Bill run {result.bill_run}: {result.bill_run_status}, "
        f"{result.invoices} invoice(s)."
    )
    console.print(
        "The reseller's metrics wait for the periodic refresh: open "
        f"{console_url}#/accounts/{result.reseller} and press Refresh now to fold them."
    )


def main(url: str, api_key: str | None, plan: DemoPlan) -> int:
    """The command: build, report, and say what went wrong in one line when it did."""
    console = Console(stderr=True)
    try:
        result = asyncio.run(run_demo(url, api_key, plan, console))
    except DemoError as e:
        console.print(f"partnerbill demo: {e}")
        return 1
    console_url = url.removesuffix("/graphql") + "/console/"
    print_result(result, Console(), console_url)
    return 0


__all__ = ["DemoError", "DemoPlan", "DemoResult", "build", "main", "run_demo"]

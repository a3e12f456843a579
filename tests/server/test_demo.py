"""``partnerbill demo`` builds the seeds' reseller scenario through the public API of a real
server (uvicorn, with its job worker for the bill run)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import pytest
from rich.console import Console

from server.cli import build_parser
from server.demo import DemoError, DemoPlan, run_demo
from server.settings import Settings
from tests.server.test_subscriptions import gql, serve

PLAN = DemoPlan(customers=3, subscriptions=7, per_order=2, concurrency=4, today=date(2026, 11, 15))

STATE = """query($r: String!, $c: String!) {
  reseller: account(accountNumber: $r) { partnerAccount
    invoiceOwned: subscriptions(role: INVOICE_OWNER) { totalCount }
    owned: subscriptions(role: OWNER) { totalCount }
    invoices(status: "POSTED") { totalCount edges { node { amount source invoiceDate } } } }
  customer: account(accountNumber: $c) { partnerAccount
    owned: subscriptions(role: OWNER, first: 10) { totalCount edges { node {
      invoiceOwnerAccountNumber } } } }
  accounts(filter: {partnerAccount: true}) { totalCount } }"""


@pytest.fixture
async def base(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=True, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield addr


async def test_the_demo_builds_the_reseller_scenario_through_the_api(
    base: str, tenant: object
) -> None:
    key = tenant.api_key  # type: ignore[attr-defined]
    out = io.StringIO()
    result = await run_demo(f"http://{base}/graphql", key, PLAN, Console(file=out, width=100))

    assert (result.orders, result.subscriptions, result.bill_run_status) == (4, 7, "POSTED")
    seats = 1 + 2 + 3 + 4 + 5 + 6 + 7  # 1 to 10 seats a subscription, in turn
    assert result.mrr == Decimal("10.00") * seats
    assert "Subscriptions (parallel orders)" in out.getvalue()

    state = await gql(base, key, STATE, r="DEMO-RESELLER", c="DEMO-CUST-0001")
    reseller, customer = state["reseller"], state["customer"]
    # The reseller is a partner account and the invoice owner; the end customers own.
    assert reseller["partnerAccount"] is True
    assert reseller["invoiceOwned"]["totalCount"] == 7
    assert reseller["owned"]["totalCount"] == 0
    assert customer["partnerAccount"] is True
    assert customer["owned"]["totalCount"] == 3  # orders 1 and 4 went to customer 1: 2 + 1
    assert {e["node"]["invoiceOwnerAccountNumber"] for e in customer["owned"]["edges"]} == {
        "DEMO-RESELLER"
    }
    assert state["accounts"]["totalCount"] == 4
    # The month-end bill run billed November in advance on one invoice, posted.
    [invoice] = [e["node"] for e in reseller["invoices"]["edges"]]
    assert (invoice["source"], invoice["invoiceDate"]) == ("BILL_RUN", "2026-11-30")
    assert Decimal(invoice["amount"]) == Decimal("10.00") * seats

    # Run again with the same prefix: refused before anything is written.
    with pytest.raises(DemoError, match="--prefix"):
        await run_demo(f"http://{base}/graphql", key, PLAN, Console(file=io.StringIO()))
    again = await gql(base, key, STATE, r="DEMO-RESELLER", c="DEMO-CUST-0001")
    assert again["accounts"]["totalCount"] == 4


async def test_a_refused_key_is_a_clear_error(base: str) -> None:
    with pytest.raises(DemoError, match="401"):
        await run_demo(f"http://{base}/graphql", "pb_not_a_key", PLAN, Console(file=io.StringIO()))


def test_the_command_line() -> None:
    args = build_parser().parse_args(["demo", "--customers", "3", "--subscriptions", "7"])
    assert (args.customers, args.subscriptions, args.prefix) == (3, 7, "DEMO")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--customers", "0"])

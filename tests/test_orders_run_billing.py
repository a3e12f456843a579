"""processingOptions.runBilling bills the order's subscriptions through the rating code."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, order

ORDER = """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) {
    order { orderNumber invoiceNumbers } errors { __typename code field }
  }
}"""
INVOICE = """
query($n: String!) { invoice(invoiceNumber: $n) {
  status source amount balance items { chargeName amount serviceStartDate serviceEndDate } } }"""
BALANCE = (
    'query { account(accountNumber: "R") { metrics { totalInvoiceBalance lastInvoiceDate } } }'
)


@pytest.fixture
async def gql(sessionmaker: Any, tenant: Any) -> Gql:
    g = Gql(sessionmaker, tenant.id)
    await make_catalog(g)
    await make_account(g, "R")
    return g


@pytest.mark.parametrize("draft", [False, True])
async def test_run_billing_invoices_the_order(gql: Gql, draft: bool) -> None:
    # January in advance from Jan 1 (BCD 1): platform 30.00 flat, 3 seats x 10.00, and the
    # one-time setup 100.00.
    data = await gql(
        ORDER,
        input=order("R", [{"orderActions": [create_action(seats="3")]}], date="2026-01-01",
                    processingOptions={"runBilling": True, "targetDate": "2026-01-01",
                                       "generateDraftInvoice": draft}),
    )  # fmt: skip
    result = data["createOrder"]
    assert result["errors"] == []
    [number] = result["order"]["invoiceNumbers"]
    invoice = (await gql(INVOICE, n=number))["invoice"]
    assert invoice["status"] == ("DRAFT" if draft else "POSTED")
    assert invoice["source"] == "ORDER"
    amounts = sorted((i["chargeName"], i["amount"]) for i in invoice["items"])
    assert amounts == [("Platform", "30.00"), ("Seats", "30.00"), ("Setup", "100.00")]
    assert invoice["amount"] == "160.00"
    metrics = (await gql(BALANCE))["account"]["metrics"]
    expected = ("0.00", None) if draft else ("160.00", "2026-01-01")
    assert (metrics["totalInvoiceBalance"], metrics["lastInvoiceDate"]) == expected

"""The one-statement writes (createStandaloneInvoice, createPayment, subscription-only
createOrder) against the partnerAccount switch and the session writes: whatever commits in
whatever order, an account's metrics end equal to the documents, and an ordinary account
keeps no pending ledger rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from billing import metrics as met
from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, order

INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) { invoice { invoiceNumber } errors { code } } }"""
PAYMENT = """mutation($input: CreatePaymentInput!) {
  createPayment(input: $input) { payment { paymentNumber } errors { code } } }"""
ORDER = """mutation($input: CreateOrderInput!) {
  createOrder(input: $input) { order { orderNumber subscriptionNumbers } errors { code } } }"""
FLIP = """mutation($n: String!, $p: Boolean!) {
  updateAccount(input: {accountNumber: $n, partnerAccount: $p}) {
    account { partnerAccount } errors { code } } }"""


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def _write(gql: Gql, n: int) -> str:
    kind = n % 3
    if kind == 0:
        data = await gql(
            INVOICE,
            input={
                "accountNumber": "HOT",
                "invoiceDate": f"2026-11-{1 + n % 28:02d}",
                "status": "POSTED",
                "items": [{"chargeName": "Seat", "quantity": "2", "unitPrice": "12.50"}],
            },
        )
        errors = data["createStandaloneInvoice"]["errors"]
    elif kind == 1:
        data = await gql(
            PAYMENT,
            input={"accountNumber": "HOT", "amount": "10.00", "effectiveDate": "2026-11-02"},
        )
        errors = data["createPayment"]["errors"]
    else:
        data = await gql(ORDER, input=order("HOT", [{"orderActions": [create_action()]}]))
        errors = data["createOrder"]["errors"]
    return errors[0]["code"] if errors else "ok"


async def _state(sessionmaker: Any, tenant_id: int) -> tuple[Any, met.Metrics, met.Metrics, int]:
    async with sessionmaker() as s:
        row = (
            (
                await s.execute(
                    text(
                        "SELECT id, partner_account FROM account "
                        "WHERE tenant_id = :t AND account_number = 'HOT'"
                    ),
                    {"t": tenant_id},
                )
            )
            .mappings()
            .one()
        )
        pending = (
            await s.execute(
                text("SELECT count(*) FROM metrics_change WHERE account_id = :a"),
                {"a": row["id"]},
            )
        ).scalar_one()
        return (
            row,
            await met.stored_metrics(s, row["id"]),
            await met.recompute(s, row["id"]),
            int(pending),
        )


@pytest.mark.parametrize("start_partner", [True, False])
async def test_writes_racing_partner_switches_keep_metrics_exact(
    gql: Gql, sessionmaker: Any, tenant: Any, start_partner: bool
) -> None:
    await make_catalog(gql)
    await make_account(gql, "HOT", partner=start_partner)
    flips: list[str] = []

    async def switch() -> None:
        partner = start_partner
        for _ in range(6):
            await asyncio.sleep(0.01)
            partner = not partner
            data = await gql(FLIP, n="HOT", p=partner)
            errs = data["updateAccount"]["errors"]
            flips.append(errs[0]["code"] if errs else str(partner))

    outcomes, _ = await asyncio.gather(
        asyncio.gather(*(_write(gql, n) for n in range(60))), switch()
    )
    # Nothing but success or a retryable lock refusal, and every switch took effect.
    assert set(outcomes) <= {"ok", "LOCK_COMPETITION"}
    assert outcomes.count("ok") >= 30
    assert flips == [str(not start_partner), str(start_partner)] * 3

    row, stored, truth, pending = await _state(sessionmaker, tenant.id)
    assert row["partner_account"] is start_partner
    if not row["partner_account"]:
        # An ordinary account's metrics are exact now, with nothing left in the ledger.
        assert pending == 0
        assert stored.values() == truth.values()
    async with sessionmaker.begin() as s:
        await met.refresh_account(s, tenant.id, row["id"])
    row, stored, truth, pending = await _state(sessionmaker, tenant.id)
    assert pending == 0
    assert stored.values() == truth.values()
    assert truth.total_invoice_balance > 0 and truth.unapplied_payment_amount > 0
    assert truth.contracted_mrr > 0


async def test_a_subscription_order_on_a_missing_rate_plan_writes_nothing(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await make_catalog(gql)
    await make_account(gql, "R", partner=True)
    good = create_action()
    bad = {"createSubscription": {"ratePlans": [{"productRatePlanNumber": "NOPE"}]}}
    data = await gql(
        """mutation($input: CreateOrderInput!) { createOrder(input: $input) {
             order { orderNumber } errors { code field } } }""",
        input=order("R", [{"orderActions": [good]}, {"orderActions": [bad]}]),
    )
    assert data["createOrder"] == {
        "order": None,
        "errors": [
            {
                "code": "NOT_FOUND",
                "field": [
                    "subscriptions",
                    "1",
                    "orderActions",
                    "0",
                    "ratePlans",
                    "0",
                    "productRatePlanNumber",
                ],
            }
        ],
    }
    async with sessionmaker() as s:
        counts = (
            await s.execute(
                text(
                    "SELECT (SELECT count(*) FROM sales_order WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM subscription WHERE tenant_id = :t), "
                    "(SELECT count(*) FROM metrics_change WHERE tenant_id = :t)"
                ),
                {"t": tenant.id},
            )
        ).one()
    assert tuple(counts) == (0, 0, 0)

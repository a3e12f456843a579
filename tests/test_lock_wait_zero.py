"""lockWait 0 means do not wait: a held account lock answers LOCK_COMPETITION at once, on
the session writes (bound_lock_waits) and on the one-statement writes (account_for_write)
alike. PostgreSQL reads lock_timeout 0 as "wait forever", so 0 must not reach it as is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from billing import metrics as met
from db.locks import lock_timeout_sql
from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, order

INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) {
    invoice { invoiceNumber } errors { __typename code retryable } } }"""
SETTINGS = """mutation($ms: Int!) {
  updateTenantSettings(input: {lockWait: $ms}) { tenantSettings { lockWait } errors { code } } }"""

# Far longer than "at once", far shorter than forever.
PATIENCE_S = 5.0


ORDER = """mutation($input: CreateOrderInput!) {
  createOrder(input: $input) { order { orderNumber } errors { __typename code retryable } } }"""


async def test_lock_wait_zero_on_a_subscription_order(sessionmaker: Any, tenant: Any) -> None:
    """The one-statement order writer takes the same lock wait."""
    gql = Gql(sessionmaker, tenant.id)
    await make_catalog(gql)
    await make_account(gql, "LWO")
    await gql(SETTINGS, ms=0)
    async with sessionmaker() as s:
        account_id = (
            await s.execute(
                text("SELECT id FROM account WHERE tenant_id = :t AND account_number = 'LWO'"),
                {"t": tenant.id},
            )
        ).scalar_one()
    holder = sessionmaker()
    await holder.begin()
    try:
        await met.MetricsWriter(holder, tenant.id).lock(account_id)
        async with asyncio.timeout(PATIENCE_S):
            data = await gql(ORDER, input=order("LWO", [{"orderActions": [create_action()]}]))
    finally:
        await holder.rollback()
        await holder.close()
    assert data["createOrder"] == {
        "order": None,
        "errors": [
            {"__typename": "LockCompetitionError", "code": "LOCK_COMPETITION", "retryable": True}
        ],
    }


@pytest.mark.parametrize("path", ["one-statement", "session"])
async def test_lock_wait_zero_answers_lock_competition_at_once(
    sessionmaker: Any, tenant: Any, path: str
) -> None:
    gql = Gql(sessionmaker, tenant.id)
    await make_account(gql, "LW0")
    data = await gql(SETTINGS, ms=0)
    assert data["updateTenantSettings"] == {"tenantSettings": {"lockWait": 0}, "errors": []}
    async with sessionmaker() as s:
        account_id = (
            await s.execute(
                text("SELECT id FROM account WHERE tenant_id = :t AND account_number = 'LW0'"),
                {"t": tenant.id},
            )
        ).scalar_one()
    holder = sessionmaker()
    await holder.begin()
    try:
        # What an ordinary write holds (the account's metrics lock) and what the partner
        # switch holds (the account row FOR UPDATE): every write on the account waits.
        await met.MetricsWriter(holder, tenant.id).lock(account_id)
        await holder.execute(
            text("SELECT 1 FROM account WHERE id = :a FOR UPDATE"), {"a": account_id}
        )
        invoice: dict[str, Any] = {
            "accountNumber": "LW0",
            "invoiceDate": "2026-11-01",
            "status": "POSTED",
            "items": [{"chargeName": "Seat", "amount": "1.00"}],
        }
        if path == "session":  # a keyed create runs in a session transaction
            invoice["idempotencyKey"] = "lock-wait-zero"
        async with asyncio.timeout(PATIENCE_S):
            data = await gql(INVOICE, input=invoice)
    finally:
        await holder.rollback()
        await holder.close()
    assert data["createStandaloneInvoice"] == {
        "invoice": None,
        "errors": [
            {"__typename": "LockCompetitionError", "code": "LOCK_COMPETITION", "retryable": True}
        ],
    }
    async with sessionmaker() as s:
        count = (
            await s.execute(text("SELECT count(*) FROM invoice WHERE account_id = :a"),
                            {"a": account_id})
        ).scalar_one()  # fmt: skip
    assert count == 0


@pytest.mark.parametrize(("ms", "setting"), [(0, "1ms"), (1, "1ms"), (2000, "2000ms")])
async def test_the_lock_timeout_setting_of_a_lock_wait(
    sessionmaker: Any, ms: int, setting: str
) -> None:
    async with sessionmaker() as s:
        value = (
            await s.execute(text(f"SELECT {lock_timeout_sql(':ms')}"), {"ms": ms})
        ).scalar_one()
    assert value == setting


async def test_lock_wait_bounds_the_account_not_the_writes_after_it(
    sessionmaker: Any, tenant: Any
) -> None:
    """With lockWait 0 a partner account's invoice still waits for what its INSERT meets
    after the account is locked: here another transaction writing the same invoice number,
    which rolls back. The lock wait is for contention on the account (db.locks
    .lock_waits_end_cte); before, this write answered LOCK_COMPETITION."""
    gql = Gql(sessionmaker, tenant.id)
    await make_account(gql, "LWP", partner=True)
    await gql(SETTINGS, ms=0)
    holder = sessionmaker()
    await holder.begin()
    try:
        await holder.execute(
            text(
                "INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, "
                "invoice_date, due_date, status, amount, balance, source) "
                "SELECT tenant_id, 'INV-SAME', id, currency, DATE '2026-11-01', "
                "DATE '2026-11-01', 'DRAFT', 0, 0, 'STANDALONE' FROM account "
                "WHERE tenant_id = :t AND account_number = 'LWP'"
            ),
            {"t": tenant.id},
        )
        write = asyncio.create_task(
            gql(
                INVOICE,
                input={
                    "accountNumber": "LWP",
                    "invoiceNumber": "INV-SAME",
                    "invoiceDate": "2026-11-02",
                    "items": [{"chargeName": "Seat", "quantity": "1", "unitPrice": "10.00"}],
                },
            )
        )
        await asyncio.sleep(0.3)  # far past the 1 ms the lock wait allows
        assert not write.done()
    finally:
        await holder.rollback()
        await holder.close()
    async with asyncio.timeout(PATIENCE_S):
        data = await write
    assert data["createStandaloneInvoice"] == {
        "invoice": {"invoiceNumber": "INV-SAME"},
        "errors": [],
    }

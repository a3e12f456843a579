"""The README's GraphiQL walkthrough, run block by block, so it stays true; its subscription
blocks need a websocket (tests/server/test_subscriptions.py), so they are validated only."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from billing import metrics as met
from tests.billrun_worker import arq_pool, drain
from tests.helpers import Gql

README = Path(__file__).resolve().parent.parent / "README.md"


def all_blocks() -> list[str]:
    return re.findall(r"```graphql\n(.*?)```", README.read_text(), re.S)


def blocks() -> list[str]:
    """The queries and mutations, in order."""
    return [b for b in all_blocks() if not b.lstrip().startswith("subscription")]


def test_subscription_blocks_are_valid() -> None:
    from graphql import parse, validate

    from schema.root import schema

    subscriptions = [b for b in all_blocks() if b.lstrip().startswith("subscription")]
    assert len(subscriptions) == 2
    for block in subscriptions:
        assert validate(schema._schema, parse(block)) == []


def no_errors(data: Any) -> None:
    for value in data.values():
        if isinstance(value, dict) and "errors" in value:
            assert value["errors"] == [], value


async def test_walkthrough(
    database_url: str, redis_url: str, sessionmaker: Any, tenant: Any
) -> None:
    pool = await arq_pool(redis_url)
    try:
        gql = Gql(sessionmaker, tenant.id, redis=pool)
        steps = blocks()
        assert len(steps) == 8
        created = await gql(steps[0])
        no_errors(created)
        stamp = created["reseller"]["account"]["lastMetricsUpdate"]
        for step in steps[1:4]:
            no_errors(await gql(step))
        before = await gql(steps[4])
        assert before["account"] == {
            "lastMetricsUpdate": stamp,
            "metrics": {"balance": "0.00", "totalInvoiceBalance": "0.00",
                        "unappliedPaymentAmount": "0.00", "lastInvoiceDate": None},
        }  # fmt: skip
        refreshed = await gql(steps[5])
        no_errors(refreshed)
        assert refreshed["reseller"]["account"]["metrics"] == {
            "balance": "40.00", "totalInvoiceBalance": "60.00",
            "unappliedPaymentAmount": "20.00", "lastInvoiceDate": "2026-10-31",
        }  # fmt: skip
        assert refreshed["reseller"]["account"]["lastMetricsUpdate"] > stamp
        assert Decimal(refreshed["customer"]["account"]["metrics"]["contractedMrr"]) == 50
        run = await gql(steps[6])
        no_errors(run)
        await drain(database_url, redis_url)
        number = run["createBillRun"]["billRun"]["billRunNumber"]
        status = await gql("query($n: String!) { billRun(billRunNumber: $n) { status } }", n=number)
        assert status == {"billRun": {"status": "POSTED"}}
        invoices = (await gql(steps[7]))["account"]["invoices"]
        assert invoices["totalCount"] == 2
        assert sorted(e["node"]["amount"] for e in invoices["edges"]) == ["100.00", "50.00"]
        async with sessionmaker.begin() as s:
            rid = (
                await s.execute(
                    text(
                        "SELECT id FROM account "
                        "WHERE tenant_id = :t AND account_number = 'RESELLER'"
                    ),
                    {"t": tenant.id},
                )
            ).scalar_one()
            await met.refresh_account(s, tenant.id, rid)
        async with sessionmaker() as s:
            m = await met.stored_metrics(s, rid)
            assert m.total_invoice_balance == Decimal("110")
            assert m.values() == (await met.recompute(s, rid)).values()
    finally:
        await pool.aclose()

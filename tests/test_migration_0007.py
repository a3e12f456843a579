"""Migration 0007: the tables every write inserts into keep no foreign key to tenant (each
insert locked the tenant's one row); account keeps its own, and a downgrade restores them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from db.migrate import upgrade_async
from tests.test_migration_0004 import downgrade, scratch_url

__all__ = ["scratch_url"]  # the fixture, used by name

TENANT_FKS = """
SELECT c.conrelid::regclass::text FROM pg_constraint c
WHERE c.contype = 'f' AND c.confrelid = 'tenant'::regclass ORDER BY 1
"""
HOT = {
    "invoice",
    "invoice_item",
    "payment",
    "metrics_change",
    "sales_order",
    "order_action",
    "subscription",
    "subscription_rate_plan",
    "subscription_charge",
}


async def tables_referencing_tenant(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return {r[0] for r in await conn.execute(text(TENANT_FKS))}
    finally:
        await engine.dispose()


async def test_hot_tables_lose_their_tenant_foreign_key(scratch_url: str) -> None:
    await upgrade_async(scratch_url, "0006")
    before = await tables_referencing_tenant(scratch_url)
    assert HOT <= before and "account" in before
    await upgrade_async(scratch_url, "0007")
    after = await tables_referencing_tenant(scratch_url)
    assert after == before - HOT
    assert "account" in after
    await downgrade(scratch_url, "0006")
    assert await tables_referencing_tenant(scratch_url) == before


def test_the_models_say_the_same() -> None:
    from db.models import SQLModel

    without = {
        t.name
        for t in SQLModel.metadata.tables.values()
        if "tenant_id" in t.c and not any(fk.column.table.name == "tenant" for fk in t.foreign_keys)
    }
    assert without == HOT

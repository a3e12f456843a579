"""Migration 0004 on a database of the earlier version: runs left POSTED or CANCELED with
drafts (a post or cancel interrupted between chunks) become COMPLETED with the marker of
the operation under way, and a downgrade gives them their earlier status back."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from db.engine import async_url
from db.migrate import alembic_config, upgrade_async


@pytest.fixture
async def scratch_url(_servers: dict[str, str]) -> AsyncIterator[str]:
    """An empty database of its own (the session's one is already at head)."""
    server_url = make_url(async_url(_servers["database"]))
    name = f"partnerbill_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def downgrade(url: str, revision: str) -> None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:

            def go(sync_conn: Any) -> None:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_conn
                command.downgrade(cfg, revision)

            await conn.run_sync(go)
    finally:
        await engine.dispose()


async def test_interrupted_posts_and_cancels_get_their_marker(scratch_url: str) -> None:
    await upgrade_async(scratch_url, "0003")
    engine = create_async_engine(scratch_url)
    # Run 1 POSTED with a draft left, 2 POSTED and done, 3 CANCELED with a draft left,
    # 4 COMPLETED (waiting for postBillRun).
    runs = {1: "POSTED", 2: "POSTED", 3: "CANCELED", 4: "COMPLETED"}
    invoices = [(1, "DRAFT"), (1, "POSTED"), (2, "POSTED"), (3, "DRAFT"), (3, "CANCELED"),
                (4, "DRAFT")]  # fmt: skip
    try:
        async with engine.begin() as c:
            await c.execute(text("INSERT INTO tenant (id, name) VALUES (1, 'mig')"))
            await c.execute(
                text(
                    "INSERT INTO account (id, tenant_id, account_number, name, currency, "
                    "bill_cycle_day, bill_to, sold_to) VALUES (1, 1, 'A1', 'A1', 'USD', 1, "
                    "'{}', '{}')"
                )
            )
            for run_id, status in runs.items():
                await c.execute(
                    text(
                        "INSERT INTO bill_run (id, tenant_id, bill_run_number, target_date, "
                        "invoice_date, auto_post, status, accounts_total, accounts_processed, "
                        "invoices_generated) VALUES (:i, 1, :n, '2026-03-01', '2026-03-01', "
                        "false, :s, 1, 1, 1)"
                    ),
                    {"i": run_id, "n": f"BR{run_id}", "s": status},
                )
            for n, (run_id, status) in enumerate(invoices):
                await c.execute(
                    text(
                        "INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, "
                        "invoice_date, due_date, status, bill_run_id) VALUES (1, :n, 1, 'USD', "
                        "'2026-03-01', '2026-03-01', :s, :r)"
                    ),
                    {"n": f"INV{n}", "s": status, "r": run_id},
                )
        await upgrade_async(scratch_url, "0004")
        async with engine.connect() as c:
            rows = await c.execute(
                text(
                    "SELECT id, status, posting, posting_started_at IS NOT NULL FROM bill_run "
                    "ORDER BY id"
                )
            )
            assert [tuple(r) for r in rows] == [
                (1, "COMPLETED", "POST", True),
                (2, "POSTED", None, False),
                (3, "COMPLETED", "CANCEL", True),
                (4, "COMPLETED", None, False),
            ]
        await downgrade(scratch_url, "0003")
        async with engine.connect() as c:
            rows = await c.execute(text("SELECT id, status FROM bill_run ORDER BY id"))
            assert dict(tuple(r) for r in rows) == runs
    finally:
        await engine.dispose()

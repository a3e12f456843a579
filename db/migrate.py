"""Apply the Alembic migrations programmatically (the only way the schema is made)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from db.engine import async_url

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    """Alembic config pointing at this package's migrations and the given database."""
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    cfg.attributes["url"] = async_url(url)
    return cfg


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (usable inside a running loop)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            # One migrator at a time, even if several processes start together.
            from sqlalchemy import text

            from db.locks import NS_MIGRATIONS

            await conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 1)"), {"ns": NS_MIGRATIONS})

            def _go(sync_conn) -> None:  # type: ignore[no-untyped-def]
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(_go)
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``."""
    asyncio.run(upgrade_async(url, revision))

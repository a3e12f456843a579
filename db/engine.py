"""Engine and session factories (SQLAlchemy asyncio on asyncpg)."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.pg import server_settings

Sessionmaker = async_sessionmaker[AsyncSession]


def async_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the asyncpg driver."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 20, max_overflow: int = 20, statement_cache: int = 100
) -> AsyncEngine:
    """An asyncpg engine; statement cache on (0: off, for PgBouncer without prepared
    statement support), JIT off (short OLTP statements)."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        connect_args={
            "server_settings": server_settings(),
            "prepared_statement_cache_size": statement_cache,
            "statement_cache_size": statement_cache,
        },
    )


def create_sessionmaker(engine: AsyncEngine) -> Sessionmaker:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)

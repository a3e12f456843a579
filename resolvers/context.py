"""The per-request GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billing.bulk import MAX_BULK_ROWS
from billing.orders.facts import OrderFacts
from db.engine import Sessionmaker


@dataclass
class Services:
    """Long-lived handles the composition root builds once."""

    sessionmaker: Sessionmaker
    pg: Any = (
        None  # asyncpg.Pool for the one-statement writes (db.pg); None: borrow from SQLAlchemy
    )
    redis: Any = None  # arq.connections.ArqRedis, or None when no Redis is configured
    events: Any = None  # jobs.events.EventHub: publishes after commits, feeds subscriptions
    # Rows one bulk mutation may carry (PARTNERBILL_MAX_BULK_ROWS).
    max_bulk_rows: int = MAX_BULK_ROWS
    # The accounts and rate plans this process's subscription-only orders have read.
    order_facts: OrderFacts = field(default_factory=OrderFacts)


@dataclass
class Context:
    """What every resolver sees: the caller's tenant and the services."""

    tenant_id: int
    services: Services
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] | None = None
    loaders: dict[str, Any] = field(default_factory=dict)

    @property
    def sessionmaker(self) -> Sessionmaker:
        return self.services.sessionmaker

    @property
    def fetch(self) -> Any:
        """Per-request DataLoaders for nested fields (resolvers.fetch.Fetcher)."""
        fetcher = self.loaders.get("fetch")
        if fetcher is None:
            from resolvers.fetch import Fetcher

            fetcher = self.loaders["fetch"] = Fetcher(self)
        return fetcher

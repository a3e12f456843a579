"""Shared test helpers: run GraphQL against the real schema with a tenant's context."""

from __future__ import annotations

from typing import Any

from resolvers.context import Context, Services
from schema.root import schema


class Gql:
    """Executes operations as one tenant, like the HTTP view does."""

    def __init__(self, sessionmaker: Any, tenant_id: int, redis: Any = None) -> None:
        self.services = Services(sessionmaker=sessionmaker, redis=redis)
        self.tenant_id = tenant_id

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        ctx = Context(tenant_id=self.tenant_id, services=self.services)
        res = await schema.execute(query, variable_values=variables, context_value=ctx)
        if res.errors:
            raise AssertionError(f"GraphQL errors: {res.errors}")
        assert res.data is not None
        return res.data

    async def raw(self, query: str, **variables: Any) -> Any:
        ctx = Context(tenant_id=self.tenant_id, services=self.services)
        return await schema.execute(query, variable_values=variables, context_value=ctx)

"""A small schema for testing the HTTP layer independently of the product schema."""

from __future__ import annotations

import asyncio

import strawberry
from strawberry.extensions import MaskErrors
from strawberry.types import Info

from resolvers.context import Context

EVENTS: list[str] = []
GATE: dict[str, asyncio.Event] = {}


@strawberry.type
class Query:
    @strawberry.field
    def tenant_id(self, info: Info[Context, None]) -> int:
        return info.context.tenant_id

    @strawberry.field
    def context_id(self, info: Info[Context, None]) -> str:
        return str(id(info.context))

    @strawberry.field
    def boom(self) -> int:
        raise RuntimeError("SELECT secret FROM internals")


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def record(self, info: Info[Context, None], tag: str, delay: float) -> str:
        EVENTS.append(f"{tag}:start")
        await asyncio.sleep(delay)
        EVENTS.append(f"{tag}:end")
        return str(id(info.context))

    @strawberry.mutation
    async def hold(self, gate: str) -> str:
        """Waits until the test opens GATE[gate]."""
        await GATE.setdefault(gate, asyncio.Event()).wait()
        return gate


def _should_mask(error: Exception) -> bool:
    return getattr(error, "original_error", None) is not None


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    extensions=[lambda: MaskErrors(should_mask_error=_should_mask)],
)

"""Composes Query, Mutation and Subscription into the Schema (filled in by each slice)."""

from __future__ import annotations

import strawberry


@strawberry.type(description="Read operations.")
class Query:
    @strawberry.field(description="Always true; proves the endpoint answers.")
    def ping(self) -> bool:
        return True


schema = strawberry.Schema(query=Query)

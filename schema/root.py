"""Composes Query and Mutation from the resolver groups and builds the Schema.

Each slice adds its query and mutation classes to QUERIES / MUTATIONS.
"""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.tools import merge_types

from resolvers.accounts import AccountMutations, AccountQueries
from resolvers.catalog import CatalogMutations, CatalogQueries
from resolvers.documents import DocumentMutations, DocumentQueries
from resolvers.memos import MemoMutations, MemoQueries
from resolvers.orders import OrderMutations, OrderQueries
from schema.errors import ERROR_TYPES

QUERIES: tuple[type, ...] = (
    AccountQueries, DocumentQueries, MemoQueries, CatalogQueries, OrderQueries,
)  # fmt: skip
MUTATIONS: tuple[type, ...] = (
    AccountMutations, DocumentMutations, MemoMutations, CatalogMutations, OrderMutations,
)  # fmt: skip

from resolvers.billruns import BillRunMutations, BillRunQueries  # noqa: E402

QUERIES += (BillRunQueries,)
MUTATIONS += (BillRunMutations,)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)


def _should_mask(error: Exception) -> bool:
    """Mask unexpected errors; GraphQL syntax/validation errors stay readable."""
    from graphql import GraphQLError

    original = getattr(error, "original_error", None)
    return isinstance(error, GraphQLError) and original is not None


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    types=list(ERROR_TYPES.values()),
    extensions=[
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        lambda: MaskErrors(should_mask_error=_should_mask),
    ],
)

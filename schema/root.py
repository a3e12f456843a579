"""Composes Query, Mutation and Subscription from the resolver groups and builds the Schema.

Each slice adds its query, mutation and subscription classes to QUERIES / MUTATIONS /
SUBSCRIPTIONS.
"""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaskErrors, ParserCache, ValidationCache
from strawberry.tools import merge_types

from resolvers.accounts import AccountMutations, AccountQueries, AccountSubscriptions
from resolvers.catalog import CatalogMutations, CatalogQueries
from resolvers.documents import DocumentMutations, DocumentQueries
from resolvers.memos import MemoMutations, MemoQueries
from resolvers.orders import OrderMutations, OrderQueries
from schema.errors import ERROR_TYPES, TopLevelUserError

QUERIES: tuple[type, ...] = (
    AccountQueries, DocumentQueries, MemoQueries, CatalogQueries, OrderQueries,
)  # fmt: skip
MUTATIONS: tuple[type, ...] = (
    AccountMutations, DocumentMutations, MemoMutations, CatalogMutations, OrderMutations,
)  # fmt: skip

SUBSCRIPTIONS: tuple[type, ...] = (AccountSubscriptions,)

from resolvers.billruns import (  # noqa: E402
    BillRunMutations,
    BillRunQueries,
    BillRunSubscriptions,
)

QUERIES += (BillRunQueries,)
MUTATIONS += (BillRunMutations,)
SUBSCRIPTIONS += (BillRunSubscriptions,)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
# "Subscription" is the billing object (schema.orders): the root of push events takes
# another name, which only the schema definition mentions.
SubscriptionRoot = merge_types("SubscriptionRoot", SUBSCRIPTIONS)


def _should_mask(error: Exception) -> bool:
    """Mask unexpected errors; GraphQL syntax/validation errors and the expected failures
    of fields without a payload (TopLevelUserError) stay readable."""
    from graphql import GraphQLError

    original = getattr(error, "original_error", None)
    if isinstance(original, TopLevelUserError):
        return False
    return isinstance(error, GraphQLError) and original is not None


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=SubscriptionRoot,
    types=list(ERROR_TYPES.values()),
    extensions=[
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        lambda: MaskErrors(should_mask_error=_should_mask),
    ],
)

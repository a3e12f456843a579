"""Composes Query, Mutation and Subscription from the resolver groups and builds the Schema.

Each slice adds its query, mutation and subscription classes to QUERIES / MUTATIONS /
SUBSCRIPTIONS.
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from resolvers.accounts import AccountMutations, AccountQueries, AccountSubscriptions
from resolvers.catalog import CatalogMutations, CatalogQueries
from resolvers.documents import DocumentMutations, DocumentQueries
from resolvers.errors import log_errors
from resolvers.memos import MemoMutations, MemoQueries
from resolvers.orders import OrderMutations, OrderQueries
from resolvers.pages import DEFAULT_PAGE
from resolvers.reconcile import ReconcileQueries
from schema import inputs
from schema.errors import ERROR_TYPES
from schema.limits import QueryLimits
from schema.pipeline import DocumentCache, Executor, RequestPolicy
from schema.scalars import SCALAR_OVERRIDES

QUERIES: tuple[type, ...] = (
    AccountQueries, DocumentQueries, MemoQueries, CatalogQueries, OrderQueries,
    ReconcileQueries,
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
from resolvers.bulk import BulkMutations  # noqa: E402
from resolvers.events import EventMutations, EventQueries  # noqa: E402
from resolvers.webhooks import WebhookMutations, WebhookQueries  # noqa: E402

QUERIES += (BillRunQueries, EventQueries, WebhookQueries)
MUTATIONS += (BillRunMutations, BulkMutations, WebhookMutations, EventMutations)
SUBSCRIPTIONS += (BillRunSubscriptions,)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
# "Subscription" is the billing object (schema.orders): the root of push events takes
# another name, which only the schema definition mentions.
SubscriptionRoot = merge_types("SubscriptionRoot", SUBSCRIPTIONS)


class PartnerbillSchema(strawberry.Schema):
    """The schema, logging unexpected errors at ERROR and the client's mistakes at INFO."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


def build_schema(limits: QueryLimits | None = None) -> PartnerbillSchema:
    """The schema with the request limits of ``limits`` (the defaults when None); its input
    objects are built by compiled converters (schema.inputs)."""
    limits = limits or QueryLimits(default_page=DEFAULT_PAGE)
    documents = DocumentCache(maxsize=1024)
    built = PartnerbillSchema(
        query=Query,
        mutation=Mutation,
        subscription=SubscriptionRoot,
        types=list(ERROR_TYPES.values()),
        scalar_overrides=SCALAR_OVERRIDES,
        # One extension, made per request: limits, caches and the error policy.
        extensions=[lambda: RequestPolicy(limits, documents)],
        execution_context_class=Executor,
    )
    inputs.install(built._schema, built.config.name_converter.from_field)
    return built


schema = build_schema()

"""Root fields of orders, subscriptions and asynchronous order jobs."""

from __future__ import annotations

import uuid
from typing import Any

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billing import idempotency
from billing import orders as ords
from billing import subscriptions as subs
from billing.bulk import located
from billing.dbutil import translate
from billing.errors import BillingError, LimitExceeded, ValidationFailed
from resolvers import convert_orders as co
from resolvers.base import announce, idempotent, in_transaction, one_statement, read
from resolvers.errors import to_user_error
from resolvers.queue import enqueue_committed
from schema.common import ErrorPolicy
from schema.orders import (
    BulkOrderPayload,
    BulkOrderResult,
    CreateOrderInput,
    CreateOrdersInput,
    CreateSubscriptionInput,
    Job,
    JobPayload,
    Order,
    OrderPayload,
    Subscription,
)

MAX_BULK_ORDERS = 500


def selects(info: strawberry.Info, name: str) -> bool:
    """Whether the operation selects ``name`` on the field's result (fragments included).

    Walks graphql-core's nodes: Strawberry's ``info.selected_fields`` would first build its
    own tree of the whole selection, on every order."""
    raw = info._raw_info
    return any(_selects(node.selection_set, name, raw.fragments) for node in raw.field_nodes)


def _selects(
    selection_set: SelectionSetNode | None, name: str, fragments: dict[str, FragmentDefinitionNode]
) -> bool:
    # A function of the module, not a recursive closure in selects: a closure that calls
    # itself is a reference cycle, left to the garbage collector on every order.
    if selection_set is None:
        return False
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            if sel.name.value == name:
                return True
        elif isinstance(sel, InlineFragmentNode):
            if _selects(sel.selection_set, name, fragments):
                return True
        elif isinstance(sel, FragmentSpreadNode):
            fragment = fragments.get(sel.name.value)
            if fragment is not None and _selects(fragment.selection_set, name, fragments):
                return True
    return False


async def order_out(
    s: AsyncSession, tenant_id: int, order_id: int, with_subscriptions: bool = True
) -> tuple[Order, list[Subscription]]:
    """The order and (when asked for) the subscriptions it touched, as GraphQL objects."""
    row = await ords.get_order(s, tenant_id, order_id=order_id)
    assert row is not None
    actions = (await ords.order_actions(s, [order_id]))[order_id]
    if not with_subscriptions:
        return co.order(row, actions), []
    ids: list[int] = []
    for a in actions:
        if a["subscription_id"] not in ids:
            ids.append(a["subscription_id"])
    rows = {r["id"]: r for r in await subs.subscriptions_by_ids(s, tenant_id, ids)}
    trees = await subs.subscription_trees(s, [rows[i] for i in ids])
    return co.order(row, actions), [co.subscription(t) for t in trees]


async def keyed_order(
    s: AsyncSession, tenant_id: int, data: dict[str, Any], key: str | None
) -> int:
    """One order of createOrders under its idempotency key, the key createOrder takes: a
    repeat with the same key and input answers the order written first and writes nothing."""
    if key is None:
        return await ords.create_order(s, tenant_id, ords.decode_order(data))
    stored = await idempotency.claim(s, tenant_id, key, "createOrder", data)
    if stored is not None:
        return int(stored["id"])
    order_id = await ords.create_order(s, tenant_id, ords.decode_order(data))
    await idempotency.store(s, tenant_id, key, {"id": order_id})
    return order_id


async def run_order(
    ctx: Any,
    data: dict[str, Any],
    order: ords.OrderInput | BillingError,
    key: str | None,
    operation: str,
    with_subscriptions: bool = True,
) -> OrderPayload:
    """An order action by action, in one transaction; ``data`` (its plain form) is what the
    idempotency key holds, ``order`` the same decoded, or why it could not be. A bad order
    is refused after the key is checked, as though billing had found it."""

    async def work(s: AsyncSession) -> Any:
        if isinstance(order, BillingError):
            raise order
        order_id = await ords.create_order(s, ctx.tenant_id, order)
        return await order_out(s, ctx.tenant_id, order_id, with_subscriptions)

    async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
        return await order_out(s, ctx.tenant_id, stored["id"], with_subscriptions)

    def remember(r: Any) -> dict[str, Any]:
        return {"id": r[0].db_id}

    out, errors = await idempotent(ctx, key, operation, data, work, remember, replay)
    if out is None:
        return OrderPayload(order=None, subscriptions=[], errors=errors)
    return OrderPayload(order=out[0], subscriptions=out[1], errors=[])


async def subscription_only_order(
    ctx: Any, order: ords.OrderInput, with_subscriptions: bool
) -> OrderPayload:
    """An order that only creates subscriptions: one statement, nothing read back but the
    subscriptions when the operation selects them."""
    done, errors = await one_statement(
        ctx,
        lambda db: ords.create_subscription_order(
            db, ctx.tenant_id, order, ctx.services.order_facts
        ),
    )
    if done is None:
        return OrderPayload(order=None, subscriptions=[], errors=errors)
    created: ords.CreatedOrder = done.row
    subscriptions: list[Subscription] = []
    if with_subscriptions:

        async def go(s: AsyncSession) -> list[Subscription]:
            rows = await subs.subscriptions_by_numbers(
                s, ctx.tenant_id, created.subscription_numbers
            )
            return [co.subscription(t) for t in await subs.subscription_trees(s, rows)]

        subscriptions = await read(ctx, go)
    return OrderPayload(order=co.created_order(created), subscriptions=subscriptions, errors=[])


async def place_order(
    ctx: Any, data: dict[str, Any], key: str | None, operation: str, with_subscriptions: bool
) -> OrderPayload:
    """An order, decoded once; the one-statement way when it only creates subscriptions."""
    try:
        order: ords.OrderInput | BillingError = ords.decode_order(data)
    except BillingError as exc:
        order = exc
    if not key and not isinstance(order, BillingError) and ords.takes(order):
        return await subscription_only_order(ctx, order, with_subscriptions)
    return await run_order(ctx, data, order, key, operation, with_subscriptions)


def subscription_order(i: CreateSubscriptionInput) -> dict[str, Any]:
    """createSubscription as a one-action order."""
    d = co.plain(i)
    effective = d.pop("contract_effective_date", None) or d.get("order_date")
    action = {
        "create_subscription": {
            k: d.get(k)
            for k in (
                "subscription_number",
                "subscription_owner_account_number",
                "invoice_owner_account_number",
                "terms",
                "invoice_separately",
                "rate_plans",
            )
        }
    }
    action["create_subscription"]["effective_date"] = effective
    return {
        "order_number": d.get("order_number"),
        "order_date": d.get("order_date") or effective,
        "existing_account_number": d["account_number"],
        "subscriptions": [{"order_actions": [action]}],
        "processing_options": d.get("processing_options"),
    }


@strawberry.type
class OrderQueries:
    @strawberry.field(description="One subscription by its number.")
    async def subscription(
        self, info: strawberry.Info, subscription_number: str
    ) -> Subscription | None:
        async def go(s: AsyncSession) -> Subscription | None:
            row = await subs.find_subscription(s, info.context.tenant_id, subscription_number)
            if row is None:
                return None
            return co.subscription((await subs.subscription_trees(s, [row]))[0])

        return await read(info.context, go)

    @strawberry.field(description="One order by its number.")
    async def order(self, info: strawberry.Info, order_number: str) -> Order | None:
        async def go(s: AsyncSession) -> Order | None:
            row = await ords.get_order(s, info.context.tenant_id, number=order_number)
            if row is None:
                return None
            return co.order(row, (await ords.order_actions(s, [row["id"]]))[row["id"]])

        return await read(info.context, go)

    @strawberry.field(description="An asynchronous job by its id.")
    async def job(self, info: strawberry.Info, id: strawberry.ID) -> Job | None:
        row = await read(info.context, lambda s: ords.get_job(s, info.context.tenant_id, str(id)))
        return co.job(row) if row is not None else None


@strawberry.type
class OrderMutations:
    @strawberry.mutation(description="Apply an order: its actions in order, all-or-nothing.")
    async def create_order(self, info: strawberry.Info, input: CreateOrderInput) -> OrderPayload:
        data = co.plain(input)
        key = data.pop("idempotency_key", None)
        return await place_order(
            info.context, data, key, "createOrder", selects(info, "subscriptions")
        )

    @strawberry.mutation(description="Shorthand: one order with one CreateSubscription.")
    async def create_subscription(
        self, info: strawberry.Info, input: CreateSubscriptionInput
    ) -> OrderPayload:
        return await place_order(
            info.context,
            subscription_order(input),
            input.idempotency_key,
            "createSubscription",
            selects(info, "subscriptions"),
        )

    @strawberry.mutation(description="Queue an order; poll job(id) for its outcome.")
    async def create_order_async(
        self, info: strawberry.Info, input: CreateOrderInput
    ) -> JobPayload:
        from jobs.enqueue import enqueue_create_order

        ctx = info.context
        data = co.plain(input)
        key = data.pop("idempotency_key", None)
        if ctx.services.redis is None:
            err = to_user_error(
                ValidationFailed("Asynchronous orders need a job queue, none is configured")
            )
            return JobPayload(job=None, errors=[err])
        job_id = ords.order_job_id(ctx.tenant_id, key, uuid.uuid4().hex)
        out, errors = await in_transaction(
            ctx, lambda s: ords.create_order_job(s, ctx.tenant_id, job_id, data)
        )
        if out is None:
            return JobPayload(job=None, errors=errors)
        row, _created = out
        errors = []
        if row["status"] == "QUEUED":
            # After the commit; the deterministic arq id makes a repeat a no-op.
            errors = await enqueue_committed(
                "job",
                job_id,
                lambda: enqueue_create_order(ctx.services.redis, job_id, row["created_at"]),
            )
        return JobPayload(job=co.job(row), errors=errors)

    @strawberry.mutation(
        description="Many orders at once; errorPolicy says whether one failure rejects all."
    )
    async def create_orders(
        self, info: strawberry.Info, input: CreateOrdersInput
    ) -> BulkOrderPayload:
        ctx = info.context
        if len(input.orders) > MAX_BULK_ORDERS:
            err = to_user_error(
                LimitExceeded(f"At most {MAX_BULK_ORDERS} orders per request", ["orders"])
            )
            return BulkOrderPayload(count=0, results=[BulkOrderResult(order=None, errors=[err])])
        items = [co.plain(o) for o in input.orders]
        keys = [d.pop("idempotency_key", None) for d in items]
        everything = input.error_policy == ErrorPolicy.REJECT_EVERYTHING
        results: list[BulkOrderResult] = []

        class Rejected(Exception):
            pass

        try:
            async with ctx.sessionmaker() as s:
                async with s.begin():
                    failed = False
                    for n, (d, key) in enumerate(zip(items, keys, strict=True)):
                        try:
                            async with s.begin_nested():
                                try:
                                    order_id = await keyed_order(s, ctx.tenant_id, d, key)
                                except DBAPIError as exc:
                                    mapped = translate(exc)
                                    if mapped is exc:
                                        raise
                                    raise mapped from exc
                            order, _ = await order_out(
                                s, ctx.tenant_id, order_id, with_subscriptions=False
                            )
                            results.append(BulkOrderResult(order=order, errors=[]))
                        except BillingError as exc:
                            failed = True
                            err = to_user_error(located(exc, ["orders", str(n)]))
                            results.append(BulkOrderResult(order=None, errors=[err]))
                    if failed and everything:
                        raise Rejected
                await announce(ctx, s)
        except Rejected:
            results = [BulkOrderResult(order=None, errors=r.errors) for r in results]
        return BulkOrderPayload(
            count=sum(1 for r in results if r.order is not None), results=results
        )

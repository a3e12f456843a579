"""Orders: ordered actions on subscriptions, all-or-nothing, moving contractedMrr.

Locks are taken in one fixed order so concurrent orders never deadlock: the subscription
rows the order changes (ascending id, FOR UPDATE), then every account whose contractedMrr
may move through one ``MetricsWriter.lock`` call (ascending id).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts, numbering
from billing.dbutil import db_errors
from billing.errors import Duplicate, NotFound, ValidationFailed
from billing.metrics import MetricsWriter
from billing.orders.actions import OrderRun, apply, create_subscription, create_subscriptions
from billing.orders.data import (
    ACTION_TYPES,
    Action,
    account_data,
    jsonable,
    parse_date,
    parse_groups,
)
from billing.rating import bill_order_subscriptions
from billing.subscriptions import S, contribution
from db.locks import bound_lock_waits, unbound_lock_waits
from db.models import Order, OrderAction, table_of

SO = table_of(Order)
OA = table_of(OrderAction)


async def create_order(session: AsyncSession, tenant_id: int, data: dict[str, Any]) -> int:
    """Run an order: every action in the order given, all-or-nothing; contractedMrr of every
    subscription owner moves through the MetricsWriter. Returns the order id."""
    order_date = parse_date(data.get("order_date"), ["orderDate"])
    if order_date is None:
        raise ValidationFailed("orderDate is required", ["orderDate"])
    existing, new = data.get("existing_account_number"), data.get("new_account")
    if (existing is None) == (new is None):
        raise ValidationFailed(
            "Give exactly one of existingAccountNumber and newAccount", ["existingAccountNumber"]
        )
    options = data.get("processing_options") or {}
    groups = parse_groups(data, order_date)

    if existing is not None:
        order_account = await accounts.get_account(
            session, tenant_id, existing, field="existingAccountNumber"
        )
    else:
        order_account = await accounts.create_account(session, tenant_id, account_data(new or {}))
    run = OrderRun(session, tenant_id, order_account)

    order_number = data.get("order_number")
    if order_number is not None:
        order_number = order_number.strip()
        if not order_number or len(order_number) > 64:
            raise ValidationFailed("orderNumber must be 1-64 characters", ["orderNumber"])
        found = await session.execute(
            select(SO.c.id).where(SO.c.tenant_id == tenant_id, SO.c.order_number == order_number)
        )
        if found.first() is not None:
            raise Duplicate(f"Order number {order_number} is already used", ["orderNumber"])
    else:
        order_number = await numbering.next_number(session, tenant_id, "order")

    async with db_errors():
        await bound_lock_waits(session, tenant_id)
        # Existing subscriptions: row locks first, in id order.
        wanted = [
            g.subscription_number for g in groups if g.actions[0].kind != "create_subscription"
        ]
        if wanted:
            res = await session.execute(
                select(S)
                .where(S.c.tenant_id == tenant_id, S.c.subscription_number.in_(wanted))
                .order_by(S.c.id)
                .with_for_update()
            )
            subs = {r["subscription_number"]: dict(r) for r in res.mappings()}
            for g in groups:
                if g.actions[0].kind != "create_subscription":
                    if g.subscription_number not in subs:
                        raise NotFound(
                            f"Subscription {g.subscription_number} not found",
                            [*g.path, "subscriptionNumber"],
                        )
                    g.sub = subs[g.subscription_number]
        await unbound_lock_waits(session)

    # Every account whose contractedMrr may move, resolved before anything is written.
    to_lock: set[int] = set()
    for g in groups:
        if g.sub is not None:
            to_lock.add(g.sub["owner_account_id"])
        for a in g.actions:
            if a.kind == "create_subscription":
                owner = a.body.get("subscription_owner_account_number")
                to_lock.add(
                    (await run.account(owner, [*a.path, "subscriptionOwnerAccountNumber"]))["id"]
                    if owner
                    else order_account["id"]
                )
                inv = a.body.get("invoice_owner_account_number")
                if inv:
                    await run.account(inv, [*a.path, "invoiceOwnerAccountNumber"])
            elif a.kind == "owner_transfer":
                dest = a.body.get("destination_account_number")
                if dest:
                    to_lock.add(
                        (await run.account(dest, [*a.path, "destinationAccountNumber"]))["id"]
                    )
                inv = a.body.get("destination_invoice_account_number")
                if inv:
                    await run.account(inv, [*a.path, "destinationInvoiceAccountNumber"])
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(*to_lock)

    order_id = (
        await session.execute(
            insert(SO)
            .values(
                tenant_id=tenant_id,
                order_number=order_number,
                account_id=order_account["id"],
                order_date=order_date,
                status="COMPLETED",
            )
            .returning(SO.c.id)
        )
    ).scalar_one()

    # New subscriptions: their catalog plans read once, their numbers drawn in two round
    # trips and handed out in the order's own order.
    wanted_numbers: list[tuple[Action, bool, int]] = []
    for g in groups:
        for a in g.actions:
            if a.kind == "create_subscription":
                charges = 0
                for i, rp in enumerate(a.body.get("rate_plans") or []):
                    if rp.get("product_rate_plan_number"):
                        path = [*a.path, "ratePlans", str(i), "productRatePlanNumber"]
                        charges += len(
                            (await run.rate_plan(rp["product_rate_plan_number"], path))[1]
                        )
                wanted_numbers.append((a, g.subscription_number is None, charges))
    sub_numbers = iter(
        await numbering.next_numbers(
            session, tenant_id, "subscription", sum(u for _, u, _ in wanted_numbers)
        )
    )
    charge_numbers = await numbering.next_numbers(
        session, tenant_id, "charge", sum(n for _, _, n in wanted_numbers)
    )
    taken = 0
    for a, unnamed, n in wanted_numbers:
        run.reserved[id(a)] = (
            next(sub_numbers) if unnamed else None,
            charge_numbers[taken : taken + n],
        )
        taken += n

    befores = [contribution(g.sub) for g in groups]
    # Groups that only create a subscription are written together.
    bulk = [
        (g, g.actions[0]) for g in groups if [a.kind for a in g.actions] == ["create_subscription"]
    ]
    for (g, _), sub in zip(bulk, await create_subscriptions(run, bulk), strict=True):
        g.sub = sub
    created = {id(g) for g, _ in bulk}

    sequence = 0
    action_rows: list[dict[str, Any]] = []
    touched: list[int] = []
    for g, (before_owner, before) in zip(groups, befores, strict=True):
        for a in g.actions:
            if a.kind == "create_subscription":
                if id(g) not in created:
                    g.sub = await create_subscription(run, g, a)
            else:
                assert g.sub is not None
                await apply(run, g.sub, a)
            assert g.sub is not None  # created above or by create_subscriptions
            action_rows.append(
                {
                    "tenant_id": tenant_id,
                    "order_id": order_id,
                    "subscription_id": g.sub["id"],
                    "sequence": sequence,
                    "action_type": ACTION_TYPES[a.kind],
                    "effective_date": a.effective_date,
                    "payload": jsonable(a.body),
                }
            )
            sequence += 1
        assert g.sub is not None
        if id(g) in created:
            after_row: Any = g.sub  # just written whole by create_subscriptions
        else:
            after_row = (
                (await session.execute(select(S).where(S.c.id == g.sub["id"]))).mappings().one()
            )
        after_owner, after = contribution(after_row)
        if before_owner is not None and before:
            writer.add(before_owner, contracted_mrr=-before)
        if after_owner is not None and after:
            writer.add(after_owner, contracted_mrr=after)
        touched.append(g.sub["id"])
    await session.execute(insert(OA), action_rows)
    await writer.flush()
    if options.get("run_billing"):
        target_path = ["processingOptions", "targetDate"]
        target = parse_date(options.get("target_date"), target_path) or order_date
        await bill_order_subscriptions(
            session,
            tenant_id,
            order_id,
            touched,
            target,
            bool(options.get("generate_draft_invoice")),
        )
    return int(order_id)

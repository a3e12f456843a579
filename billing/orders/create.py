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
from billing.errors import Duplicate, NotFound
from billing.metrics import MetricsWriter
from billing.orders.actions import OrderRun, apply, create_subscription, create_subscriptions
from billing.orders.data import Action, CreateSubscription, OrderInput, OwnerTransfer, payload
from billing.rating import bill_order_subscriptions
from billing.subscriptions import S, contribution
from db.locks import bound_lock_waits, unbound_lock_waits
from db.models import Order, OrderAction, table_of
from db.statuses import OrderStatus

SO = table_of(Order)
OA = table_of(OrderAction)


async def create_order(session: AsyncSession, tenant_id: int, order: OrderInput) -> int:
    """Run an order: every action in the order given, all-or-nothing; contractedMrr of every
    subscription owner moves through the MetricsWriter. Returns the order id."""
    order_date, groups, options = order.order_date, order.subscriptions, order.processing_options
    if order.existing_account_number is not None:
        order_account = await accounts.get_account(
            session, tenant_id, order.existing_account_number, field="existingAccountNumber"
        )
    else:
        assert order.new_account is not None  # decode_order: one of the two
        order_account = await accounts.create_account(session, tenant_id, order.new_account)
    run = OrderRun(session, tenant_id, order_account)
    # The subscription row of each group, as locked or created.
    subs: list[dict[str, Any] | None] = [None] * len(groups)

    order_number = numbering.caller_number(order.order_number, ["orderNumber"])
    if order_number is not None:
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
        wanted = [g.subscription_number for g in groups if not g.creates]
        if wanted:
            res = await session.execute(
                select(S)
                .where(S.c.tenant_id == tenant_id, S.c.subscription_number.in_(wanted))
                .order_by(S.c.id)
                .with_for_update()
            )
            locked = {r["subscription_number"]: dict(r) for r in res.mappings()}
            for gi, g in enumerate(groups):
                if not g.creates:
                    if g.subscription_number not in locked:
                        raise NotFound(
                            f"Subscription {g.subscription_number} not found",
                            [*g.path, "subscriptionNumber"],
                        )
                    subs[gi] = locked[g.subscription_number]
        await unbound_lock_waits(session)

    # Every account whose contractedMrr may move, resolved before anything is written.
    to_lock: set[int] = set()
    for g, sub in zip(groups, subs, strict=True):
        if sub is not None:
            to_lock.add(sub["owner_account_id"])
        for a in g.actions:
            if isinstance(a.body, CreateSubscription):
                owner = a.body.subscription_owner_account_number
                to_lock.add(
                    (await run.account(owner, [*a.path, "subscriptionOwnerAccountNumber"]))["id"]
                    if owner
                    else order_account["id"]
                )
                inv = a.body.invoice_owner_account_number
                if inv:
                    await run.account(inv, [*a.path, "invoiceOwnerAccountNumber"])
            elif isinstance(a.body, OwnerTransfer):
                dest = a.body.destination_account_number
                if dest:
                    to_lock.add(
                        (await run.account(dest, [*a.path, "destinationAccountNumber"]))["id"]
                    )
                inv = a.body.destination_invoice_account_number
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
                status=OrderStatus.COMPLETED,
            )
            .returning(SO.c.id)
        )
    ).scalar_one()

    # New subscriptions: their catalog plans read once, their numbers drawn in two round
    # trips and handed out in the order's own order.
    wanted_numbers: list[tuple[Action[CreateSubscription], bool, int]] = []
    for g in groups:
        for a in g.actions:
            if isinstance(a.body, CreateSubscription):
                charges = 0
                for i, rp in enumerate(a.body.rate_plans):
                    if rp.product_rate_plan_number:
                        path = [*a.path, "ratePlans", str(i), "productRatePlanNumber"]
                        charges += len((await run.rate_plan(rp.product_rate_plan_number, path))[1])
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

    befores = [contribution(sub) for sub in subs]
    # Groups that only create a subscription are written together.
    bulk = [gi for gi, g in enumerate(groups) if g.creates and len(g.actions) == 1]
    new_subs = await create_subscriptions(
        run, [(groups[gi].subscription_number, groups[gi].actions[0]) for gi in bulk]
    )
    for gi, sub in zip(bulk, new_subs, strict=True):
        subs[gi] = sub
    created = set(bulk)

    sequence = 0
    action_rows: list[dict[str, Any]] = []
    touched: list[int] = []
    for gi, (g, (before_owner, before)) in enumerate(zip(groups, befores, strict=True)):
        for a in g.actions:
            if isinstance(a.body, CreateSubscription):
                if gi not in created:
                    subs[gi] = await create_subscription(run, g.subscription_number, a)
            else:
                sub = subs[gi]
                assert sub is not None
                await apply(run, sub, a)
            sub = subs[gi]
            assert sub is not None  # created above or by create_subscriptions
            action_rows.append(
                {
                    "tenant_id": tenant_id,
                    "order_id": order_id,
                    "subscription_id": sub["id"],
                    "sequence": sequence,
                    "action_type": a.body.action_type,
                    "effective_date": a.effective_date,
                    "payload": payload(a.body),
                }
            )
            sequence += 1
        sub = subs[gi]
        assert sub is not None
        if gi in created:
            after_row: Any = sub  # just written whole by create_subscriptions
        else:
            after_row = (
                (await session.execute(select(S).where(S.c.id == sub["id"]))).mappings().one()
            )
        after_owner, after = contribution(after_row)
        if before_owner is not None and before:
            writer.add(before_owner, contracted_mrr=-before)
        if after_owner is not None and after:
            writer.add(after_owner, contracted_mrr=after)
        touched.append(sub["id"])
    await session.execute(insert(OA), action_rows)
    await writer.flush()
    if options.run_billing:
        await bill_order_subscriptions(
            session,
            tenant_id,
            order_id,
            touched,
            options.target_date or order_date,
            options.generate_draft_invoice,
        )
    return int(order_id)

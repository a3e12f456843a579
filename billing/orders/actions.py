"""Order actions on subscriptions: creating them, and one function per amending action.

Every action function takes the order's run state, the subscription row (locked) and the
action; the amendments are dispatched through AMENDMENTS, keyed by the action.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts, numbering
from billing.catalog import get_rate_plan
from billing.dbutil import db_errors
from billing.errors import CurrencyMismatch, Duplicate, InvalidState, NotFound, ValidationFailed
from billing.money import MRR_PLACES, check_price, check_quantity
from billing.orders.checks import add_months, plan_rows, rate_plan_number, subscription_terms
from billing.orders.data import (
    CANCEL_POLICIES,
    Action,
    AddProduct,
    CancelSubscription,
    CreateSubscription,
    OwnerTransfer,
    RatePlan,
    RemoveProduct,
    RenewSubscription,
    Resume,
    Suspend,
    Terms,
    TermsAndConditions,
    UpdateProduct,
)
from billing.subscriptions import SC, SRP, S, charge_mrr, refresh_subscription_mrr
from db.models import SubscriptionSuspension, table_of
from db.statuses import ChargeType, SubscriptionStatus, TermType

SS = table_of(SubscriptionSuspension)


class OrderRun:
    """State of one order while it executes."""

    def __init__(self, session: AsyncSession, tenant_id: int, order_account: RowMapping) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.order_account = order_account
        self.accounts: dict[str, RowMapping] = {order_account["account_number"]: order_account}
        self.by_id: dict[int, RowMapping] = {order_account["id"]: order_account}
        self.plans: dict[str, tuple[RowMapping, list[RowMapping]]] = {}
        # per new-subscription action: its subscription number (None: given) and charge numbers
        self.reserved: dict[int, tuple[str | None, list[str]]] = {}

    async def rate_plan(self, number: str, path: list[str]) -> tuple[RowMapping, list[RowMapping]]:
        """A catalog rate plan with its charges, read once per order."""
        found = self.plans.get(number)
        if found is None:
            found = await get_rate_plan(self.session, self.tenant_id, number, path)
            self.plans[number] = found
        return found

    async def account(self, number: str, path: list[str]) -> RowMapping:
        row = self.accounts.get(number)
        if row is None:
            row = await accounts.find_account(self.session, self.tenant_id, number)
            if row is None:
                raise NotFound(f"Account {number} not found", path)
            self.accounts[number] = row
            self.by_id[row["id"]] = row
        return row

    async def account_by_id(self, account_id: int) -> RowMapping:
        row = self.by_id.get(account_id)
        if row is None:
            row = await accounts.get_account_by_id(self.session, self.tenant_id, account_id)
            self.by_id[account_id] = row
        return row


def _check_open(sub: dict[str, Any], path: list[str]) -> None:
    if (
        sub["status"] in (SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED)
        or sub["cancelled_date"] is not None
    ):
        raise InvalidState(f"Subscription {sub['subscription_number']} is cancelled", path)


async def _save(run: OrderRun, sub: dict[str, Any], **values: Any) -> None:
    sub.update(values)
    await run.session.execute(
        update(S).where(S.c.id == sub["id"]).values(updated_at=text("now()"), **values)
    )


async def create_subscription(
    run: OrderRun, number: str | None, a: Action[CreateSubscription]
) -> dict[str, Any]:
    """Create one new subscription (CreateSubscription among other actions of its group)."""
    return (await create_subscriptions(run, [(number, a)]))[0]


async def create_subscriptions(
    run: OrderRun, items: list[tuple[str | None, Action[CreateSubscription]]]
) -> list[dict[str, Any]]:
    """Create new subscriptions, every one checked before any is written, then written with
    three multi-row INSERTs (subscriptions, rate plans, charges) on ids drawn up front.
    Returns the subscription rows in the order given."""
    if not items:
        return []
    subs: list[dict[str, Any]] = []
    plans_of: list[list[tuple[RowMapping, list[dict[str, Any]]]]] = []
    charge_numbers: list[str] = []
    for number, a in items:
        b, path, eff = a.body, a.path, a.effective_date
        owner_no = b.subscription_owner_account_number
        inv_no = b.invoice_owner_account_number
        owner = (
            await run.account(owner_no, [*path, "subscriptionOwnerAccountNumber"])
            if owner_no
            else run.order_account
        )
        inv = (
            await run.account(inv_no, [*path, "invoiceOwnerAccountNumber"])
            if inv_no
            else run.order_account
        )
        if owner["currency"] != inv["currency"]:
            raise CurrencyMismatch(
                f"Subscription owner uses {owner['currency']}, invoice owner {inv['currency']}",
                [*path, "invoiceOwnerAccountNumber"],
            )
        terms = subscription_terms(b.terms or Terms(), [*path, "terms"])
        number = numbering.caller_number(number, [*path, "subscriptionNumber"])
        if number is not None:
            found = await run.session.execute(
                select(S.c.id).where(
                    S.c.tenant_id == run.tenant_id, S.c.subscription_number == number
                )
            )
            if found.first() is not None:
                raise Duplicate(
                    f"Subscription number {number} is already used", [*path, "subscriptionNumber"]
                )
        plans = [
            await _plan_rows(run, rp, eff, [*path, "ratePlans", str(i)])
            for i, rp in enumerate(b.rate_plans)
        ]
        reserved_number, reserved_charges = run.reserved.pop(id(a))
        number = number if number is not None else reserved_number
        assert len(reserved_charges) == sum(len(rows) for _, rows in plans)
        charge_numbers.extend(reserved_charges)
        mrr = sum(
            (
                r["mrr"]
                for _, rows in plans
                for r in rows
                if r["charge_type"] == ChargeType.RECURRING
            ),
            Decimal(0),
        ).quantize(MRR_PLACES)
        subs.append(
            {
                "tenant_id": run.tenant_id,
                "subscription_number": number,
                "owner_account_id": owner["id"],
                "invoice_owner_account_id": inv["id"],
                "currency": inv["currency"],
                "status": SubscriptionStatus.ACTIVE,
                **terms,
                "contract_effective_date": eff,
                "term_start_date": eff,
                "term_end_date": add_months(eff, int(terms["initial_term"]))
                if terms["term_type"] == TermType.TERMED
                else None,
                "invoice_separately": b.invoice_separately,
                "mrr": mrr,
                "version": 1,
            }
        )
        plans_of.append(plans)
    sub_ids = await _draw_ids(run.session, "subscription", len(subs))
    srp_ids = iter(
        await _draw_ids(run.session, "subscription_rate_plan", sum(len(p) for p in plans_of))
    )
    numbers = iter(charge_numbers)
    srp_rows: list[dict[str, Any]] = []
    charge_rows: list[dict[str, Any]] = []
    for sub, sub_id, plans in zip(subs, sub_ids, plans_of, strict=True):
        sub["id"] = sub_id
        for plan, rows in plans:
            srp_id = next(srp_ids)
            srp_rows.append(
                {
                    "id": srp_id,
                    "tenant_id": run.tenant_id,
                    "subscription_id": sub_id,
                    "product_rate_plan_id": plan["id"],
                    "name": plan["name"],
                    "effective_start_date": sub["contract_effective_date"],
                }
            )
            charge_rows.extend(
                {
                    **r,
                    "subscription_id": sub_id,
                    "subscription_rate_plan_id": srp_id,
                    "charge_number": next(numbers),
                }
                for r in rows
            )
    async with db_errors():
        await run.session.execute(insert(S), subs)
    if srp_rows:
        await run.session.execute(insert(SRP), srp_rows)
    if charge_rows:
        await run.session.execute(insert(SC), charge_rows)
    return [{"cancelled_date": None, **sub} for sub in subs]


async def _draw_ids(session: AsyncSession, table: str, count: int) -> list[int]:
    """``count`` ids of ``table``'s own id sequence, for multi-row inserts that need them."""
    if count <= 0:
        return []
    res = await session.execute(
        text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
        {"t": table, "n": count},
    )
    return [int(v) for v in res.scalars()]


async def _plan_rows(
    run: OrderRun, rp: RatePlan | AddProduct, eff: date, path: list[str], end: date | None = None
) -> tuple[RowMapping, list[dict[str, Any]]]:
    """Check one rate plan of an order action against the catalog and build its charge rows
    (without subscription, rate plan and charge number)."""
    plan, charges = await run.rate_plan(
        rate_plan_number(rp, path), [*path, "productRatePlanNumber"]
    )
    return plan, plan_rows(run.tenant_id, plan["rate_plan_number"], charges, rp, eff, path, end)


async def _insert_plan(run: OrderRun, sub_id: int, plan: RowMapping, eff: date) -> int:
    res = await run.session.execute(
        insert(SRP)
        .values(
            tenant_id=run.tenant_id,
            subscription_id=sub_id,
            product_rate_plan_id=plan["id"],
            name=plan["name"],
            effective_start_date=eff,
        )
        .returning(SRP.c.id)
    )
    return int(res.scalar_one())


async def add_product(run: OrderRun, sub: dict[str, Any], a: Action[AddProduct]) -> None:
    """AddProduct: a catalog rate plan (with the order's overrides) joins the subscription
    from the effective date, ending when the subscription does."""
    rp, eff, path = a.body, a.effective_date, a.path
    plan, rows = await _plan_rows(run, rp, eff, path, end=sub.get("cancelled_date"))
    srp_id = await _insert_plan(run, sub["id"], plan, eff)
    numbers = await numbering.next_numbers(run.session, run.tenant_id, "charge", len(rows))
    if rows:
        await run.session.execute(
            insert(SC),
            [
                {
                    **r,
                    "subscription_id": sub["id"],
                    "subscription_rate_plan_id": srp_id,
                    "charge_number": n,
                }
                for r, n in zip(rows, numbers, strict=True)
            ],
        )
    await _save(run, sub, mrr=await refresh_subscription_mrr(run.session, sub["id"]))


async def update_product(run: OrderRun, sub: dict[str, Any], a: Action[UpdateProduct]) -> None:
    """UpdateProduct: a charge's new price and/or quantity from the effective date (not before
    its current segment starts); a segment not yet billed that starts that day is changed in
    place, otherwise a new segment follows it."""
    b, path, eff, s = a.body, a.path, a.effective_date, run.session
    number = b.charge_number
    res = await s.execute(
        select(SC).where(
            SC.c.subscription_id == sub["id"], SC.c.charge_number == number, SC.c.is_last_segment
        )
    )
    seg = res.mappings().one_or_none()
    if seg is None:
        raise NotFound(
            f"Charge {number} not found on {sub['subscription_number']}", [*path, "chargeNumber"]
        )
    if seg["effective_end_date"] is not None:
        raise InvalidState(f"Charge {number} has ended", [*path, "chargeNumber"])
    if b.price is None and b.quantity is None:
        raise ValidationFailed("Give a new price and/or quantity", path)
    if eff < seg["effective_start_date"]:
        raise ValidationFailed(
            "effectiveDate is before the charge's current segment starts", [*path, "effectiveDate"]
        )
    price = check_price(b.price, [*path, "price"]) if b.price is not None else seg["price"]
    qty = (
        check_quantity(b.quantity, [*path, "quantity"])
        if b.quantity is not None
        else seg["quantity"]
    )
    mrr = charge_mrr(seg["charge_type"], seg["charge_model"], price, qty, seg["billing_period"])
    if eff == seg["effective_start_date"] and seg["charged_through_date"] is None:
        await s.execute(
            update(SC).where(SC.c.id == seg["id"]).values(price=price, quantity=qty, mrr=mrr)
        )
    else:
        await s.execute(
            update(SC)
            .where(SC.c.id == seg["id"])
            .values(effective_end_date=eff, is_last_segment=False)
        )
        ctd = seg["charged_through_date"]
        new = {k: seg[k] for k in seg.keys() if k not in ("id",)}
        new.update(
            segment=seg["segment"] + 1,
            is_last_segment=True,
            price=price,
            quantity=qty,
            mrr=mrr,
            effective_start_date=eff,
            effective_end_date=None,
            charged_through_date=ctd if ctd is not None and ctd > eff else None,
        )
        await s.execute(insert(SC).values(**new))
    await _save(run, sub, mrr=await refresh_subscription_mrr(s, sub["id"]))


async def remove_product(run: OrderRun, sub: dict[str, Any], a: Action[RemoveProduct]) -> None:
    """RemoveProduct: an active rate plan and its charges end on the effective date, which is
    not before the plan starts."""
    path, eff, s = a.path, a.effective_date, run.session
    number = a.body.product_rate_plan_number
    res = await s.execute(
        text(
            "SELECT srp.id, srp.effective_start_date FROM subscription_rate_plan srp "
            "JOIN product_rate_plan p ON p.id = srp.product_rate_plan_id "
            "WHERE srp.subscription_id = :s "
            "AND p.rate_plan_number = :n AND srp.effective_end_date IS NULL"
        ),
        {"s": sub["id"], "n": number},
    )
    plans = list(res.mappings())
    if not plans:
        raise NotFound(
            f"Rate plan {number} is not active on {sub['subscription_number']}",
            [*path, "productRatePlanNumber"],
        )
    ids = [p["id"] for p in plans]
    if any(eff < p["effective_start_date"] for p in plans):
        raise ValidationFailed(
            "effectiveDate is before the rate plan starts", [*path, "effectiveDate"]
        )
    await s.execute(update(SRP).where(SRP.c.id.in_(ids)).values(effective_end_date=eff))
    await s.execute(
        update(SC)
        .where(
            SC.c.subscription_rate_plan_id.in_(ids),
            SC.c.is_last_segment,
            SC.c.effective_end_date.is_(None),
        )
        .values(effective_end_date=eff)
    )
    await _save(run, sub, mrr=await refresh_subscription_mrr(s, sub["id"]))


async def suspend(run: OrderRun, sub: dict[str, Any], a: Action[Suspend]) -> None:
    """Suspend: only an ACTIVE subscription, from the effective date."""
    if sub["status"] != SubscriptionStatus.ACTIVE:
        raise InvalidState(
            f"Only an ACTIVE subscription can be suspended ({sub['status']})", a.path
        )
    await run.session.execute(
        insert(SS).values(
            tenant_id=run.tenant_id, subscription_id=sub["id"], start_date=a.effective_date
        )
    )
    await _save(run, sub, status=SubscriptionStatus.SUSPENDED)


async def resume(run: OrderRun, sub: dict[str, Any], a: Action[Resume]) -> None:
    """Resume: only a SUSPENDED subscription, not before its suspension starts."""
    path, eff, s = a.path, a.effective_date, run.session
    if sub["status"] != SubscriptionStatus.SUSPENDED:
        raise InvalidState(f"Subscription {sub['subscription_number']} is not suspended", path)
    res = await s.execute(
        select(SS.c.id, SS.c.start_date)
        .where(SS.c.subscription_id == sub["id"], SS.c.end_date.is_(None))
        .order_by(SS.c.id.desc())
        .limit(1)
    )
    open_row = res.mappings().one_or_none()
    if open_row is not None:
        if eff < open_row["start_date"]:
            raise ValidationFailed(
                "Resume date is before the suspension starts", [*path, "effectiveDate"]
            )
        await s.execute(update(SS).where(SS.c.id == open_row["id"]).values(end_date=eff))
    await _save(run, sub, status=SubscriptionStatus.ACTIVE)


async def cancel_subscription(
    run: OrderRun, sub: dict[str, Any], a: Action[CancelSubscription]
) -> None:
    """CancelSubscription: the subscription, its plans and charges end on the date the policy
    names (default SPECIFIC_DATE: the given date, else the effective date), never before the
    subscription starts."""
    b, path, eff, s = a.body, a.path, a.effective_date, run.session
    policy = b.cancellation_policy or "SPECIFIC_DATE"
    if policy not in CANCEL_POLICIES:
        raise ValidationFailed(
            f"cancellationPolicy must be one of {', '.join(CANCEL_POLICIES)}",
            [*path, "cancellationPolicy"],
        )
    if policy == "END_OF_CURRENT_TERM":
        if sub["term_end_date"] is None:
            raise InvalidState(
                "An EVERGREEN subscription has no current term end", [*path, "cancellationPolicy"]
            )
        when = sub["term_end_date"]
    elif policy == "END_OF_LAST_INVOICE_PERIOD":
        res = await s.execute(
            text(
                "SELECT max(charged_through_date) FROM subscription_charge "
                "WHERE subscription_id = :s AND is_last_segment"
            ),
            {"s": sub["id"]},
        )
        when = res.scalar_one() or eff
    else:
        when = b.cancellation_effective_date or eff
    if when < sub["contract_effective_date"]:
        raise ValidationFailed(
            "Cancellation date is before the subscription starts",
            [*path, "cancellationEffectiveDate"],
        )
    await s.execute(
        update(SC)
        .where(
            SC.c.subscription_id == sub["id"],
            SC.c.is_last_segment,
            (SC.c.effective_end_date.is_(None)) | (SC.c.effective_end_date > when),
        )
        .values(effective_end_date=when)
    )
    await s.execute(
        update(SRP)
        .where(
            SRP.c.subscription_id == sub["id"],
            (SRP.c.effective_end_date.is_(None)) | (SRP.c.effective_end_date > when),
        )
        .values(effective_end_date=when)
    )
    await _save(
        run,
        sub,
        status=SubscriptionStatus.CANCELLED,
        cancelled_date=when,
        version=sub["version"] + 1,
    )


async def renew_subscription(
    run: OrderRun, sub: dict[str, Any], a: Action[RenewSubscription]
) -> None:
    """RenewSubscription: only a TERMED subscription; the next term starts where the current
    one ends and lasts the renewal term (else the initial term, else 12 months)."""
    if sub["term_type"] != TermType.TERMED or sub["term_end_date"] is None:
        raise InvalidState("Only a TERMED subscription can be renewed", a.path)
    start = sub["term_end_date"]
    await _save(
        run,
        sub,
        term_start_date=start,
        term_end_date=add_months(start, int(sub["renewal_term"] or sub["initial_term"] or 12)),
        version=sub["version"] + 1,
    )


async def terms_and_conditions(
    run: OrderRun, sub: dict[str, Any], a: Action[TermsAndConditions]
) -> None:
    """TermsAndConditions: new terms over the current ones; a TERMED term ends its initial
    term after the current term starts, an EVERGREEN one never."""
    terms = subscription_terms(a.body, a.path, sub)
    end = (
        add_months(sub["term_start_date"], int(terms["initial_term"]))
        if terms["term_type"] == TermType.TERMED
        else None
    )
    await _save(run, sub, term_end_date=end, version=sub["version"] + 1, **terms)


async def owner_transfer(run: OrderRun, sub: dict[str, Any], a: Action[OwnerTransfer]) -> None:
    """OwnerTransfer: a new owner and/or invoice owner, both in the subscription's currency."""
    path = a.path
    dest_no = a.body.destination_account_number
    inv_no = a.body.destination_invoice_account_number
    if not dest_no and not inv_no:
        raise ValidationFailed(
            "Give destinationAccountNumber and/or destinationInvoiceAccountNumber", path
        )
    owner = (
        await run.account(dest_no, [*path, "destinationAccountNumber"])
        if dest_no
        else await run.account_by_id(sub["owner_account_id"])
    )
    inv = (
        await run.account(inv_no, [*path, "destinationInvoiceAccountNumber"])
        if inv_no
        else await run.account_by_id(sub["invoice_owner_account_id"])
    )
    if owner["currency"] != inv["currency"] or inv["currency"] != sub["currency"]:
        raise CurrencyMismatch("Both owners must use the subscription's currency", path)
    await _save(
        run,
        sub,
        owner_account_id=owner["id"],
        invoice_owner_account_id=inv["id"],
        version=sub["version"] + 1,
    )


Amendment = Callable[[OrderRun, dict[str, Any], Action[Any]], Awaitable[None]]

# What each action does to an existing subscription, keyed by the action's input type.
AMENDMENTS: dict[type, Amendment] = {
    AddProduct: add_product,
    UpdateProduct: update_product,
    RemoveProduct: remove_product,
    Suspend: suspend,
    Resume: resume,
    CancelSubscription: cancel_subscription,
    RenewSubscription: renew_subscription,
    TermsAndConditions: terms_and_conditions,
    OwnerTransfer: owner_transfer,
}


async def apply(run: OrderRun, sub: dict[str, Any], a: Action[Any]) -> None:
    """Apply an amending action to a subscription that is not cancelled, its row already
    locked."""
    _check_open(sub, a.path)
    await AMENDMENTS[type(a.body)](run, sub, a)

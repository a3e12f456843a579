"""Orders: ordered actions on subscriptions, all-or-nothing, moving contractedMrr.

An order arrives as plain data (snake_case keys, the shape of CreateOrderInput), so
the synchronous mutation and the asynchronous job share one path. Locks are taken in
one fixed order so concurrent orders never deadlock: the subscription rows the order
changes (ascending id, FOR UPDATE), then every account whose contractedMrr may move
through one ``MetricsWriter.lock`` call (ascending id).
"""

from __future__ import annotations

import calendar
import hashlib
import importlib
import importlib.util
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts, numbering
from billing.catalog import BILLING_PERIODS, get_rate_plan
from billing.dbutil import db_errors
from billing.errors import (
    CurrencyMismatch,
    Duplicate,
    IdempotencyKeyReused,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from billing.metrics import MetricsWriter
from billing.money import MRR_PLACES, check_price, check_quantity
from billing.pages import Page, paginate
from billing.subscriptions import (
    SC,
    SRP,
    S,
    charge_mrr,
    contribution,
    refresh_subscription_mrr,
)
from db.locks import bound_lock_waits, unbound_lock_waits
from db.models import Job, Order, OrderAction, SubscriptionSuspension, table_of

SO = table_of(Order)
OA = table_of(OrderAction)
SS = table_of(SubscriptionSuspension)
J = table_of(Job)

ACTION_TYPES: dict[str, str] = {
    "create_subscription": "CreateSubscription",
    "add_product": "AddProduct",
    "update_product": "UpdateProduct",
    "remove_product": "RemoveProduct",
    "suspend": "Suspend",
    "resume": "Resume",
    "cancel_subscription": "CancelSubscription",
    "renew_subscription": "RenewSubscription",
    "terms_and_conditions": "TermsAndConditions",
    "owner_transfer": "OwnerTransfer",
}
TERM_TYPES = ("TERMED", "EVERGREEN")
CANCEL_POLICIES = ("END_OF_CURRENT_TERM", "END_OF_LAST_INVOICE_PERIOD", "SPECIFIC_DATE")
MAX_ACTIONS = 1000


# --------------------------------------------------------------------------- plain data


def jsonable(value: Any) -> Any:
    """Input data as JSON-safe values (Decimal and dates as strings, enums as values)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal | date):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def input_hash(data: Any) -> str:
    """A stable hash of an order input, for idempotency keys."""
    return hashlib.sha256(json.dumps(jsonable(data), sort_keys=True).encode()).hexdigest()


def parse_date(value: Any, path: list[str]) -> date | None:
    """A date of the input (a date or ISO text), None when absent; VALIDATION otherwise."""
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationFailed(f"{value!r} is not a date", path) from None


def add_months(d: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's end."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


_CONTACT_KEYS = {
    "first_name": "firstName", "last_name": "lastName", "work_email": "workEmail",
    "work_phone": "workPhone", "postal_code": "postalCode",
}  # fmt: skip


def _contact(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {_CONTACT_KEYS.get(k, k): v for k, v in raw.items() if v is not None}


def account_data(d: dict[str, Any]) -> accounts.AccountData:
    """CreateAccountInput as plain data to AccountData."""
    return accounts.AccountData(
        name=d.get("name") or "",
        currency=d.get("currency") or "",
        bill_to=_contact(d.get("bill_to_contact")) or {},
        sold_to=_contact(d.get("sold_to_contact")),
        account_number=d.get("account_number"),
        bill_cycle_day=d.get("bill_cycle_day") or 1,
        payment_term=d.get("payment_term") or "DUE_UPON_RECEIPT",
        batch=d.get("batch") or "Batch1",
        partner_account=bool(d.get("partner_account")),
    )


@dataclass
class Action:
    kind: str
    body: dict[str, Any]
    effective_date: date
    path: list[str]


@dataclass
class Group:
    subscription_number: str | None
    actions: list[Action]
    path: list[str]
    sub: dict[str, Any] | None = None


def parse_groups(data: dict[str, Any], order_date: date) -> list[Group]:
    """The order's subscriptions and their actions, checked for shape (oneOf included)."""
    raw = data.get("subscriptions") or []
    if not raw:
        raise ValidationFailed("An order needs at least one subscription", ["subscriptions"])
    groups: list[Group] = []
    count = 0
    seen: set[str] = set()
    for gi, g in enumerate(raw):
        gpath = ["subscriptions", str(gi)]
        acts = g.get("order_actions") or []
        if not acts:
            raise ValidationFailed(
                "Each subscription needs at least one order action", [*gpath, "orderActions"]
            )
        actions = []
        for ai, a in enumerate(acts):
            path = [*gpath, "orderActions", str(ai)]
            chosen = [(k, v) for k, v in (a or {}).items() if k in ACTION_TYPES and v is not None]
            if len(chosen) != 1:
                raise ValidationFailed(
                    "Exactly one action must be set in each OrderActionInput", path
                )
            kind, body = chosen[0]
            eff = parse_date(body.get("effective_date"), [*path, "effectiveDate"]) or order_date
            actions.append(Action(kind, dict(body), eff, path))
        count += len(actions)
        creates = [i for i, a in enumerate(actions) if a.kind == "create_subscription"]
        if creates and creates != [0]:
            raise ValidationFailed(
                "createSubscription must be the first action of its subscription, once", gpath
            )
        number = g.get("subscription_number")
        if creates:
            given = actions[0].body.get("subscription_number")
            if number and given and number != given:
                raise ValidationFailed(
                    "Two different subscription numbers are given", [*gpath, "subscriptionNumber"]
                )
            number = number or given
        elif not number:
            raise ValidationFailed(
                "subscriptionNumber is required for an existing subscription",
                [*gpath, "subscriptionNumber"],
            )
        if number:
            if number in seen:
                raise ValidationFailed(
                    f"Subscription {number} appears twice in the order",
                    [*gpath, "subscriptionNumber"],
                )
            seen.add(number)
        groups.append(Group(number, actions, gpath))
    if count > MAX_ACTIONS:
        from billing.errors import LimitExceeded

        raise LimitExceeded(f"An order may carry at most {MAX_ACTIONS} actions", ["subscriptions"])
    return groups


# --------------------------------------------------------------------------- the order


class _Run:
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
    bill = None
    if options.get("run_billing"):
        # Rating is built beside orders; until it is present, runBilling is refused.
        if importlib.util.find_spec("billing.rating") is None:
            raise ValidationFailed(
                "runBilling is not available", ["processingOptions", "runBilling"]
            )
        bill = importlib.import_module("billing.rating").bill_order_subscriptions
    groups = parse_groups(data, order_date)

    if existing is not None:
        order_account = await accounts.get_account(
            session, tenant_id, existing, field="existingAccountNumber"
        )
    else:
        order_account = await accounts.create_account(session, tenant_id, account_data(new or {}))
    run = _Run(session, tenant_id, order_account)

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
    for (g, _), sub in zip(bulk, await _create_subscriptions(run, bulk), strict=True):
        g.sub = sub
    created = {id(g) for g, _ in bulk}

    sequence = 0
    action_rows: list[dict[str, Any]] = []
    touched: list[int] = []
    for g, (before_owner, before) in zip(groups, befores, strict=True):
        for a in g.actions:
            if a.kind == "create_subscription":
                if id(g) not in created:
                    g.sub = await _create_subscription(run, g, a)
            else:
                assert g.sub is not None
                await _apply(run, g.sub, a)
            assert g.sub is not None  # created above or by _create_subscriptions
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
            after_row: Any = g.sub  # just written whole by _create_subscriptions
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
    if bill is not None:
        target_path = ["processingOptions", "targetDate"]
        target = parse_date(options.get("target_date"), target_path) or order_date
        await bill(
            session,
            tenant_id,
            order_id,
            touched,
            target,
            bool(options.get("generate_draft_invoice")),
        )
    return int(order_id)


def _check_open(sub: dict[str, Any], path: list[str]) -> None:
    if sub["status"] in ("CANCELLED", "EXPIRED") or sub["cancelled_date"] is not None:
        raise InvalidState(f"Subscription {sub['subscription_number']} is cancelled", path)


async def _save(run: _Run, sub: dict[str, Any], **values: Any) -> None:
    sub.update(values)
    await run.session.execute(
        update(S).where(S.c.id == sub["id"]).values(updated_at=text("now()"), **values)
    )


def subscription_terms(
    body: dict[str, Any], path: list[str], current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A subscription's terms from an action's input over its current ones (defaults: TERMED,
    12 and 12 months, no auto-renew); a TERMED term is 1-1200 months."""
    cur = current or {
        "term_type": "TERMED",
        "initial_term": 12,
        "renewal_term": 12,
        "auto_renew": False,
    }
    term_type = body.get("term_type") or cur["term_type"]
    if term_type not in TERM_TYPES:
        raise ValidationFailed("termType must be TERMED or EVERGREEN", [*path, "termType"])
    out = {
        "term_type": term_type,
        "initial_term": body.get("initial_term")
        if body.get("initial_term") is not None
        else cur["initial_term"],
        "renewal_term": body.get("renewal_term")
        if body.get("renewal_term") is not None
        else cur["renewal_term"],
        "auto_renew": body.get("auto_renew")
        if body.get("auto_renew") is not None
        else cur["auto_renew"],
    }
    for key, name in (("initial_term", "initialTerm"), ("renewal_term", "renewalTerm")):
        v = out[key]
        if term_type == "TERMED" and (v is None or not 1 <= int(v) <= 1200):
            raise ValidationFailed(
                f"{name} must be 1-1200 months for a TERMED subscription", [*path, name]
            )
    return out


async def _create_subscription(run: _Run, g: Group, a: Action) -> dict[str, Any]:
    return (await _create_subscriptions(run, [(g, a)]))[0]


async def _create_subscriptions(
    run: _Run, items: list[tuple[Group, Action]]
) -> list[dict[str, Any]]:
    """Create new subscriptions, every one checked before any is written, then written with
    three multi-row INSERTs (subscriptions, rate plans, charges) on ids drawn up front.
    Returns the subscription rows in the order given."""
    if not items:
        return []
    subs: list[dict[str, Any]] = []
    plans_of: list[list[tuple[RowMapping, list[dict[str, Any]]]]] = []
    charge_numbers: list[str] = []
    for g, a in items:
        b, path, eff = a.body, a.path, a.effective_date
        owner_no = b.get("subscription_owner_account_number")
        inv_no = b.get("invoice_owner_account_number")
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
        terms = subscription_terms(b.get("terms") or {}, [*path, "terms"])
        number = g.subscription_number
        if number is not None:
            number = number.strip()
            if not number or len(number) > 64:
                raise ValidationFailed(
                    "subscriptionNumber must be 1-64 characters", [*path, "subscriptionNumber"]
                )
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
            for i, rp in enumerate(b.get("rate_plans") or [])
        ]
        reserved_number, reserved_charges = run.reserved.pop(id(a))
        number = number if number is not None else reserved_number
        assert len(reserved_charges) == sum(len(rows) for _, rows in plans)
        charge_numbers.extend(reserved_charges)
        mrr = sum(
            (r["mrr"] for _, rows in plans for r in rows if r["charge_type"] == "RECURRING"),
            Decimal(0),
        ).quantize(MRR_PLACES)
        subs.append(
            {
                "tenant_id": run.tenant_id,
                "subscription_number": number,
                "owner_account_id": owner["id"],
                "invoice_owner_account_id": inv["id"],
                "currency": inv["currency"],
                "status": "ACTIVE",
                **terms,
                "contract_effective_date": eff,
                "term_start_date": eff,
                "term_end_date": add_months(eff, int(terms["initial_term"]))
                if terms["term_type"] == "TERMED"
                else None,
                "invoice_separately": bool(b.get("invoice_separately")),
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
    run: _Run, rp: dict[str, Any], eff: date, path: list[str], end: date | None = None
) -> tuple[RowMapping, list[dict[str, Any]]]:
    """Check one rate plan of an order action against the catalog and build its charge rows
    (without subscription, rate plan and charge number)."""
    plan, charges = await run.rate_plan(
        rate_plan_number(rp, path), [*path, "productRatePlanNumber"]
    )
    return plan, plan_rows(run.tenant_id, plan, charges, rp, eff, path, end)


def rate_plan_number(rp: dict[str, Any], path: list[str]) -> str:
    """The catalog rate plan an order's rate plan names (required)."""
    number = rp.get("product_rate_plan_number")
    if not number:
        raise ValidationFailed(
            "productRatePlanNumber is required", [*path, "productRatePlanNumber"]
        )
    return str(number)


def plan_rows(
    tenant_id: int,
    plan: Any,
    charges: list[Any],
    rp: dict[str, Any],
    eff: date,
    path: list[str],
    end: date | None = None,
) -> list[dict[str, Any]]:
    """The charge rows of one of an order's rate plans (without subscription, rate plan and
    charge number): the catalog's charges with the order's overrides, checked."""
    number = plan["rate_plan_number"]
    overrides: dict[str, tuple[dict[str, Any], list[str]]] = {}
    known = {c["charge_number"] for c in charges}
    for i, o in enumerate(rp.get("charge_overrides") or []):
        opath = [*path, "chargeOverrides", str(i)]
        cn = o.get("product_rate_plan_charge_number")
        if cn not in known:
            raise NotFound(
                f"Charge {cn} is not part of rate plan {number}",
                [*opath, "productRatePlanChargeNumber"],
            )
        if cn in overrides:
            raise ValidationFailed(
                f"Charge {cn} is overridden twice", [*opath, "productRatePlanChargeNumber"]
            )
        overrides[cn] = (o, opath)
    rows = []
    for c in charges:
        o, opath = overrides.get(c["charge_number"], ({}, path))
        price = (
            check_price(o["price"], [*opath, "price"])
            if o.get("price") is not None
            else c["list_price"]
        )
        qty = (
            check_quantity(o["quantity"], [*opath, "quantity"])
            if o.get("quantity") is not None
            else c["default_quantity"]
        )
        period = o.get("billing_period") or c["billing_period"]
        if period not in BILLING_PERIODS:
            raise ValidationFailed(
                "billingPeriod must be MONTH, QUARTER, SEMI_ANNUAL or ANNUAL",
                [*opath, "billingPeriod"],
            )
        rows.append(
            {
                "tenant_id": tenant_id,
                "product_rate_plan_charge_id": c["id"],
                "segment": 1,
                "is_last_segment": True,
                "name": c["name"],
                "charge_type": c["charge_type"],
                "charge_model": c["charge_model"],
                "price": price,
                "quantity": qty,
                "billing_period": period,
                "billing_timing": c["billing_timing"],
                "effective_start_date": eff,
                "effective_end_date": end,
                "charged_through_date": None,
                "mrr": charge_mrr(c["charge_type"], c["charge_model"], price, qty, period),
            }
        )
    return rows


async def _insert_plan(run: _Run, sub_id: int, plan: RowMapping, eff: date) -> int:
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


async def _add_rate_plan(
    run: _Run, sub: dict[str, Any], rp: dict[str, Any], eff: date, path: list[str]
) -> None:
    """Add a rate plan to an existing subscription (addProduct)."""
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


async def _apply(run: _Run, sub: dict[str, Any], a: Action) -> None:
    b, path, eff, s = a.body, a.path, a.effective_date, run.session
    _check_open(sub, path)
    if a.kind == "add_product":
        await _add_rate_plan(run, sub, b, eff, path)
        await _save(run, sub, mrr=await refresh_subscription_mrr(s, sub["id"]))
    elif a.kind == "update_product":
        await _update_product(run, sub, b, eff, path)
        await _save(run, sub, mrr=await refresh_subscription_mrr(s, sub["id"]))
    elif a.kind == "remove_product":
        number = b.get("product_rate_plan_number")
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
    elif a.kind == "suspend":
        if sub["status"] != "ACTIVE":
            raise InvalidState(
                f"Only an ACTIVE subscription can be suspended ({sub['status']})", path
            )
        await s.execute(
            insert(SS).values(tenant_id=run.tenant_id, subscription_id=sub["id"], start_date=eff)
        )
        await _save(run, sub, status="SUSPENDED")
    elif a.kind == "resume":
        if sub["status"] != "SUSPENDED":
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
        await _save(run, sub, status="ACTIVE")
    elif a.kind == "cancel_subscription":
        await _cancel(run, sub, b, eff, path)
    elif a.kind == "renew_subscription":
        if sub["term_type"] != "TERMED" or sub["term_end_date"] is None:
            raise InvalidState("Only a TERMED subscription can be renewed", path)
        start = sub["term_end_date"]
        await _save(
            run,
            sub,
            term_start_date=start,
            term_end_date=add_months(start, int(sub["renewal_term"] or sub["initial_term"] or 12)),
            version=sub["version"] + 1,
        )
    elif a.kind == "terms_and_conditions":
        terms = subscription_terms(b, path, sub)
        end = (
            add_months(sub["term_start_date"], int(terms["initial_term"]))
            if terms["term_type"] == "TERMED"
            else None
        )
        await _save(run, sub, term_end_date=end, version=sub["version"] + 1, **terms)
    elif a.kind == "owner_transfer":
        dest_no = b.get("destination_account_number")
        inv_no = b.get("destination_invoice_account_number")
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
    else:  # pragma: no cover - parse_groups admits only known kinds
        raise ValidationFailed(f"Unknown action {a.kind}", path)


async def _update_product(
    run: _Run, sub: dict[str, Any], b: dict[str, Any], eff: date, path: list[str]
) -> None:
    s = run.session
    number = b.get("charge_number")
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
    if b.get("price") is None and b.get("quantity") is None:
        raise ValidationFailed("Give a new price and/or quantity", path)
    if eff < seg["effective_start_date"]:
        raise ValidationFailed(
            "effectiveDate is before the charge's current segment starts", [*path, "effectiveDate"]
        )
    price = (
        check_price(b["price"], [*path, "price"]) if b.get("price") is not None else seg["price"]
    )
    qty = (
        check_quantity(b["quantity"], [*path, "quantity"])
        if b.get("quantity") is not None
        else seg["quantity"]
    )
    mrr = charge_mrr(seg["charge_type"], seg["charge_model"], price, qty, seg["billing_period"])
    if eff == seg["effective_start_date"] and seg["charged_through_date"] is None:
        await s.execute(
            update(SC).where(SC.c.id == seg["id"]).values(price=price, quantity=qty, mrr=mrr)
        )
        return
    await s.execute(
        update(SC).where(SC.c.id == seg["id"]).values(effective_end_date=eff, is_last_segment=False)
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


async def _cancel(
    run: _Run, sub: dict[str, Any], b: dict[str, Any], eff: date, path: list[str]
) -> None:
    s = run.session
    policy = b.get("cancellation_policy") or "SPECIFIC_DATE"
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
        when_path = [*path, "cancellationEffectiveDate"]
        when = parse_date(b.get("cancellation_effective_date"), when_path) or eff
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
    await _save(run, sub, status="CANCELLED", cancelled_date=when, version=sub["version"] + 1)


# --------------------------------------------------------------------------- reads


async def get_order(
    session: AsyncSession, tenant_id: int, *, order_id: int | None = None, number: str | None = None
) -> RowMapping | None:
    """An order with its account number, by id or number."""
    stmt = select(
        SO,
        text(
            "(SELECT account_number FROM account WHERE id = sales_order.account_id) "
            "AS account_number"
        ),
    ).where(SO.c.tenant_id == tenant_id)
    stmt = (
        stmt.where(SO.c.id == order_id)
        if order_id is not None
        else stmt.where(SO.c.order_number == number)
    )
    return (await session.execute(stmt)).mappings().one_or_none()


async def order_actions(session: AsyncSession, order_ids: list[int]) -> dict[int, list[RowMapping]]:
    """The actions of orders, in sequence, with their subscription numbers."""
    out: dict[int, list[RowMapping]] = {i: [] for i in order_ids}
    if order_ids:
        res = await session.execute(
            text(
                "SELECT oa.*, s.subscription_number FROM order_action oa JOIN subscription s "
                "ON s.id = oa.subscription_id WHERE oa.order_id = ANY(:i) "
                "ORDER BY oa.order_id, oa.sequence"
            ),
            {"i": order_ids},
        )
        for r in res.mappings():
            out[r["order_id"]].append(r)
    return out


async def orders_of_account(
    session: AsyncSession, account_id: int, first: int | None, after: str | None
) -> Page:
    """Orders placed on the account, oldest first."""
    stmt = select(
        SO,
        text(
            "(SELECT account_number FROM account WHERE id = sales_order.account_id) "
            "AS account_number"
        ),
    ).where(SO.c.account_id == account_id)
    return await paginate(session, stmt, SO.c.id, first, after)


# --------------------------------------------------------------------------- async order jobs


def order_job_id(tenant_id: int, idempotency_key: str | None, fresh: str) -> str:
    """Deterministic job id: from the idempotency key when there is one."""
    if idempotency_key:
        return "ord-" + hashlib.sha256(f"{tenant_id}:{idempotency_key}".encode()).hexdigest()[:32]
    return "ord-" + fresh


async def create_order_job(
    session: AsyncSession, tenant_id: int, job_id: str, data: dict[str, Any]
) -> tuple[RowMapping, bool]:
    """Record an asynchronous order as QUEUED; a repeat with the same id and input returns the
    first job (second value False: nothing new to enqueue)."""
    payload = jsonable(data)
    res = await session.execute(
        text(
            "INSERT INTO job (id, tenant_id, kind, status, input, errors) VALUES "
            "(:id, :t, 'create_order', 'QUEUED', CAST(:i AS json), CAST('[]' AS json)) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {"id": job_id, "t": tenant_id, "i": json.dumps(payload)},
    )
    created = res.first() is not None
    row = await get_job(session, tenant_id, job_id)
    if row is None:
        raise NotFound(f"Job {job_id} not found")
    if not created and input_hash(row["input"]) != input_hash(payload):
        raise IdempotencyKeyReused(
            "The idempotency key was used with a different order", ["idempotencyKey"]
        )
    return row, created


async def get_job(
    session: AsyncSession, tenant_id: int, job_id: str, *, for_update: bool = False
) -> RowMapping | None:
    """A job of the tenant."""
    stmt = select(J).where(J.c.tenant_id == tenant_id, J.c.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().one_or_none()


async def claim_job_any_tenant(session: AsyncSession, job_id: str) -> RowMapping | None:
    """The job row locked for this run (the worker does not know the tenant beforehand)."""
    return (
        (await session.execute(select(J).where(J.c.id == job_id).with_for_update()))
        .mappings()
        .one_or_none()
    )


async def set_job(
    session: AsyncSession,
    job_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Move a job to a status, with its result or errors."""
    values: dict[str, Any] = {"status": status, "updated_at": text("now()")}
    if result is not None:
        values["result"] = result
    if errors is not None:
        values["errors"] = errors
    await session.execute(update(J).where(J.c.id == job_id).values(**values))

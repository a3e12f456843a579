"""Rating: which service periods of a subscription charge are due, and for how much.

Conventions (domain.md section 8):

* dates are half-open: a segment covers ``[effective_start_date, effective_end_date)``, a
  cancelled subscription ``[.., cancelled_date)``, and ``charged_through_date`` is the first
  day not billed yet;
* billing periods align to the invoice owner's bill cycle day (31 = the month's last day):
  the first period runs from the charge's start to the first cycle date on or after it
  (prorated), then whole periods of 1, 3, 6 or 12 months from that cycle date;
* a period shorter than its aligned period (first, last, segment edge, cancellation) is
  prorated by actual days over the aligned period's days; suspended days are not billed;
* IN_ADVANCE bills a period once its start <= targetDate, IN_ARREARS once its last day
  < targetDate; ONE_TIME bills once on its effective date.

The pure part (:func:`rate_charge`) knows nothing about the database; the DB part streams a
set of subscriptions through it in keyset batches, inserts items with COPY and moves
``charged_through_date`` in bulk (the due charges are read ``FOR UPDATE``, so a bill run and
an order's runBilling on the same subscription never bill a period twice), so one account
with 100,000 subscriptions is one transaction that never holds all its charges in memory.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, bindparam, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.invoices import due_date_for
from billing.metrics import MetricsWriter
from billing.money import ZERO, quantize
from db.models import Invoice, InvoiceItem, table_of
from db.statuses import BillingTiming, ChargeModel, ChargeType, InvoiceSource, InvoiceStatus

invoice_t = table_of(Invoice)
invoice_item_t = table_of(InvoiceItem)

PERIOD_MONTHS = {"MONTH": 1, "QUARTER": 3, "SEMI_ANNUAL": 6, "ANNUAL": 12}
SUBSCRIPTION_BATCH = 2_000
ONE_DAY = timedelta(days=1)


# --------------------------------------------------------------------------- pure rating


def cycle_date(year: int, month: int, bcd: int) -> date:
    """The bill cycle day of that month, clamped to the month's last day (31 = month end)."""
    return date(year, month, min(bcd, calendar.monthrange(year, month)[1]))


def add_cycle_months(d: date, months: int, bcd: int) -> date:
    """The cycle date ``months`` months after the month of ``d``."""
    m = d.month - 1 + months
    return cycle_date(d.year + m // 12, m % 12 + 1, bcd)


def first_cycle_date(start: date, bcd: int) -> date:
    """The first cycle date on or after ``start``."""
    c = cycle_date(start.year, start.month, bcd)
    return c if c >= start else add_cycle_months(c, 1, bcd)


@dataclass(frozen=True)
class ChargeSpec:
    """What rating needs of one subscription charge segment."""

    charge_type: str  # ONE_TIME | RECURRING | USAGE
    charge_model: str  # FLAT_FEE | PER_UNIT
    price: Decimal
    quantity: Decimal
    billing_period: str = "MONTH"
    billing_timing: str = BillingTiming.IN_ADVANCE
    start: date = date(2000, 1, 1)  # this segment's effective start
    end: date | None = None  # exclusive: segment end or cancellation
    charge_start: date | None = None  # first segment's start: the period alignment anchor
    charged_through: date | None = None  # exclusive


@dataclass(frozen=True)
class RatedItem:
    service_start: date
    service_end: date  # inclusive last day
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    charged_through: date  # the charge's chargedThroughDate after this item (exclusive)


def _overlap(a0: date, a1: date, b0: date, b1: date | None) -> int:
    lo = max(a0, b0)
    hi = a1 if b1 is None else min(a1, b1)
    return max(0, (hi - lo).days)


def aligned_periods(anchor: date, bcd: int, months: int) -> Iterable[tuple[date, date]]:
    """Aligned periods ``[a, b)`` from the charge's start: a partial one to the first cycle
    date (when the start is off-cycle), then whole periods of ``months`` months."""
    first = first_cycle_date(anchor, bcd)
    if first > anchor:
        yield add_cycle_months(first, -months, bcd), first
    a = first
    while True:
        b = add_cycle_months(a, months, bcd)
        yield a, b
        a = b


def rate_charge(
    spec: ChargeSpec,
    bcd: int,
    target_date: date,
    currency: str,
    suspensions: Iterable[tuple[date, date | None]] = (),
) -> list[RatedItem]:
    """The items due for one charge segment by ``target_date`` (nothing already billed)."""
    if spec.end is not None and spec.end <= spec.start:
        return []
    unit = spec.price
    full = spec.price * spec.quantity if spec.charge_model == ChargeModel.PER_UNIT else spec.price
    if spec.charge_type == ChargeType.ONE_TIME:
        if spec.charged_through is not None or spec.start > target_date:
            return []
        return [
            RatedItem(
                spec.start,
                spec.start,
                spec.quantity,
                unit,
                quantize(full, currency),
                spec.start + ONE_DAY,
            )
        ]
    if spec.charge_type != ChargeType.RECURRING:
        return []  # usage is rated from usage records, which this service does not take
    months = PERIOD_MONTHS[spec.billing_period]
    susp = list(suspensions)
    frm = max(spec.start, spec.charged_through or spec.start)
    out: list[RatedItem] = []
    for a, b in aligned_periods(spec.charge_start or spec.start, bcd, months):
        if spec.end is not None and a >= spec.end:
            break
        if a > target_date:
            break
        s0 = max(a, frm)
        s1 = b if spec.end is None else min(b, spec.end)
        if s1 <= s0:
            continue
        if spec.billing_timing == BillingTiming.IN_ARREARS:
            if s1 - ONE_DAY >= target_date:  # its last day must be before targetDate
                break
        elif s0 > target_date:
            break
        if any(x1 is None and x0 < s1 for x0, x1 in susp):
            break  # suspended with no resume date yet: billed once resumed, days known
        days = (s1 - s0).days - sum(_overlap(s0, s1, x0, x1) for x0, x1 in susp)
        period_days = (b - a).days
        if days == period_days:
            amount = quantize(full, currency)
        else:
            amount = quantize(full * days / period_days, currency)
        # A wholly suspended period bills nothing (amount 0, no item) but is passed over.
        out.append(
            RatedItem(s0, s1 - ONE_DAY, spec.quantity, unit, amount if days > 0 else ZERO, s1)
        )
        frm = s1
    return out


# --------------------------------------------------------------------------- the database part

_CHARGES = text(
    """
    SELECT c.id, c.subscription_id, c.name, c.charge_type, c.charge_model, c.price, c.quantity,
           c.billing_period, c.billing_timing, c.effective_start_date, c.effective_end_date,
           c.charged_through_date,
           CASE WHEN c.segment > 1 THEN (
               SELECT min(c2.effective_start_date) FROM subscription_charge c2
               WHERE c2.tenant_id = c.tenant_id AND c2.charge_number = c.charge_number)
             ELSE c.effective_start_date END AS charge_start
    FROM subscription_charge c
    WHERE c.subscription_id = ANY(:sids)
      AND c.charge_type IN ('ONE_TIME', 'RECURRING')
      AND c.effective_start_date <= :t
      AND (c.charged_through_date IS NULL
           OR (c.charge_type = 'RECURRING' AND c.charged_through_date <= :t
               AND (c.effective_end_date IS NULL OR c.charged_through_date < c.effective_end_date)))
    ORDER BY c.subscription_id, c.id
    FOR UPDATE OF c
    """
).bindparams(bindparam("sids", type_=ARRAY(BigInteger)), bindparam("t", type_=Date))

_SUSPENSIONS = text(
    "SELECT subscription_id, start_date, end_date FROM subscription_suspension "
    "WHERE subscription_id = ANY(:sids)"
).bindparams(bindparam("sids", type_=ARRAY(BigInteger)))

_MOVE_CTD = text(
    """
    UPDATE subscription_charge c SET charged_through_date = v.ctd
    FROM unnest(:ids, :ctds) AS v(id, ctd) WHERE c.id = v.id
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("ctds", type_=ARRAY(Date)))

_ITEM_COLUMNS = (
    "tenant_id",
    "invoice_id",
    "charge_name",
    "subscription_id",
    "subscription_charge_id",
    "service_start_date",
    "service_end_date",
    "quantity",
    "unit_price",
    "amount",
    "previous_charged_through_date",
)


@dataclass
class InvoiceSpec:
    """How the invoices of one run are made."""

    tenant_id: int
    target_date: date
    invoice_date: date
    source: str  # BILL_RUN | ORDER
    bill_run_id: int | None = None
    order_id: int | None = None


@dataclass
class _Open:
    invoice_id: int
    account_id: int
    amount: Decimal = ZERO
    items: int = 0


@dataclass
class BillingResult:
    invoice_ids: list[int] = field(default_factory=list)
    items: int = 0
    amounts: dict[int, Decimal] = field(default_factory=dict)  # invoice id -> amount


async def _copy_items(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is not None and hasattr(driver, "copy_records_to_table"):
        await driver.copy_records_to_table("invoice_item", records=rows, columns=_ITEM_COLUMNS)
    else:  # pragma: no cover - another driver: plain Core bulk insert
        await session.execute(
            insert(invoice_item_t), [dict(zip(_ITEM_COLUMNS, r, strict=True)) for r in rows]
        )


async def _subscription_batches(
    session: AsyncSession,
    tenant_id: int,
    *,
    invoice_owner_id: int | None,
    subscription_ids: list[int] | None,
) -> Any:
    """Keyset batches of subscriptions:
    (id, invoice_owner_account_id, currency, invoice_separately, cancelled_date)."""
    last = 0
    params: dict[str, Any]
    while True:
        if subscription_ids is not None:
            cond, params = "id = ANY(:ids)", {"ids": subscription_ids}
            stmt = text(
                "SELECT id, invoice_owner_account_id, currency, invoice_separately, "
                "cancelled_date "
                f"FROM subscription WHERE tenant_id = :t AND {cond} AND id > :last "
                f"ORDER BY id LIMIT :n"
            ).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))
        else:
            params = {"o": invoice_owner_id}
            stmt = text(
                "SELECT id, invoice_owner_account_id, currency, invoice_separately, cancelled_date "
                "FROM subscription WHERE tenant_id = :t AND invoice_owner_account_id = :o "
                "AND id > :last ORDER BY id LIMIT :n"
            )
        rows = (
            await session.execute(
                stmt, {"t": tenant_id, "last": last, "n": SUBSCRIPTION_BATCH, **params}
            )
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


async def bill_subscriptions(
    session: AsyncSession,
    spec: InvoiceSpec,
    *,
    invoice_owner_id: int | None = None,
    subscription_ids: list[int] | None = None,
) -> BillingResult:
    """Rate every due charge of the chosen subscriptions into DRAFT invoices.

    One invoice per (invoice owner, currency), one of its own per invoiceSeparately
    subscription; invoices are only made when something is due. Flushes, never commits."""
    tenant_id = spec.tenant_id
    bcd_of: dict[int, tuple[int, str]] = {}
    opened: dict[tuple[int, str, int | None], _Open] = {}
    result = BillingResult()
    async for subs in _subscription_batches(
        session, tenant_id, invoice_owner_id=invoice_owner_id, subscription_ids=subscription_ids
    ):
        owners = {r[1] for r in subs} - set(bcd_of)
        if owners:
            res = await session.execute(
                text(
                    "SELECT id, bill_cycle_day, payment_term FROM account WHERE id = ANY(:a)"
                ).bindparams(bindparam("a", type_=ARRAY(BigInteger))),
                {"a": list(owners)},
            )
            bcd_of.update({r[0]: (r[1], r[2]) for r in res})
        sub_of = {r[0]: r for r in subs}
        sids = list(sub_of)
        susp: dict[int, list[tuple[date, date | None]]] = {}
        for sid, s0, s1 in await session.execute(_SUSPENSIONS, {"sids": sids}):
            susp.setdefault(sid, []).append((s0, s1))
        charges = (await session.execute(_CHARGES, {"sids": sids, "t": spec.target_date})).all()
        rows: list[tuple[Any, ...]] = []
        ctd_ids: list[int] = []
        ctds: list[date] = []
        for c in charges:
            sub = sub_of[c.subscription_id]
            _, owner, currency, separately, cancelled = sub
            end = c.effective_end_date
            if cancelled is not None and (end is None or cancelled < end):
                end = cancelled
            items = rate_charge(
                ChargeSpec(
                    charge_type=c.charge_type,
                    charge_model=c.charge_model,
                    price=c.price,
                    quantity=c.quantity,
                    billing_period=c.billing_period,
                    billing_timing=c.billing_timing,
                    start=c.effective_start_date,
                    end=end,
                    charge_start=c.charge_start,
                    charged_through=c.charged_through_date,
                ),
                bcd_of[owner][0],
                spec.target_date,
                currency,
                susp.get(c.subscription_id, ()),
            )
            if not items:
                continue
            key = (owner, currency, c.subscription_id if separately else None)
            inv = opened.get(key)
            if inv is None:
                inv = opened[key] = await _open_invoice(
                    session, spec, owner, currency, key[2], bcd_of[owner][1]
                )
                result.invoice_ids.append(inv.invoice_id)
            prev = c.charged_through_date
            for it in items:
                if it.amount != ZERO:
                    rows.append(
                        (
                            tenant_id,
                            inv.invoice_id,
                            c.name,
                            c.subscription_id,
                            c.id,
                            it.service_start,
                            it.service_end,
                            it.quantity,
                            it.unit_price,
                            it.amount,
                            prev,
                        )
                    )
                    inv.amount += it.amount
                    inv.items += 1
                prev = it.charged_through
            ctd_ids.append(c.id)
            ctds.append(items[-1].charged_through)
        await _copy_items(session, rows)
        result.items += len(rows)
        if ctd_ids:
            await session.execute(_MOVE_CTD, {"ids": ctd_ids, "ctds": ctds})
    for inv in opened.values():
        await session.execute(
            update(invoice_t)
            .where(invoice_t.c.id == inv.invoice_id)
            .values(amount=inv.amount, balance=inv.amount)
        )
        result.amounts[inv.invoice_id] = inv.amount
    return result


async def _open_invoice(
    session: AsyncSession,
    spec: InvoiceSpec,
    account_id: int,
    currency: str,
    subscription_id: int | None,
    payment_term: str,
) -> _Open:
    number = await numbering.next_number(session, spec.tenant_id, "invoice")
    invoice_id = (
        await session.execute(
            insert(invoice_t)
            .values(
                tenant_id=spec.tenant_id,
                invoice_number=number,
                account_id=account_id,
                currency=currency,
                invoice_date=spec.invoice_date,
                due_date=due_date_for(spec.invoice_date, payment_term),
                target_date=spec.target_date,
                status=InvoiceStatus.DRAFT,
                amount=ZERO,
                balance=ZERO,
                source=spec.source,
                bill_run_id=spec.bill_run_id,
                order_id=spec.order_id,
                subscription_id=subscription_id,
            )
            .returning(invoice_t.c.id)
        )
    ).scalar_one()
    return _Open(invoice_id, account_id)


async def post_invoices(session: AsyncSession, tenant_id: int, invoice_ids: list[int]) -> int:
    """Post DRAFT invoices (a few hundred at most per call: one lock per account); the
    metrics move through MetricsWriter, deferred for partner accounts. Returns how many."""
    if not invoice_ids:
        return 0
    ids_param = bindparam("ids", type_=ARRAY(BigInteger))
    accounts = (
        (
            await session.execute(
                text(
                    "SELECT DISTINCT account_id FROM invoice "
                    "WHERE id = ANY(:ids) AND status = 'DRAFT'"
                ).bindparams(ids_param),
                {"ids": invoice_ids},
            )
        )
        .scalars()
        .all()
    )
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(*accounts)
    posted = (
        await session.execute(
            text(
                "UPDATE invoice SET status = 'POSTED', balance = amount, posted_at = now() "
                "WHERE id = ANY(:ids) AND status = 'DRAFT' RETURNING account_id, amount"
            ).bindparams(ids_param),
            {"ids": invoice_ids},
        )
    ).all()
    for account_id, amount in posted:
        writer.add(account_id, invoice_balance=amount, invoice_dates=True)
    await writer.flush()
    return len(posted)


async def bill_order_subscriptions(
    session: AsyncSession,
    tenant_id: int,
    order_id: int,
    subscription_ids: list[int],
    target_date: date,
    draft: bool,
) -> list[int]:
    """runBilling of createOrder: invoices (source ORDER) for what the order's subscriptions
    owe by ``target_date``, posted unless ``draft``. Returns the invoice ids."""
    if not subscription_ids:
        return []
    spec = InvoiceSpec(tenant_id, target_date, target_date, InvoiceSource.ORDER, order_id=order_id)
    result = await bill_subscriptions(session, spec, subscription_ids=sorted(set(subscription_ids)))
    if not draft:
        await post_invoices(session, tenant_id, result.invoice_ids)
    return result.invoice_ids

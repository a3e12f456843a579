"""Rating: hand-computed invoice items for the period, proration and timing rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing.rating import ChargeSpec, bill_order_subscriptions, rate_charge
from tests import rating_fixtures as rf

D = Decimal


def spec(**kw: Any) -> ChargeSpec:
    base: dict[str, Any] = {
        "charge_type": "RECURRING",
        "charge_model": "FLAT_FEE",
        "price": D("31"),
        "quantity": D("1"),
        "billing_period": "MONTH",
        "billing_timing": "IN_ADVANCE",
        "start": date(2026, 1, 1),
    }
    base.update(kw)
    return ChargeSpec(**base)


def d(m: int, day: int, y: int = 2026) -> date:
    return date(y, m, day)


# (name, spec, bcd, target, suspensions, [(start, end, amount)], chargedThroughDate after)
CASES: list[
    tuple[str, ChargeSpec, int, date, list[Any], list[tuple[date, date, str]], date | None]
] = [
    (
        "monthly in advance, whole months",
        spec(),
        1,
        d(2, 1),
        [],
        [(d(1, 1), d(1, 31), "31.00"), (d(2, 1), d(2, 28), "31.00")],
        d(3, 1),
    ),
    (
        "in advance, target the day before a period: not billed",
        spec(),
        1,
        d(1, 31),
        [],
        [(d(1, 1), d(1, 31), "31.00")],
        d(2, 1),
    ),
    (
        "mid-month start prorated by actual days (17/31 of 30)",
        spec(price=D("30"), start=d(1, 15)),
        1,
        d(1, 15),
        [],
        [(d(1, 15), d(1, 31), "16.45")],
        d(2, 1),
    ),
    (
        "in arrears: billed once the period's last day < target",
        spec(billing_timing="IN_ARREARS"),
        1,
        d(2, 1),
        [],
        [(d(1, 1), d(1, 31), "31.00")],
        d(2, 1),
    ),
    (
        "in arrears: last day == target is not billed",
        spec(billing_timing="IN_ARREARS"),
        1,
        d(1, 31),
        [],
        [],
        None,
    ),
    (
        "in arrears partial first period",
        spec(billing_timing="IN_ARREARS", start=d(1, 20)),
        1,
        d(2, 10),
        [],
        [(d(1, 20), d(1, 31), "12.00")],
        d(2, 1),
    ),
    (
        "BCD 31 spans February: Jan 31 - Feb 27, Feb 28 - Mar 30",
        spec(start=d(1, 31)),
        31,
        d(3, 1),
        [],
        [(d(1, 31), d(2, 27), "31.00"), (d(2, 28), d(3, 30), "31.00")],
        d(3, 31),
    ),
    (
        "BCD 31, start Feb 10: 18 of 28 days to Feb 28",
        spec(price=D("28"), start=d(2, 10)),
        31,
        d(2, 10),
        [],
        [(d(2, 10), d(2, 27), "18.00")],
        d(2, 28),
    ),
    (
        "quarterly on a mid-quarter start: 14/90 then a whole quarter",
        spec(price=D("90"), billing_period="QUARTER", start=d(2, 15)),
        1,
        d(3, 1),
        [],
        [(d(2, 15), d(2, 28), "14.00"), (d(3, 1), d(5, 31), "90.00")],
        d(6, 1),
    ),
    (
        "semi-annual",
        spec(price=D("60"), billing_period="SEMI_ANNUAL", start=d(4, 1)),
        1,
        d(4, 1),
        [],
        [(d(4, 1), d(9, 30), "60.00")],
        d(10, 1),
    ),
    (
        "annual, BCD 15, start Jan 1: 14/365 stub then a year",
        spec(price=D("365"), billing_period="ANNUAL"),
        15,
        d(1, 15),
        [],
        [(d(1, 1), d(1, 14), "14.00"), (d(1, 15), d(1, 14, 2027), "365.00")],
        d(1, 15, 2027),
    ),
    (
        "per unit: price x quantity",
        spec(charge_model="PER_UNIT", price=D("10.5"), quantity=D("3")),
        1,
        d(1, 1),
        [],
        [(d(1, 1), d(1, 31), "31.50")],
        d(2, 1),
    ),
    (
        "one-time, per unit, billed once",
        spec(
            charge_type="ONE_TIME",
            charge_model="PER_UNIT",
            price=D("100"),
            quantity=D("2"),
            start=d(1, 5),
        ),
        1,
        d(3, 1),
        [],
        [(d(1, 5), d(1, 5), "200.00")],
        d(1, 6),
    ),
    (
        "one-time in the future: nothing",
        spec(charge_type="ONE_TIME", start=d(3, 5)),
        1,
        d(3, 1),
        [],
        [],
        None,
    ),
    (
        "one-time already billed: nothing",
        spec(charge_type="ONE_TIME", charged_through=d(1, 2)),
        1,
        d(3, 1),
        [],
        [],
        None,
    ),
    (
        "chargedThroughDate: only later periods",
        spec(charged_through=d(2, 1)),
        1,
        d(3, 1),
        [],
        [(d(2, 1), d(2, 28), "31.00"), (d(3, 1), d(3, 31), "31.00")],
        d(4, 1),
    ),
    (
        "suspended Mar 10 - resumed Mar 20: 21 of 31 days",
        spec(),
        1,
        d(3, 1),
        [(d(3, 10), d(3, 20))],
        [(d(1, 1), d(1, 31), "31.00"), (d(2, 1), d(2, 28), "31.00"), (d(3, 1), d(3, 31), "21.00")],
        d(4, 1),
    ),
    (
        "suspended Feb 10, no resume yet: stops before the suspended period",
        spec(price=D("28")),
        1,
        d(3, 1),
        [(d(2, 10), None)],
        [(d(1, 1), d(1, 31), "28.00")],
        d(2, 1),
    ),
    (
        "resumed Mar 10 after a Feb 10 suspension: 9/28 of Feb, 22/31 of Mar",
        spec(price=D("28"), charged_through=d(2, 1)),
        1,
        d(3, 1),
        [(d(2, 10), d(3, 10))],
        [(d(2, 1), d(2, 28), "9.00"), (d(3, 1), d(3, 31), "19.87")],
        d(4, 1),
    ),
    (
        "cancelled Feb 15: billed up to the cancellation date",
        spec(price=D("28"), end=d(2, 15)),
        1,
        d(3, 1),
        [],
        [(d(1, 1), d(1, 31), "28.00"), (d(2, 1), d(2, 14), "14.00")],
        d(2, 15),
    ),
    (
        "segment 1 of an UpdateProduct ends Feb 15",
        spec(price=D("10"), end=d(2, 15)),
        1,
        d(3, 1),
        [],
        [(d(1, 1), d(1, 31), "10.00"), (d(2, 1), d(2, 14), "5.00")],
        d(2, 15),
    ),
    (
        "segment 2 from Feb 15 keeps the charge's alignment",
        spec(price=D("20"), start=d(2, 15), charge_start=d(1, 1)),
        1,
        d(3, 1),
        [],
        [(d(2, 15), d(2, 28), "10.00"), (d(3, 1), d(3, 31), "20.00")],
        d(4, 1),
    ),
    ("usage charges are not rated here", spec(charge_type="USAGE"), 1, d(3, 1), [], [], None),
    (
        "JPY rounds to whole yen",
        spec(price=D("1000"), start=d(1, 15)),
        1,
        d(1, 15),
        [],
        [(d(1, 15), d(1, 31), "548")],
        d(2, 1),
    ),
]


@pytest.mark.parametrize(
    ("name", "charge", "bcd", "target", "susp", "expected", "ctd"), CASES, ids=[c[0] for c in CASES]
)
def test_rate_charge(
    name: str,
    charge: ChargeSpec,
    bcd: int,
    target: date,
    susp: list[Any],
    expected: list[tuple[date, date, str]],
    ctd: date | None,
) -> None:
    currency = "JPY" if "JPY" in name else "USD"
    items = rate_charge(charge, bcd, target, currency, susp)
    assert [(i.service_start, i.service_end, str(i.amount)) for i in items] == expected
    assert (items[-1].charged_through if items else None) == ctd


async def test_order_billing_segments_cancellation_and_suspension(
    sessionmaker: Any, tenant: Any
) -> None:
    """runBilling through the database: segments, a cancelled and a suspended subscription,
    one-time and quarterly charges, one invoice per invoice owner; posting moves metrics."""
    t = tenant.id
    async with sessionmaker.begin() as s:
        owner = await rf.account(s, t, bcd=1)
        sub1 = await rf.subscription(
            s,
            t,
            owner["id"],
            start=d(1, 1),
            charges=[
                {
                    "name": "Seat",
                    "price": "10",
                    "end": d(2, 15),
                    "charge_number": f"SEG{t}",
                    "segment": 1,
                    "is_last_segment": False,
                },
                {
                    "name": "Seat",
                    "price": "20",
                    "start": d(2, 15),
                    "charge_number": f"SEG{t}",
                    "segment": 2,
                },
                {"name": "Setup", "charge_type": "ONE_TIME", "price": "50"},
            ],
        )
        sub2 = await rf.subscription(
            s,
            t,
            owner["id"],
            start=d(2, 15),
            cancelled=d(3, 15),
            charges=[
                {"name": "Quarterly", "price": "90", "billing_period": "QUARTER"},
            ],
        )
        sub3 = await rf.subscription(
            s,
            t,
            owner["id"],
            start=d(1, 1),
            charges=[
                {"name": "Paused", "price": "31", "billing_timing": "IN_ARREARS"},
            ],
        )
        await rf.suspend(s, t, sub3["id"], d(1, 11), d(1, 21))
        order_id = (
            await s.execute(
                text(
                    "INSERT INTO sales_order (tenant_id, order_number, "
                    "account_id, order_date, status) "
                    "VALUES (:t, 'O1', :a, :d, 'COMPLETED') RETURNING id"
                ),
                {"t": t, "a": owner["id"], "d": d(3, 1)},
            )
        ).scalar_one()
        ids = await bill_order_subscriptions(
            s, t, order_id, [sub1["id"], sub2["id"], sub3["id"]], d(3, 1), draft=False
        )
    assert len(ids) == 1
    async with sessionmaker() as s:
        items = await rf.items_of(s, ids[0])
        inv = (
            await s.execute(
                text("SELECT status, amount, source, order_id FROM invoice WHERE id = :i"),
                {"i": ids[0]},
            )
        ).one()
        metrics = (
            await s.execute(
                text(
                    "SELECT total_invoice_balance, last_invoice_date FROM account_metrics "
                    "WHERE account_id = :a"
                ),
                {"a": owner["id"]},
            )
        ).one()
        ctd = dict(
            (
                await s.execute(
                    text(
                        "SELECT name || segment, charged_through_date FROM subscription_charge "
                        "WHERE subscription_id = ANY(:s)"
                    ),
                    {"s": [sub1["id"], sub2["id"], sub3["id"]]},
                )
            ).all()
        )
    one = D("1")
    assert items == [
        ("Seat", d(1, 1), d(1, 31), D("1.0000"), D("10.0000"), D("10.0000")),
        ("Seat", d(2, 1), d(2, 14), one, D("10"), D("5.00")),
        ("Seat", d(2, 15), d(2, 28), one, D("20"), D("10.00")),
        ("Seat", d(3, 1), d(3, 31), one, D("20"), D("20.00")),
        ("Setup", d(1, 1), d(1, 1), one, D("50"), D("50.00")),
        ("Quarterly", d(2, 15), d(2, 28), one, D("90"), D("14.00")),
        ("Quarterly", d(3, 1), d(3, 14), one, D("90"), D("13.70")),  # 14/92 of 90
        ("Paused", d(1, 1), d(1, 31), one, D("31"), D("21.00")),
        ("Paused", d(2, 1), d(2, 28), one, D("31"), D("31.00")),
    ]
    assert inv == ("POSTED", D("174.70"), "ORDER", order_id)
    assert metrics == (D("174.70"), d(3, 1))
    assert ctd == {
        "Seat1": d(2, 15),
        "Seat2": d(4, 1),
        "Setup1": d(1, 2),
        "Quarterly1": d(3, 15),
        "Paused1": d(3, 1),
    }
    # A second billing over the same dates makes nothing.
    async with sessionmaker.begin() as s:
        again = await bill_order_subscriptions(
            s, t, order_id, [sub1["id"], sub2["id"], sub3["id"]], d(3, 1), draft=True
        )
    assert again == []

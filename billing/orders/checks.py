"""Checks and prices shared by every order path: terms, rate plans and their charges."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date
from typing import Any

from billing.catalog import BILLING_PERIODS
from billing.errors import NotFound, ValidationFailed
from billing.money import check_price, check_quantity
from billing.orders.data import (
    TERM_TYPES,
    AddProduct,
    ChargeOverride,
    RatePlan,
    Terms,
    TermsAndConditions,
)
from billing.subscriptions import charge_mrr
from db.statuses import TermType

NO_OVERRIDE = ChargeOverride(None)


def add_months(d: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's end."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def subscription_terms(
    body: Terms | TermsAndConditions, path: list[str], current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A subscription's terms from an action's input over its current ones (defaults: TERMED,
    12 and 12 months, no auto-renew); a TERMED term is 1-1200 months."""
    cur = current or {
        "term_type": TermType.TERMED,
        "initial_term": 12,
        "renewal_term": 12,
        "auto_renew": False,
    }
    term_type = body.term_type or cur["term_type"]
    if term_type not in TERM_TYPES:
        raise ValidationFailed("termType must be TERMED or EVERGREEN", [*path, "termType"])
    out = {
        "term_type": term_type,
        "initial_term": body.initial_term if body.initial_term is not None else cur["initial_term"],
        "renewal_term": body.renewal_term if body.renewal_term is not None else cur["renewal_term"],
        "auto_renew": body.auto_renew if body.auto_renew is not None else cur["auto_renew"],
    }
    for key, name in (("initial_term", "initialTerm"), ("renewal_term", "renewalTerm")):
        v = out[key]
        if term_type == TermType.TERMED and (v is None or not 1 <= int(v) <= 1200):
            raise ValidationFailed(
                f"{name} must be 1-1200 months for a TERMED subscription", [*path, name]
            )
    return out


def rate_plan_number(rp: RatePlan | AddProduct, path: list[str]) -> str:
    """The catalog rate plan an order's rate plan names (required)."""
    number = rp.product_rate_plan_number
    if not number:
        raise ValidationFailed(
            "productRatePlanNumber is required", [*path, "productRatePlanNumber"]
        )
    return str(number)


def plan_rows(
    tenant_id: int,
    plan_number: str,
    charges: Sequence[Any],
    rp: RatePlan | AddProduct,
    eff: date,
    path: list[str],
    end: date | None = None,
) -> list[dict[str, Any]]:
    """The charge rows of one of an order's rate plans (without subscription, rate plan and
    charge number): the catalog's charges with the order's overrides, checked."""
    number = plan_number
    overrides: dict[str, tuple[ChargeOverride, list[str]]] = {}
    known = {c["charge_number"] for c in charges}
    for i, o in enumerate(rp.charge_overrides):
        opath = [*path, "chargeOverrides", str(i)]
        cn = o.product_rate_plan_charge_number
        if cn not in known:
            raise NotFound(
                f"Charge {cn} is not part of rate plan {number}",
                [*opath, "productRatePlanChargeNumber"],
            )
        if cn in overrides:
            raise ValidationFailed(
                f"Charge {cn} is overridden twice", [*opath, "productRatePlanChargeNumber"]
            )
        assert cn is not None  # a known charge number
        overrides[cn] = (o, opath)
    rows = []
    for c in charges:
        o, opath = overrides.get(c["charge_number"], (NO_OVERRIDE, path))
        price = check_price(o.price, [*opath, "price"]) if o.price is not None else c["list_price"]
        qty = (
            check_quantity(o.quantity, [*opath, "quantity"])
            if o.quantity is not None
            else c["default_quantity"]
        )
        period = o.billing_period or c["billing_period"]
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

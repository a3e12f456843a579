"""Rows of catalog, subscriptions, orders and jobs to GraphQL objects."""

from __future__ import annotations

from typing import Any

import strawberry

from billing.catalog import ProductTree
from billing.money import exact_out
from billing.orders import CreatedOrder
from billing.orders.data import jsonable
from billing.subscriptions import SubscriptionTree
from resolvers.convert import gid
from schema.catalog import (
    BillingPeriod,
    BillingTiming,
    ChargeModel,
    ChargeType,
    Product,
    ProductRatePlan,
    ProductRatePlanCharge,
)
from schema.errors import ERROR_TYPES, ErrorCode
from schema.orders import (
    Job,
    JobStatus,
    Order,
    OrderAction,
    OrderStatus,
    Subscription,
    SubscriptionCharge,
    SubscriptionRatePlan,
    SubscriptionStatus,
    TermType,
)


def plain(obj: Any) -> Any:
    """A strawberry input as plain JSON-safe data (snake_case keys, unset fields dropped)."""
    return jsonable(obj, drop=strawberry.UNSET)


def product(t: ProductTree) -> Product:
    p = t.product
    return Product(
        id=gid("Product", p["id"]),
        product_number=p["product_number"],
        name=p["name"],
        sku=p["sku"],
        description=p["description"],
        rate_plans=[
            ProductRatePlan(
                id=gid("ProductRatePlan", rp["id"]),
                product_rate_plan_number=rp["rate_plan_number"],
                name=rp["name"],
                charges=[
                    ProductRatePlanCharge(
                        id=gid("ProductRatePlanCharge", c["id"]),
                        product_rate_plan_charge_number=c["charge_number"],
                        name=c["name"],
                        charge_type=ChargeType(c["charge_type"]),
                        charge_model=ChargeModel(c["charge_model"]),
                        list_price=exact_out(c["list_price"]),
                        billing_period=BillingPeriod(c["billing_period"]),
                        billing_timing=BillingTiming(c["billing_timing"]),
                        default_quantity=exact_out(c["default_quantity"]),
                        uom=c["uom"],
                    )
                    for c in charges
                ],
            )
            for rp, charges in t.rate_plans
        ],
    )


def subscription(t: SubscriptionTree) -> Subscription:
    s = t.subscription
    return Subscription(
        db_id=s["id"],
        owner_id=s["owner_account_id"],
        invoice_owner_id=s["invoice_owner_account_id"],
        id=gid("Subscription", s["id"]),
        subscription_number=s["subscription_number"],
        subscription_owner_account_number=s["owner_account_number"],
        invoice_owner_account_number=s["invoice_owner_account_number"],
        currency=s["currency"],
        status=SubscriptionStatus(s["status"]),
        term_type=TermType(s["term_type"]),
        initial_term=s["initial_term"],
        renewal_term=s["renewal_term"],
        auto_renew=s["auto_renew"],
        contract_effective_date=s["contract_effective_date"],
        term_start_date=s["term_start_date"],
        term_end_date=s["term_end_date"],
        cancelled_date=s["cancelled_date"],
        invoice_separately=s["invoice_separately"],
        mrr=exact_out(s["mrr"]),
        version=s["version"],
        rate_plans=[
            SubscriptionRatePlan(
                id=gid("SubscriptionRatePlan", rp["id"]),
                product_rate_plan_number=rp["product_rate_plan_number"],
                name=rp["name"],
                effective_start_date=rp["effective_start_date"],
                effective_end_date=rp["effective_end_date"],
                charges=[
                    SubscriptionCharge(
                        id=gid("SubscriptionCharge", c["id"]),
                        charge_number=c["charge_number"],
                        product_rate_plan_charge_number=c["product_rate_plan_charge_number"],
                        segment=c["segment"],
                        is_last_segment=c["is_last_segment"],
                        name=c["name"],
                        charge_type=ChargeType(c["charge_type"]),
                        charge_model=ChargeModel(c["charge_model"]),
                        price=exact_out(c["price"]),
                        quantity=exact_out(c["quantity"]),
                        billing_period=BillingPeriod(c["billing_period"]),
                        billing_timing=BillingTiming(c["billing_timing"]),
                        effective_start_date=c["effective_start_date"],
                        effective_end_date=c["effective_end_date"],
                        charged_through_date=c["charged_through_date"],
                        mrr=exact_out(c["mrr"]),
                    )
                    for c in charges
                ],
            )
            for rp, charges in t.rate_plans
        ],
    )


def order(row: Any, actions: list[Any]) -> Order:
    numbers: list[str] = []
    for a in actions:
        if a["subscription_number"] not in numbers:
            numbers.append(a["subscription_number"])
    return Order(
        db_id=row["id"],
        id=gid("Order", row["id"]),
        order_number=row["order_number"],
        order_date=row["order_date"],
        status=OrderStatus(row["status"]),
        account_number=row["account_number"],
        order_actions=[
            OrderAction(
                sequence=a["sequence"],
                type=a["action_type"],
                subscription_number=a["subscription_number"],
                effective_date=a["effective_date"],
            )
            for a in actions
        ],
        subscription_numbers=numbers,
        created_at=row["created_at"],
    )


def created_order(o: CreatedOrder) -> Order:
    """An order written in one statement, from what the write already knows."""
    return Order(
        db_id=o.id,
        id=gid("Order", o.id),
        order_number=o.order_number,
        order_date=o.order_date,
        status=OrderStatus.COMPLETED,
        account_number=o.account_number,
        order_actions=[
            OrderAction(
                sequence=n,
                type="CreateSubscription",
                subscription_number=number,
                effective_date=effective,
            )
            for n, (number, effective) in enumerate(
                zip(o.subscription_numbers, o.effective_dates, strict=True)
            )
        ],
        subscription_numbers=list(o.subscription_numbers),
        created_at=o.created_at,
    )


def job(row: Any) -> Job:
    errors = []
    for e in row["errors"] or []:
        code = ErrorCode(e["code"])
        errors.append(
            ERROR_TYPES[code](
                code=code,
                message=e["message"],
                field=e.get("field"),
                retryable=e.get("retryable", False),
            )
        )
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=JobStatus(row["status"]),
        order_number=(row["result"] or {}).get("orderNumber"),
        errors=errors,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )

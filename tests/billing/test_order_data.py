"""An order's plain form decoded once into typed data (billing.orders.data)."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from billing.errors import LimitExceeded, ValidationFailed
from billing.orders import decode_order, takes
from billing.orders.actions import AMENDMENTS
from billing.orders.data import (
    DECODERS,
    MAX_ACTIONS,
    AddProduct,
    CancelSubscription,
    ChargeOverride,
    CreateSubscription,
    RatePlan,
    Terms,
    UpdateProduct,
    payload,
)
from resolvers.convert_orders import plain
from schema import orders as so
from schema.catalog import BillingPeriod
from schema.orders import CancellationPolicy, TermType

EVERY_ACTION = so.OrderActionInput


def every_action() -> list[Any]:
    """Each action of OrderActionInput once, with every field given, as plain() makes it."""
    override = so.ChargeOverrideInput(
        product_rate_plan_charge_number="PRPC-1",
        price=Decimal("12.50"),
        quantity=Decimal("3"),
        billing_period=BillingPeriod.ANNUAL,
    )
    return [
        plain(a)
        for a in [
            EVERY_ACTION(
                create_subscription=so.CreateSubscriptionActionInput(
                    subscription_number="S-1",
                    subscription_owner_account_number="A-2",
                    invoice_owner_account_number="A-3",
                    terms=so.TermsInput(term_type=TermType.TERMED, initial_term=6),
                    invoice_separately=True,
                    rate_plans=[
                        so.RatePlanInput(
                            product_rate_plan_number="PRP-1", charge_overrides=[override]
                        )
                    ],
                    effective_date=date(2026, 2, 1),
                )
            ),
            EVERY_ACTION(
                add_product=so.AddProductInput(
                    product_rate_plan_number="PRP-2", charge_overrides=[override]
                )
            ),
            EVERY_ACTION(
                update_product=so.UpdateProductInput(
                    charge_number="C-1", price=Decimal("0.0001"), effective_date=date(2026, 3, 1)
                )
            ),
            EVERY_ACTION(remove_product=so.RemoveProductInput(product_rate_plan_number="PRP-2")),
            EVERY_ACTION(suspend=so.SuspendResumeInput()),
            EVERY_ACTION(resume=so.SuspendResumeInput(effective_date=date(2026, 4, 1))),
            EVERY_ACTION(
                cancel_subscription=so.CancelSubscriptionInput(
                    cancellation_policy=CancellationPolicy.SPECIFIC_DATE,
                    cancellation_effective_date=date(2026, 5, 1),
                )
            ),
            EVERY_ACTION(renew_subscription=so.RenewSubscriptionInput()),
            EVERY_ACTION(
                terms_and_conditions=so.TermsAndConditionsInput(
                    term_type=TermType.EVERGREEN, auto_renew=False
                )
            ),
            EVERY_ACTION(
                owner_transfer=so.OwnerTransferInput(destination_invoice_account_number="A-4")
            ),
        ]
    ]


def order(actions: list[Any], **given: Any) -> dict[str, Any]:
    return {
        "order_date": "2026-01-15",
        "existing_account_number": "A-1",
        "subscriptions": [{"subscription_number": "S-1", "order_actions": actions}],
        **given,
    }


def test_every_action_decodes_to_its_class_and_keeps_its_payload() -> None:
    """Each action's payload (its order_action row) is the plain input as given."""
    actions = every_action()
    assert [k for a in actions for k, v in a.items() if v is not None] == list(DECODERS)
    got = decode_order(order(actions)).subscriptions[0].actions
    for raw, action in zip(actions, got, strict=True):
        key, body = next((k, v) for k, v in raw.items() if v is not None)
        assert type(action.body).key == key
        assert payload(action.body) == body
    assert [a.effective_date for a in got][:6] == [
        date(2026, 2, 1),
        date(2026, 1, 15),  # the order's date when none is given
        date(2026, 3, 1),
        date(2026, 1, 15),
        date(2026, 1, 15),
        date(2026, 4, 1),
    ]


def test_values_arrive_typed() -> None:
    got = [a.body for a in decode_order(order(every_action())).subscriptions[0].actions]
    override = ChargeOverride("PRPC-1", Decimal("12.50"), Decimal("3"), "ANNUAL")
    assert got[0] == CreateSubscription(
        subscription_number="S-1",
        subscription_owner_account_number="A-2",
        invoice_owner_account_number="A-3",
        terms=Terms("TERMED", 6, None, None),
        invoice_separately=True,
        rate_plans=(RatePlan("PRP-1", (override,)),),
        effective_date=date(2026, 2, 1),
    )
    assert got[1] == AddProduct("PRP-2", (override,))
    assert got[2] == UpdateProduct("C-1", Decimal("0.0001"), None, date(2026, 3, 1))
    assert got[6] == CancelSubscription("SPECIFIC_DATE", date(2026, 5, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[2].price = Decimal(1)  # type: ignore[misc]


def test_every_amending_action_has_its_function() -> None:
    amending = {type(b) for b in (DECODERS[k]({}, [], None) for k in DECODERS)}
    assert set(AMENDMENTS) == amending - {CreateSubscription}


@pytest.mark.parametrize(
    ("data", "message", "field"),
    [
        ({"order_date": None}, "orderDate is required", ["orderDate"]),
        (
            order([], new_account={"name": "N"}),
            "Give exactly one of existingAccountNumber and newAccount",
            ["existingAccountNumber"],
        ),
        (
            order([{"update_product": {"charge_number": "C-1", "price": 1.5}}]),
            "Amounts must be decimal strings, not floats",
            ["subscriptions", "0", "orderActions", "0", "price"],
        ),
        (
            order([{"suspend": {"effective_date": "2026-13-01"}}]),
            "'2026-13-01' is not a date",
            ["subscriptions", "0", "orderActions", "0", "effectiveDate"],
        ),
        (
            order([{"suspend": {}}, {"create_subscription": {}}]),
            "createSubscription must be the first action of its subscription, once",
            ["subscriptions", "0"],
        ),
    ],
)
def test_shape_errors_keep_their_messages_and_paths(
    data: dict[str, Any], message: str, field: list[str]
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        decode_order(data)
    assert (exc.value.message, exc.value.field) == (message, field)


def test_too_many_actions() -> None:
    with pytest.raises(LimitExceeded):
        decode_order(order([{"suspend": {}}] * (MAX_ACTIONS + 1)))


def test_takes_only_orders_that_create_subscriptions_on_an_existing_account() -> None:
    create = {"create_subscription": {"rate_plans": []}}
    only_new = {"subscriptions": [{"order_actions": [create]}, {"order_actions": [create]}]}
    assert takes(decode_order(order([], **only_new)))
    billed = {"processing_options": {"run_billing": True}}
    assert not takes(decode_order(order([], **only_new, **billed)))
    new_account = {"existing_account_number": None, "new_account": {"name": "N"}}
    assert not takes(decode_order(order([], **only_new, **new_account)))
    assert not takes(decode_order(order([{"suspend": {}}])))
    two = {"subscriptions": [{"order_actions": [create, {"suspend": {}}]}]}
    assert not takes(decode_order(order([], **two)))

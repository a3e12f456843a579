"""Bad orders: a typed error and nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import Gql
from tests.order_helpers import CREATE_ORDER, create_action, make_account, make_catalog, mrr, order


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


@pytest.fixture
async def world(gql: Gql) -> Gql:
    await make_catalog(gql)
    for n in ("R", "E1"):
        await make_account(gql, n)
    await make_account(gql, "EUR1", currency="EUR")
    data = await gql(
        CREATE_ORDER, input=order("R", [{"orderActions": [create_action("E1", number="S-1")]}])
    )
    assert data["createOrder"]["errors"] == []
    return gql


async def counts(sessionmaker: Any, tenant_id: int) -> dict[str, int]:
    out = {}
    async with sessionmaker() as s:
        for table in (
            "account",
            "sales_order",
            "order_action",
            "subscription",
            "subscription_rate_plan",
            "subscription_charge",
            "subscription_suspension",
            "metrics_change",
        ):
            out[table] = (
                await s.execute(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}
                )
            ).scalar_one()
        out["sub_version"] = (
            await s.execute(
                text("SELECT coalesce(sum(version), 0) FROM subscription WHERE tenant_id = :t"),
                {"t": tenant_id},
            )
        ).scalar_one()
    return out


def err(typename: str, code: str, field: list[str] | None) -> list[dict[str, Any]]:
    return [{"__typename": typename, "code": code, "field": field}]


A0 = ["subscriptions", "0", "orderActions", "0"]
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    (
        "unknown rate plan",
        order(
            "R",
            [
                {
                    "orderActions": [
                        {"createSubscription": {"ratePlans": [{"productRatePlanNumber": "NOPE"}]}}
                    ]
                }
            ],
        ),
        err("NotFoundError", "NOT_FOUND", [*A0, "ratePlans", "0", "productRatePlanNumber"]),
    ),
    (
        "unknown charge override",
        order(
            "R",
            [
                {
                    "orderActions": [
                        {
                            "createSubscription": {
                                "ratePlans": [
                                    {
                                        "productRatePlanNumber": "PRP-BASIC",
                                        "chargeOverrides": [
                                            {"productRatePlanChargeNumber": "PRPC-ANNUAL"}
                                        ],
                                    }
                                ]
                            }
                        }
                    ]
                }
            ],
        ),
        err(
            "NotFoundError",
            "NOT_FOUND",
            [*A0, "ratePlans", "0", "chargeOverrides", "0", "productRatePlanChargeNumber"],
        ),
    ),
    (
        "unknown order account",
        order("NOPE", [{"orderActions": [create_action()]}]),
        err("NotFoundError", "NOT_FOUND", ["existingAccountNumber"]),
    ),
    (
        "unknown owner account",
        order("R", [{"orderActions": [create_action("NOPE")]}]),
        err("NotFoundError", "NOT_FOUND", [*A0, "subscriptionOwnerAccountNumber"]),
    ),
    (
        "unknown subscription",
        order("R", [{"subscriptionNumber": "S-404", "orderActions": [{"suspend": {}}]}]),
        err("NotFoundError", "NOT_FOUND", ["subscriptions", "0", "subscriptionNumber"]),
    ),
    (
        "neither account",
        {"orderDate": "2026-01-01", "subscriptions": [{"orderActions": [create_action()]}]},
        err("ValidationError", "VALIDATION", ["existingAccountNumber"]),
    ),
    (
        "both accounts",
        {
            **order("R", [{"orderActions": [create_action()]}]),
            "newAccount": {
                "name": "N",
                "currency": "USD",
                "billToContact": {"firstName": "A", "lastName": "B"},
            },
        },
        err("ValidationError", "VALIDATION", ["existingAccountNumber"]),
    ),
    (
        "resume without suspend",
        order("R", [{"subscriptionNumber": "S-1", "orderActions": [{"resume": {}}]}]),
        err("InvalidStateError", "INVALID_STATE", A0),
    ),
    (
        "owners in different currencies",
        order("R", [{"orderActions": [create_action("EUR1")]}]),
        err("CurrencyMismatchError", "CURRENCY_MISMATCH", [*A0, "invoiceOwnerAccountNumber"]),
    ),
    (
        "owner transfer to another currency",
        order(
            "R",
            [
                {
                    "subscriptionNumber": "S-1",
                    "orderActions": [{"ownerTransfer": {"destinationAccountNumber": "EUR1"}}],
                }
            ],
        ),
        err("CurrencyMismatchError", "CURRENCY_MISMATCH", A0),
    ),
    (
        "a later action fails: the earlier ones are not kept",
        order(
            "R",
            [
                {"orderActions": [create_action("E1")]},
                {
                    "subscriptionNumber": "S-1",
                    "orderActions": [
                        {"suspend": {}},
                        {"updateProduct": {"chargeNumber": "C-NOPE", "price": "1"}},
                    ],
                },
            ],
        ),
        err(
            "NotFoundError",
            "NOT_FOUND",
            ["subscriptions", "1", "orderActions", "1", "chargeNumber"],
        ),
    ),
    (
        "bad override quantity",
        order("R", [{"orderActions": [create_action("E1", seats="-1")]}]),
        err(
            "ValidationError",
            "VALIDATION",
            [*A0, "ratePlans", "0", "chargeOverrides", "0", "quantity"],
        ),
    ),
]


@pytest.mark.parametrize(("name", "payload", "errors"), CASES, ids=[c[0] for c in CASES])
async def test_bad_order_writes_nothing(
    world: Gql,
    sessionmaker: Any,
    tenant: Any,
    name: str,
    payload: dict[str, Any],
    errors: list[dict[str, Any]],
) -> None:
    before = await counts(sessionmaker, tenant.id)
    data = await world(CREATE_ORDER, input=payload)
    assert data["createOrder"] == {"order": None, "subscriptions": [], "errors": errors}
    assert await counts(sessionmaker, tenant.id) == before
    assert await mrr(world, "E1") == "40"


async def test_actions_on_a_cancelled_subscription_are_refused(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    data = await world(
        CREATE_ORDER,
        input=order(
            "R",
            [
                {
                    "subscriptionNumber": "S-1",
                    "orderActions": [
                        {
                            "cancelSubscription": {
                                "cancellationPolicy": "SPECIFIC_DATE",
                                "cancellationEffectiveDate": "2026-03-01",
                            }
                        }
                    ],
                }
            ],
        ),
    )
    assert data["createOrder"]["errors"] == []
    before = await counts(sessionmaker, tenant.id)
    for action in (
        {"suspend": {}},
        {"addProduct": {"productRatePlanNumber": "PRP-ANNUAL"}},
        {"cancelSubscription": {}},
        {"ownerTransfer": {"destinationAccountNumber": "R"}},
        {"renewSubscription": {}},
    ):
        data = await world(
            CREATE_ORDER,
            input=order("R", [{"subscriptionNumber": "S-1", "orderActions": [action]}]),
        )
        assert data["createOrder"]["errors"] == err("InvalidStateError", "INVALID_STATE", A0), (
            action
        )
    assert await counts(sessionmaker, tenant.id) == before
    assert await mrr(world, "E1") == "0"


async def test_one_of_with_two_members_is_refused(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    before = await counts(sessionmaker, tenant.id)
    res = await world.raw(
        CREATE_ORDER,
        input=order(
            "R", [{"subscriptionNumber": "S-1", "orderActions": [{"suspend": {}, "resume": {}}]}]
        ),
    )
    assert res.data is None
    assert [e.message for e in res.errors] == [
        "OneOf Input Object 'OrderActionInput' must specify exactly one key."
    ]
    assert await counts(sessionmaker, tenant.id) == before


async def test_one_of_is_checked_again_in_the_domain(
    sessionmaker: Any, tenant: Any, world: Gql
) -> None:
    """Jobs and bulk paths hand the domain plain data: its decoder checks the oneOf rule."""
    from billing.errors import ValidationFailed
    from billing.orders import create_order, decode_order

    before = await counts(sessionmaker, tenant.id)
    with pytest.raises(ValidationFailed) as exc:
        async with sessionmaker.begin() as s:
            await create_order(
                s,
                tenant.id,
                decode_order(
                    {
                        "existing_account_number": "R",
                        "order_date": "2026-01-01",
                        "subscriptions": [
                            {
                                "subscription_number": "S-1",
                                "order_actions": [{"suspend": {}, "resume": {}}],
                            }
                        ],
                    }
                ),
            )
    assert exc.value.field == A0
    assert await counts(sessionmaker, tenant.id) == before

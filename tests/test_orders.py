"""GraphQL: every order action, with contractedMrr computed by hand before and after."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.metrics import recompute
from tests.helpers import Gql
from tests.order_helpers import (
    CREATE_ORDER,
    SUBSCRIPTION,
    create_action,
    make_account,
    make_catalog,
    mrr,
    order,
)


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


@pytest.fixture
async def world(gql: Gql) -> Gql:
    """Catalog, reseller R (ordinary), end customers E1, E2 (ordinary)."""
    await make_catalog(gql)
    for n in ("R", "E1", "E2"):
        await make_account(gql, n)
    return gql


async def act(
    gql: Gql, sub: str, action: dict[str, Any], date: str = "2026-02-01"
) -> dict[str, Any]:
    data = await gql(
        CREATE_ORDER,
        input=order("R", [{"subscriptionNumber": sub, "orderActions": [action]}], date),
    )
    return data["createOrder"]


async def subscribe(gql: Gql, seats: str = "2", number: str = "S-1") -> dict[str, Any]:
    data = await gql(
        CREATE_ORDER,
        input=order("R", [{"orderActions": [create_action("E1", number=number, seats=seats)]}]),
    )
    assert data["createOrder"]["errors"] == []
    return data["createOrder"]


async def test_create_subscription(world: Gql) -> None:
    assert await mrr(world, "E1") == "0"
    out = await subscribe(world, seats="3")
    # 30 flat + 10 x 3 seats per month; setup is one-time: 60/month.
    assert out == {
        "order": {
            "orderNumber": "O00000001",
            "orderDate": "2026-01-01",
            "status": "COMPLETED",
            "accountNumber": "R",
            "subscriptionNumbers": ["S-1"],
            "orderActions": [
                {
                    "sequence": 0,
                    "type": "CreateSubscription",
                    "subscriptionNumber": "S-1",
                    "effectiveDate": "2026-01-01",
                }
            ],
        },
        "subscriptions": [
            {
                "subscriptionNumber": "S-1",
                "status": "ACTIVE",
                "subscriptionOwnerAccountNumber": "E1",
                "invoiceOwnerAccountNumber": "R",
                "termType": "TERMED",
                "initialTerm": 12,
                "renewalTerm": 12,
                "autoRenew": False,
                "termStartDate": "2026-01-01",
                "termEndDate": "2027-01-01",
                "cancelledDate": None,
                "mrr": "60",
                "version": 1,
                "ratePlans": [
                    {
                        "productRatePlanNumber": "PRP-BASIC",
                        "effectiveStartDate": "2026-01-01",
                        "effectiveEndDate": None,
                        "charges": [
                            {
                                "chargeNumber": "C00000001",
                                "segment": 1,
                                "isLastSegment": True,
                                "price": "30",
                                "quantity": "1",
                                "billingPeriod": "MONTH",
                                "effectiveStartDate": "2026-01-01",
                                "effectiveEndDate": None,
                                "mrr": "30",
                            },
                            {
                                "chargeNumber": "C00000002",
                                "segment": 1,
                                "isLastSegment": True,
                                "price": "10",
                                "quantity": "3",
                                "billingPeriod": "MONTH",
                                "effectiveStartDate": "2026-01-01",
                                "effectiveEndDate": None,
                                "mrr": "30",
                            },
                            {
                                "chargeNumber": "C00000003",
                                "segment": 1,
                                "isLastSegment": True,
                                "price": "100",
                                "quantity": "1",
                                "billingPeriod": "MONTH",
                                "effectiveStartDate": "2026-01-01",
                                "effectiveEndDate": None,
                                "mrr": "0",
                            },
                        ],
                    }
                ],
            }
        ],
        "errors": [],
    }
    assert await mrr(world, "E1") == "60"
    assert await mrr(world, "R") == "0"


async def stored_equals_oracle(sessionmaker: Any, tenant_id: int, *numbers: str) -> None:
    from sqlalchemy import text

    from billing.metrics import stored_metrics

    async with sessionmaker() as s:
        for n in numbers:
            a = (
                await s.execute(
                    text("SELECT id FROM account WHERE tenant_id = :t AND account_number = :n"),
                    {"t": tenant_id, "n": n},
                )
            ).scalar_one()
            assert (await stored_metrics(s, a)).values() == (await recompute(s, a)).values(), n


async def test_add_product(world: Gql, sessionmaker: Any, tenant: Any) -> None:
    await subscribe(world)  # 30 + 2 x 10 = 50
    assert await mrr(world, "E1") == "50"
    out = await act(
        world,
        "S-1",
        {"addProduct": {"productRatePlanNumber": "PRP-ANNUAL", "effectiveDate": "2026-03-01"}},
    )
    assert out["errors"] == []
    assert out["order"]["orderActions"] == [
        {
            "sequence": 0,
            "type": "AddProduct",
            "subscriptionNumber": "S-1",
            "effectiveDate": "2026-03-01",
        }
    ]
    assert [rp["productRatePlanNumber"] for rp in out["subscriptions"][0]["ratePlans"]] == [
        "PRP-BASIC",
        "PRP-ANNUAL",
    ]
    # + 1200 / 12 = 100
    assert out["subscriptions"][0]["mrr"] == "150"
    assert await mrr(world, "E1") == "150"
    await stored_equals_oracle(sessionmaker, tenant.id, "E1", "R")


async def test_update_product_opens_a_segment(world: Gql, sessionmaker: Any, tenant: Any) -> None:
    await subscribe(world)
    assert await mrr(world, "E1") == "50"
    out = await act(
        world,
        "S-1",
        {
            "updateProduct": {
                "chargeNumber": "C00000002",
                "quantity": "5",
                "price": "12",
                "effectiveDate": "2026-03-01",
            }
        },
    )
    assert out["errors"] == []
    seats = [
        c
        for c in out["subscriptions"][0]["ratePlans"][0]["charges"]
        if c["chargeNumber"] == "C00000002"
    ]
    assert seats == [
        {
            "chargeNumber": "C00000002",
            "segment": 1,
            "isLastSegment": False,
            "price": "10",
            "quantity": "2",
            "billingPeriod": "MONTH",
            "effectiveStartDate": "2026-01-01",
            "effectiveEndDate": "2026-03-01",
            "mrr": "20",
        },
        {
            "chargeNumber": "C00000002",
            "segment": 2,
            "isLastSegment": True,
            "price": "12",
            "quantity": "5",
            "billingPeriod": "MONTH",
            "effectiveStartDate": "2026-03-01",
            "effectiveEndDate": None,
            "mrr": "60",
        },
    ]
    # 30 + 5 x 12 = 90
    assert await mrr(world, "E1") == "90"
    await stored_equals_oracle(sessionmaker, tenant.id, "E1")


async def test_remove_product(world: Gql, sessionmaker: Any, tenant: Any) -> None:
    await subscribe(world)
    await act(world, "S-1", {"addProduct": {"productRatePlanNumber": "PRP-ANNUAL"}})
    assert await mrr(world, "E1") == "150"
    out = await act(
        world,
        "S-1",
        {"removeProduct": {"productRatePlanNumber": "PRP-BASIC", "effectiveDate": "2026-04-01"}},
    )
    assert out["errors"] == []
    basic = out["subscriptions"][0]["ratePlans"][0]
    assert basic["effectiveEndDate"] == "2026-04-01"
    assert {c["effectiveEndDate"] for c in basic["charges"]} == {"2026-04-01"}
    assert await mrr(world, "E1") == "100"
    await stored_equals_oracle(sessionmaker, tenant.id, "E1")


async def test_suspend_and_resume_keep_contracted_mrr(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    from sqlalchemy import text

    await subscribe(world)
    assert await mrr(world, "E1") == "50"
    out = await act(world, "S-1", {"suspend": {"effectiveDate": "2026-03-01"}})
    assert out["errors"] == [] and out["subscriptions"][0]["status"] == "SUSPENDED"
    assert await mrr(world, "E1") == "50"
    out = await act(world, "S-1", {"resume": {"effectiveDate": "2026-03-15"}})
    assert out["errors"] == [] and out["subscriptions"][0]["status"] == "ACTIVE"
    assert await mrr(world, "E1") == "50"
    async with sessionmaker() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT start_date::text, end_date::text FROM subscription_suspension "
                    "WHERE tenant_id = :t"
                ),
                {"t": tenant.id},
            )
        ).all()
    assert [tuple(r) for r in rows] == [("2026-03-01", "2026-03-15")]
    await stored_equals_oracle(sessionmaker, tenant.id, "E1")


async def test_future_cancellation_removes_mrr_at_once(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await subscribe(world)
    assert await mrr(world, "E1") == "50"
    out = await act(
        world, "S-1", {"cancelSubscription": {"cancellationPolicy": "END_OF_CURRENT_TERM"}}
    )
    assert out["errors"] == []
    sub = out["subscriptions"][0]
    assert (sub["status"], sub["cancelledDate"]) == ("CANCELLED", "2027-01-01")
    assert {c["effectiveEndDate"] for c in sub["ratePlans"][0]["charges"]} == {"2027-01-01"}
    assert await mrr(world, "E1") == "0"
    await stored_equals_oracle(sessionmaker, tenant.id, "E1")


async def test_cancel_specific_date_and_last_invoice_period(world: Gql) -> None:
    await subscribe(world, number="S-1")
    await subscribe(world, number="S-2", seats="1")  # 40
    assert await mrr(world, "E1") == "90"
    out = await act(
        world,
        "S-1",
        {
            "cancelSubscription": {
                "cancellationPolicy": "SPECIFIC_DATE",
                "cancellationEffectiveDate": "2026-06-30",
            }
        },
    )
    assert out["subscriptions"][0]["cancelledDate"] == "2026-06-30"
    assert await mrr(world, "E1") == "40"
    # Nothing billed yet: the last invoice period ends at the action's date.
    out = await act(
        world, "S-2", {"cancelSubscription": {"cancellationPolicy": "END_OF_LAST_INVOICE_PERIOD"}}
    )
    assert out["subscriptions"][0]["cancelledDate"] == "2026-02-01"
    assert await mrr(world, "E1") == "0"


async def test_renew_and_terms_and_conditions(world: Gql) -> None:
    await subscribe(world)
    out = await act(world, "S-1", {"renewSubscription": {}})
    sub = out["subscriptions"][0]
    assert (sub["termStartDate"], sub["termEndDate"], sub["mrr"]) == (
        "2027-01-01",
        "2028-01-01",
        "50",
    )
    assert await mrr(world, "E1") == "50"
    out = await act(
        world, "S-1", {"termsAndConditions": {"termType": "EVERGREEN", "autoRenew": True}}
    )
    sub = out["subscriptions"][0]
    assert (sub["termType"], sub["termEndDate"], sub["autoRenew"]) == ("EVERGREEN", None, True)
    assert await mrr(world, "E1") == "50"
    out = await act(world, "S-1", {"renewSubscription": {}})
    assert out["errors"] == [
        {
            "__typename": "InvalidStateError",
            "code": "INVALID_STATE",
            "field": ["subscriptions", "0", "orderActions", "0"],
        }
    ]


async def test_owner_transfer_moves_contracted_mrr(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await subscribe(world)
    assert (await mrr(world, "E1"), await mrr(world, "E2")) == ("50", "0")
    out = await act(
        world,
        "S-1",
        {
            "ownerTransfer": {
                "destinationAccountNumber": "E2",
                "destinationInvoiceAccountNumber": "E2",
            }
        },
    )
    assert out["errors"] == []
    sub = out["subscriptions"][0]
    assert (sub["subscriptionOwnerAccountNumber"], sub["invoiceOwnerAccountNumber"]) == ("E2", "E2")
    assert (await mrr(world, "E1"), await mrr(world, "E2")) == ("0", "50")
    await stored_equals_oracle(sessionmaker, tenant.id, "E1", "E2")


async def test_one_order_many_actions_and_a_new_account(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    data = await world(
        CREATE_ORDER,
        input={
            "newAccount": {
                "accountNumber": "NEW",
                "name": "New",
                "currency": "USD",
                "partnerAccount": True,
                "billToContact": {"firstName": "A", "lastName": "B"},
            },
            "orderNumber": "ORD-1",
            "orderDate": "2026-01-01",
            "subscriptions": [
                {
                    "orderActions": [
                        create_action(invoice_owner="R"),  # owner defaults to the order's account
                        {
                            "updateProduct": {
                                "chargeNumber": "C00000002",
                                "quantity": "4",
                                "effectiveDate": "2026-02-01",
                            }
                        },
                        {"suspend": {"effectiveDate": "2026-03-01"}},
                    ]
                },
                {"orderActions": [create_action("E1", seats="1")]},
            ],
        },
    )
    out = data["createOrder"]
    assert out["errors"] == []
    assert out["order"]["orderNumber"] == "ORD-1"
    assert [a["type"] for a in out["order"]["orderActions"]] == [
        "CreateSubscription",
        "UpdateProduct",
        "Suspend",
        "CreateSubscription",
    ]
    assert [
        (s["subscriptionOwnerAccountNumber"], s["status"], s["mrr"]) for s in out["subscriptions"]
    ] == [("NEW", "SUSPENDED", "70"), ("E1", "ACTIVE", "40")]
    assert await mrr(world, "E1") == "40"
    # NEW is a partner account: its contractedMrr arrives with the refresh.
    assert await mrr(world, "NEW") == "0"
    await world(
        'mutation { refreshAccountMetrics(input: {accountNumber: "NEW"}) { errors { code } } }'
    )
    assert await mrr(world, "NEW") == "70"
    await stored_equals_oracle(sessionmaker, tenant.id, "NEW", "E1")
    got = await world(SUBSCRIPTION, n="S00000001")
    assert got["subscription"]["mrr"] == "70"
    got = await world(
        '{ subscription(subscriptionNumber: "S00000002") { subscriptionOwner { accountNumber } '
        "invoiceOwner { accountNumber } ratePlans { charges { chargedThroughDate } } } "
        'missing: subscription(subscriptionNumber: "S-404") { id } }'
    )
    assert got == {
        "subscription": {
            "subscriptionOwner": {"accountNumber": "E1"},
            "invoiceOwner": {"accountNumber": "NEW"},
            "ratePlans": [{"charges": [{"chargedThroughDate": None}] * 3}],
        },
        "missing": None,
    }
    listed = await world(
        '{ account(accountNumber: "R") { subscriptions(role: INVOICE_OWNER) { totalCount } '
        "orders { totalCount } } }"
    )
    assert listed == {"account": {"subscriptions": {"totalCount": 1}, "orders": {"totalCount": 0}}}
    listed = await world(
        '{ account(accountNumber: "NEW") { subscriptions { edges { node { subscriptionNumber } } } '
        "orders { edges { node { orderNumber } } } } }"
    )
    assert listed == {
        "account": {
            "subscriptions": {"edges": [{"node": {"subscriptionNumber": "S00000001"}}]},
            "orders": {"edges": [{"node": {"orderNumber": "ORD-1"}}]},
        }
    }
    got = await world('{ order(orderNumber: "ORD-1") { accountNumber subscriptionNumbers } }')
    assert got == {
        "order": {"accountNumber": "NEW", "subscriptionNumbers": ["S00000001", "S00000002"]}
    }


async def test_create_subscription_shorthand(world: Gql) -> None:
    data = await world(
        """mutation($input: CreateSubscriptionInput!) { createSubscription(input: $input) {
             order { orderNumber orderActions { type effectiveDate } }
             subscriptions { subscriptionNumber subscriptionOwnerAccountNumber mrr }
             errors { code } } }""",
        input={
            "accountNumber": "R",
            "subscriptionOwnerAccountNumber": "E2",
            "contractEffectiveDate": "2026-05-01",
            "ratePlans": [
                {
                    "productRatePlanNumber": "PRP-ANNUAL",
                    "chargeOverrides": [
                        {
                            "productRatePlanChargeNumber": "PRPC-ANNUAL",
                            "price": "600",
                            "billingPeriod": "SEMI_ANNUAL",
                        }
                    ],
                }
            ],
        },
    )
    assert data["createSubscription"] == {
        "order": {
            "orderNumber": "O00000001",
            "orderActions": [{"type": "CreateSubscription", "effectiveDate": "2026-05-01"}],
        },
        "subscriptions": [
            {
                "subscriptionNumber": "S00000001",
                "subscriptionOwnerAccountNumber": "E2",
                "mrr": "100",
            }
        ],
        "errors": [],
    }
    assert await mrr(world, "E2") == "100"


BULK = """
mutation($input: CreateOrdersInput!) {
  createOrders(input: $input) {
    count results { order { orderNumber } errors { __typename code field } }
  }
}"""


async def test_create_orders_bulk_error_policies(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    good = order("R", [{"orderActions": [create_action("E1")]}], orderNumber="B-1")
    bad = order("R", [{"orderActions": [create_action("NOPE")]}], orderNumber="B-2")
    good2 = order("R", [{"orderActions": [create_action("E2")]}], orderNumber="B-3")
    nf = [
        {
            "__typename": "NotFoundError",
            "code": "NOT_FOUND",
            "field": [
                "orders", "1",
                "subscriptions", "0", "orderActions", "0", "subscriptionOwnerAccountNumber",
            ],
        }
    ]  # fmt: skip
    data = await world(BULK, input={"orders": [good, bad, good2]})
    assert data["createOrders"] == {
        "count": 0,
        "results": [
            {"order": None, "errors": []},
            {"order": None, "errors": nf},
            {"order": None, "errors": []},
        ],
    }
    assert Decimal(await mrr(world, "E1")) == Decimal(await mrr(world, "E2")) == Decimal(0)
    data = await world(
        BULK, input={"orders": [good, bad, good2], "errorPolicy": "REJECT_FAILED_ROWS"}
    )
    assert data["createOrders"] == {
        "count": 2,
        "results": [
            {"order": {"orderNumber": "B-1"}, "errors": []},
            {"order": None, "errors": nf},
            {"order": {"orderNumber": "B-3"}, "errors": []},
        ],
    }
    assert Decimal(await mrr(world, "E1")) == Decimal(await mrr(world, "E2")) == Decimal(40)
    await stored_equals_oracle(sessionmaker, tenant.id, "E1", "E2")


async def test_create_orders_honours_each_rows_idempotency_key(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    rows = [
        order("R", [{"orderActions": [create_action("E1")]}], idempotencyKey="bulk-1"),
        order("R", [{"orderActions": [create_action("E2")]}], idempotencyKey="bulk-2"),
    ]
    first = await world(BULK, input={"orders": rows})
    again = await world(BULK, input={"orders": rows})
    assert first["createOrders"]["count"] == 2
    assert again == first
    assert Decimal(await mrr(world, "E1")) == Decimal(await mrr(world, "E2")) == Decimal(40)
    # The row's key is createOrder's: the single mutation replays the bulk row.
    single = await world(CREATE_ORDER, input=rows[0])
    assert (
        single["createOrder"]["order"]["orderNumber"]
        == first["createOrders"]["results"][0]["order"]["orderNumber"]
    )
    assert Decimal(await mrr(world, "E1")) == Decimal(40)
    # A key used with another input fails its row, with the row's path.
    changed = order("R", [{"orderActions": [create_action("E2")]}], idempotencyKey="bulk-1")
    data = await world(BULK, input={"orders": [changed]})
    assert data["createOrders"]["results"][0]["errors"] == [
        {
            "__typename": "IdempotencyKeyReusedError",
            "code": "IDEMPOTENCY_KEY_REUSED",
            "field": ["orders", "0", "idempotencyKey"],
        }
    ]
    await stored_equals_oracle(sessionmaker, tenant.id, "E1", "E2")


async def test_create_order_idempotency_key(world: Gql) -> None:
    first = (
        await world(
            CREATE_ORDER,
            input=order("R", [{"orderActions": [create_action("E1")]}], idempotencyKey="k1"),
        )
    )["createOrder"]
    again = (
        await world(
            CREATE_ORDER,
            input=order("R", [{"orderActions": [create_action("E1")]}], idempotencyKey="k1"),
        )
    )["createOrder"]
    assert first["errors"] == [] and again == first
    assert await mrr(world, "E1") == "40"
    other = (
        await world(
            CREATE_ORDER,
            input=order("R", [{"orderActions": [create_action("E2")]}], idempotencyKey="k1"),
        )
    )["createOrder"]
    assert other == {
        "order": None,
        "subscriptions": [],
        "errors": [
            {
                "__typename": "IdempotencyKeyReusedError",
                "code": "IDEMPOTENCY_KEY_REUSED",
                "field": ["idempotencyKey"],
            }
        ],
    }


async def test_order_of_many_new_subscriptions_numbers_them_in_order(
    world: Gql, sessionmaker: Any, tenant: Any
) -> None:
    """New subscriptions are written together, but numbered in the order's own order (a
    mixed group in the middle included) and each gets its own charges and MRR."""
    groups = [{"orderActions": [create_action("E1", "R", seats=str(i + 1))]} for i in range(3)]
    groups.insert(
        1,
        {"orderActions": [create_action("E2", "R"), {"suspend": {"effectiveDate": "2026-03-01"}}]},
    )
    data = await world(CREATE_ORDER, input=order("R", groups))
    out = data["createOrder"]
    assert out["errors"] == []
    subs = out["subscriptions"]
    assert [s["subscriptionNumber"] for s in subs] == [
        "S00000001",
        "S00000002",
        "S00000003",
        "S00000004",
    ]
    assert [(s["subscriptionOwnerAccountNumber"], s["status"], s["mrr"]) for s in subs] == [
        ("E1", "ACTIVE", "40"),
        ("E2", "SUSPENDED", "40"),
        ("E1", "ACTIVE", "50"),
        ("E1", "ACTIVE", "60"),
    ]
    numbers = [[c["chargeNumber"] for rp in s["ratePlans"] for c in rp["charges"]] for s in subs]
    assert numbers == [[f"C{n:08d}" for n in range(3 * i + 1, 3 * i + 4)] for i in range(4)]
    assert [rp["productRatePlanNumber"] for s in subs for rp in s["ratePlans"]] == ["PRP-BASIC"] * 4
    assert await mrr(world, "E1") == "150"
    assert await mrr(world, "E2") == "40"  # a suspended subscription still counts (domain.md, 6)
    await stored_equals_oracle(sessionmaker, tenant.id, "E1", "E2", "R")


async def test_order_payload_loads_subscriptions_when_selected_through_fragments(
    world: Gql,
) -> None:
    spread = """fragment Subs on OrderPayload { subscriptions { subscriptionNumber mrr } }
    mutation($input: CreateOrderInput!) {
      createOrder(input: $input) { ...Subs errors { code } } }"""
    data = await world(spread, input=order("R", [{"orderActions": [create_action("E1", "R")]}]))
    assert data["createOrder"] == {
        "subscriptions": [{"subscriptionNumber": "S00000001", "mrr": "40"}],
        "errors": [],
    }
    inline = """mutation($input: CreateOrderInput!) { createOrder(input: $input) {
      ... on OrderPayload { subscriptions { subscriptionNumber } }
      order { subscriptionNumbers } } }"""
    data = await world(inline, input=order("R", [{"orderActions": [create_action("E1", "R")]}]))
    assert data["createOrder"] == {
        "subscriptions": [{"subscriptionNumber": "S00000002"}],
        "order": {"subscriptionNumbers": ["S00000002"]},
    }
    bare = (
        "mutation($input: CreateOrderInput!) "
        "{ createOrder(input: $input) { order { subscriptionNumbers } } }"
    )
    data = await world(bare, input=order("R", [{"orderActions": [create_action("E1", "R")]}]))
    assert data["createOrder"] == {"order": {"subscriptionNumbers": ["S00000003"]}}

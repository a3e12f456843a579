"""GraphQL: every order action, with contractedMrr computed by hand before and after."""

from __future__ import annotations

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


async def act(gql: Gql, sub: str, action: dict[str, Any], date: str = "2026-02-01") -> dict[str, Any]:
    data = await gql(CREATE_ORDER, input=order("R", [{"subscriptionNumber": sub, "orderActions": [action]}], date))
    return data["createOrder"]


async def subscribe(gql: Gql, seats: str = "2", number: str = "S-1") -> dict[str, Any]:
    data = await gql(CREATE_ORDER, input=order("R", [{"orderActions": [create_action("E1", number=number, seats=seats)]}]))
    assert data["createOrder"]["errors"] == []
    return data["createOrder"]


async def test_create_subscription(world: Gql) -> None:
    assert await mrr(world, "E1") == "0.000000"
    out = await subscribe(world, seats="3")
    # 30 flat + 10 x 3 seats per month; setup is one-time: 60/month.
    assert out == {
        "order": {
            "orderNumber": "O00000001",
            "orderDate": "2026-01-01",
            "status": "COMPLETED",
            "accountNumber": "R",
            "subscriptionNumbers": ["S-1"],
            "orderActions": [{"sequence": 0, "type": "CreateSubscription", "subscriptionNumber": "S-1",
                              "effectiveDate": "2026-01-01"}],
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
                "mrr": "60.000000",
                "version": 1,
                "ratePlans": [
                    {
                        "productRatePlanNumber": "PRP-BASIC",
                        "effectiveStartDate": "2026-01-01",
                        "effectiveEndDate": None,
                        "charges": [
                            {"chargeNumber": "C00000001", "segment": 1, "isLastSegment": True, "price": "30.0000",
                             "quantity": "1.0000", "billingPeriod": "MONTH", "effectiveStartDate": "2026-01-01",
                             "effectiveEndDate": None, "mrr": "30.000000"},
                            {"chargeNumber": "C00000002", "segment": 1, "isLastSegment": True, "price": "10.0000",
                             "quantity": "3.0000", "billingPeriod": "MONTH", "effectiveStartDate": "2026-01-01",
                             "effectiveEndDate": None, "mrr": "30.000000"},
                            {"chargeNumber": "C00000003", "segment": 1, "isLastSegment": True, "price": "100.0000",
                             "quantity": "1.0000", "billingPeriod": "MONTH", "effectiveStartDate": "2026-01-01",
                             "effectiveEndDate": None, "mrr": "0.000000"},
                        ],
                    }
                ],
            }
        ],
        "errors": [],
    }
    assert await mrr(world, "E1") == "60.000000"
    assert await mrr(world, "R") == "0.000000"

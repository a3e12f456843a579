"""GraphQL: the product catalog."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Gql
from tests.order_helpers import CREATE_PRODUCT, make_catalog


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def test_create_product_numbers_plans_and_charges(gql: Gql) -> None:
    data = await gql(
        CREATE_PRODUCT,
        input={
            "name": "Tracker",
            "ratePlans": [
                {
                    "name": "Monthly",
                    "charges": [
                        {
                            "name": "Fee",
                            "chargeType": "RECURRING",
                            "chargeModel": "PER_UNIT",
                            "listPrice": "9.99",
                            "billingPeriod": "QUARTER",
                            "billingTiming": "IN_ARREARS",
                            "defaultQuantity": "2",
                            "uom": "unit",
                        },
                        {
                            "name": "Setup",
                            "chargeType": "ONE_TIME",
                            "chargeModel": "FLAT_FEE",
                            "listPrice": "50",
                        },
                    ],
                },
            ],
        },
    )
    assert data == {
        "createProduct": {
            "product": {
                "productNumber": "PC00000001",
                "name": "Tracker",
                "ratePlans": [
                    {
                        "productRatePlanNumber": "PRP00000001",
                        "name": "Monthly",
                        "charges": [
                            {
                                "productRatePlanChargeNumber": "PRPC00000001",
                                "name": "Fee",
                                "chargeType": "RECURRING",
                                "chargeModel": "PER_UNIT",
                                "listPrice": "9.99",
                                "billingPeriod": "QUARTER",
                                "billingTiming": "IN_ARREARS",
                                "defaultQuantity": "2",
                                "uom": "unit",
                            },
                            {
                                "productRatePlanChargeNumber": "PRPC00000002",
                                "name": "Setup",
                                "chargeType": "ONE_TIME",
                                "chargeModel": "FLAT_FEE",
                                "listPrice": "50",
                                "billingPeriod": "MONTH",
                                "billingTiming": "IN_ADVANCE",
                                "defaultQuantity": "1",
                                "uom": None,
                            },
                        ],
                    }
                ],
            },
            "errors": [],
        }
    }
    listed = await gql("{ products(first: 10) { totalCount edges { node { productNumber } } } }")
    assert listed == {
        "products": {"totalCount": 1, "edges": [{"node": {"productNumber": "PC00000001"}}]}
    }


async def test_create_product_rejects_bad_input_and_writes_nothing(gql: Gql) -> None:
    bad = {
        "name": "X",
        "ratePlans": [
            {
                "name": "P",
                "charges": [
                    {
                        "name": "Fee",
                        "chargeType": "RECURRING",
                        "chargeModel": "FLAT_FEE",
                        "listPrice": "-1",
                    }
                ],
            }
        ],
    }
    data = await gql(CREATE_PRODUCT, input=bad)
    assert data["createProduct"] == {
        "product": None,
        "errors": [
            {
                "__typename": "ValidationError",
                "code": "VALIDATION",
                "field": ["ratePlans", "0", "charges", "0", "listPrice"],
            }
        ],
    }
    await make_catalog(gql)
    dup = {"name": "Y", "productNumber": "PC-FLEET"}
    data = await gql(CREATE_PRODUCT, input=dup)
    assert data["createProduct"]["errors"] == [
        {"__typename": "DuplicateError", "code": "DUPLICATE", "field": ["productNumber"]}
    ]
    listed = await gql("{ products { totalCount } }")
    assert listed == {"products": {"totalCount": 1}}

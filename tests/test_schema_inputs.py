"""The compiled input converters (schema.inputs) build exactly what Strawberry's own
conversion builds, for every kind of input the hot mutations and the orders take."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from graphql import GraphQLInputObjectType
from graphql.utilities import coerce_input_value
from strawberry.types.arguments import convert_argument

from schema.root import schema

GQL = schema._schema


@contextmanager
def strawberrys_own_conversion() -> Iterator[None]:
    """Every input type without its compiled converter, for the duration."""
    saved = {}
    for t in GQL.type_map.values():
        if isinstance(t, GraphQLInputObjectType):
            d = t.extensions["strawberry-definition"]
            saved[d] = d.from_input
            d.from_input = None
    try:
        yield
    finally:
        for d, hook in saved.items():
            d.from_input = hook


def build(type_name: str, value: dict[str, Any]) -> Any:
    gql_type = GQL.type_map[type_name]
    assert isinstance(gql_type, GraphQLInputObjectType)
    coerced = coerce_input_value(value, gql_type)
    definition = gql_type.extensions["strawberry-definition"]
    return convert_argument(
        coerced, definition.origin, schema.schema_converter.scalar_registry, schema.config
    )


ORDER = {
    "existingAccountNumber": "R",
    "orderDate": "2026-01-01",
    "orderNumber": "O-1",
    "processingOptions": {"runBilling": True, "targetDate": "2026-02-01"},
    "subscriptions": [
        {
            "orderActions": [
                {
                    "createSubscription": {
                        "subscriptionOwnerAccountNumber": "E1",
                        "terms": {"termType": "EVERGREEN"},
                        "ratePlans": [
                            {
                                "productRatePlanNumber": "PRP-BASIC",
                                "chargeOverrides": [
                                    {
                                        "productRatePlanChargeNumber": "PRPC-SEATS",
                                        "quantity": "3",
                                        "price": "9.50",
                                    }
                                ],
                            }
                        ],
                    }
                }
            ]
        },
        {
            "subscriptionNumber": "S-1",
            "orderActions": [
                {"suspend": {"effectiveDate": "2026-03-01"}},
                {"cancelSubscription": {"cancellationPolicy": "END_OF_CURRENT_TERM"}},
                {"ownerTransfer": {"destinationAccountNumber": "E2"}},
            ],
        },
    ],
}
CASES = [
    ("CreateOrderInput", ORDER),
    (
        "CreateStandaloneInvoiceInput",
        {
            "accountNumber": "A",
            "invoiceDate": "2026-11-01",
            "status": "POSTED",
            "items": [
                {"chargeName": "Seat", "quantity": "2", "unitPrice": "12.50"},
                {"chargeName": "Fee", "amount": "1.00", "serviceStartDate": "2026-11-01"},
            ],
        },
    ),
    (
        "CreatePaymentInput",
        {
            "accountNumber": "A",
            "amount": "10.00",
            "effectiveDate": "2026-11-02",
            "method": "WIRE",
            "invoices": [{"invoiceNumber": "INV1", "amount": "5"}],
        },
    ),
    (
        "CreateAccountInput",
        {
            "name": "A",
            "currency": "USD",
            "billToContact": {"firstName": "A", "lastName": "B", "city": None},
            "partnerAccount": True,
        },
    ),
]


@pytest.mark.parametrize(("type_name", "value"), CASES, ids=[c[0] for c in CASES])
def test_compiled_conversion_equals_strawberrys(type_name: str, value: dict[str, Any]) -> None:
    compiled = build(type_name, value)
    with strawberrys_own_conversion():
        reference = build(type_name, value)
    assert type(compiled) is type(reference)
    assert compiled == reference


def test_every_input_type_is_compiled() -> None:
    for t in GQL.type_map.values():
        if isinstance(t, GraphQLInputObjectType):
            assert t.extensions["strawberry-definition"].from_input is not None, t.name

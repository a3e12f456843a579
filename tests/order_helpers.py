"""Shared GraphQL documents and builders for the catalog and order tests."""

from __future__ import annotations

from typing import Any

from tests.helpers import Gql

CREATE_ACCOUNT = """
mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { account { accountNumber } errors { __typename code field } }
}"""

CREATE_PRODUCT = """
mutation($input: CreateProductInput!) {
  createProduct(input: $input) {
    product { productNumber name ratePlans { productRatePlanNumber name charges {
      productRatePlanChargeNumber name chargeType chargeModel listPrice billingPeriod billingTiming
      defaultQuantity uom } } }
    errors { __typename code field }
  }
}"""

SUB_FIELDS = """subscriptionNumber status subscriptionOwnerAccountNumber invoiceOwnerAccountNumber
  termType initialTerm renewalTerm autoRenew termStartDate termEndDate cancelledDate mrr version
  ratePlans { productRatePlanNumber effectiveStartDate effectiveEndDate
    charges { chargeNumber segment isLastSegment price quantity billingPeriod effectiveStartDate
              effectiveEndDate mrr } }"""

CREATE_ORDER = (
    """
mutation($input: CreateOrderInput!) {
  createOrder(input: $input) {
    order { orderNumber orderDate status accountNumber subscriptionNumbers
            orderActions { sequence type subscriptionNumber effectiveDate } }
    subscriptions { """
    + SUB_FIELDS
    + """ }
    errors { __typename code field }
  }
}"""
)

MRR = """query($n: String!) { account(accountNumber: $n) { metrics { contractedMrr } } }"""

SUBSCRIPTION = "query($n: String!) { subscription(subscriptionNumber: $n) { " + SUB_FIELDS + " } }"


def account_input(number: str, *, currency: str = "USD", partner: bool = False) -> dict[str, Any]:
    return {
        "accountNumber": number,
        "name": f"Account {number}",
        "currency": currency,
        "billToContact": {"firstName": "Ada", "lastName": "Lovelace"},
        "partnerAccount": partner,
    }


async def make_account(gql: Gql, number: str, **kw: Any) -> None:
    data = await gql(CREATE_ACCOUNT, input=account_input(number, **kw))
    assert data["createAccount"]["errors"] == []


async def make_catalog(gql: Gql) -> None:
    """PRP-BASIC: FLAT 30/month + PER_UNIT 10/unit/month (qty 1) + one-time setup 100;
    PRP-ANNUAL: FLAT 1200/year; PRP-USAGE: usage 0.5 per unit."""
    data = await gql(
        CREATE_PRODUCT,
        input={
            "name": "Fleet tracking",
            "productNumber": "PC-FLEET",
            "ratePlans": [
                {
                    "name": "Basic",
                    "productRatePlanNumber": "PRP-BASIC",
                    "charges": [
                        {
                            "name": "Platform",
                            "productRatePlanChargeNumber": "PRPC-PLATFORM",
                            "chargeType": "RECURRING",
                            "chargeModel": "FLAT_FEE",
                            "listPrice": "30",
                        },
                        {
                            "name": "Seats",
                            "productRatePlanChargeNumber": "PRPC-SEATS",
                            "chargeType": "RECURRING",
                            "chargeModel": "PER_UNIT",
                            "listPrice": "10",
                            "uom": "seat",
                        },
                        {
                            "name": "Setup",
                            "productRatePlanChargeNumber": "PRPC-SETUP",
                            "chargeType": "ONE_TIME",
                            "chargeModel": "FLAT_FEE",
                            "listPrice": "100",
                        },
                    ],
                },
                {
                    "name": "Annual",
                    "productRatePlanNumber": "PRP-ANNUAL",
                    "charges": [
                        {
                            "name": "Annual fee",
                            "productRatePlanChargeNumber": "PRPC-ANNUAL",
                            "chargeType": "RECURRING",
                            "chargeModel": "FLAT_FEE",
                            "listPrice": "1200",
                            "billingPeriod": "ANNUAL",
                            "billingTiming": "IN_ARREARS",
                        },
                    ],
                },
                {
                    "name": "Usage",
                    "productRatePlanNumber": "PRP-USAGE",
                    "charges": [
                        {
                            "name": "Pings",
                            "productRatePlanChargeNumber": "PRPC-PINGS",
                            "chargeType": "USAGE",
                            "chargeModel": "PER_UNIT",
                            "listPrice": "0.5",
                        },
                    ],
                },
            ],
        },
    )
    assert data["createProduct"]["errors"] == []


def create_action(
    owner: str | None = None,
    invoice_owner: str | None = None,
    number: str | None = None,
    seats: str = "1",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ratePlans": [
            {
                "productRatePlanNumber": "PRP-BASIC",
                "chargeOverrides": [
                    {"productRatePlanChargeNumber": "PRPC-SEATS", "quantity": seats}
                ],
            }
        ],
    }
    if owner:
        body["subscriptionOwnerAccountNumber"] = owner
    if invoice_owner:
        body["invoiceOwnerAccountNumber"] = invoice_owner
    if number:
        body["subscriptionNumber"] = number
    body.update(extra)
    return {"createSubscription": body}


def order(
    account: str, groups: list[dict[str, Any]], date: str = "2026-01-01", **extra: Any
) -> dict[str, Any]:
    return {"existingAccountNumber": account, "orderDate": date, "subscriptions": groups, **extra}


async def mrr(gql: Gql, account: str) -> str:
    return str((await gql(MRR, n=account))["account"]["metrics"]["contractedMrr"])

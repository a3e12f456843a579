"""GraphQL: accounts, invoices, payments and metrics, compared as whole results."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Gql

CREATE = """
mutation($input: CreateAccountInput!) {
  createAccount(input: $input) {
    account { accountNumber name currency billCycleDay paymentTerm batch partnerAccount
              billToContact { firstName lastName } soldToContact { firstName lastName } }
    errors { __typename code message field retryable }
  }
}"""

METRICS = """
query($n: String!) { account(accountNumber: $n) { partnerAccount lastMetricsUpdate
  metrics { balance creditBalance totalInvoiceBalance totalDebitMemoBalance
            unappliedPaymentAmount unappliedCreditMemoAmount contractedMrr lastInvoiceDate
            lastMetricsUpdate currency } } }"""

INVOICE = """
mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) {
    invoice {
      invoiceNumber status amount balance dueDate items { chargeName quantity unitPrice amount }
    }
    errors { __typename code field }
  }
}"""

PAYMENT = """
mutation($input: CreatePaymentInput!) {
  createPayment(input: $input) {
    payment {
      paymentNumber amount appliedAmount unappliedAmount status
      applications { invoiceNumber amount }
    }
    errors { __typename code field }
  }
}"""


def account_input(**over: Any) -> dict[str, Any]:
    base = {
        "name": "Fleet Reseller",
        "currency": "USD",
        "billToContact": {"firstName": "Ada", "lastName": "Lovelace"},
        "paymentTerm": "NET_30",
    }
    base.update(over)
    return base


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def test_create_account_copies_sold_to_and_numbers(gql: Gql) -> None:
    data = await gql(CREATE, input=account_input())
    assert data == {
        "createAccount": {
            "account": {
                "accountNumber": "A00000001",
                "name": "Fleet Reseller",
                "currency": "USD",
                "billCycleDay": 1,
                "paymentTerm": "NET_30",
                "batch": "Batch1",
                "partnerAccount": False,
                "billToContact": {"firstName": "Ada", "lastName": "Lovelace"},
                "soldToContact": {"firstName": "Ada", "lastName": "Lovelace"},
            },
            "errors": [],
        }
    }


async def test_create_account_rejects_bad_input(gql: Gql) -> None:
    data = await gql(CREATE, input=account_input(currency="XXX"))
    assert data["createAccount"] == {
        "account": None,
        "errors": [
            {
                "__typename": "ValidationError",
                "code": "VALIDATION",
                "message": "Unsupported currency 'XXX'",
                "field": ["currency"],
                "retryable": False,
            }
        ],
    }
    data = await gql(CREATE, input=account_input(billCycleDay=32))
    assert data["createAccount"]["errors"][0]["field"] == ["billCycleDay"]
    await gql(CREATE, input=account_input(accountNumber="R-1"))
    data = await gql(CREATE, input=account_input(accountNumber="R-1"))
    assert [e["code"] for e in data["createAccount"]["errors"]] == ["DUPLICATE"]
    listed = await gql("{ accounts { totalCount } }")
    assert listed == {"accounts": {"totalCount": 1}}


async def test_ordinary_account_metrics_move_synchronously(gql: Gql) -> None:
    await gql(CREATE, input=account_input(accountNumber="ORD"))
    inv = await gql(
        INVOICE,
        input={
            "accountNumber": "ORD",
            "invoiceDate": "2026-11-01",
            "status": "POSTED",
            "items": [{"chargeName": "Fleet", "quantity": "3", "unitPrice": "10.50"}],
        },
    )
    assert inv["createStandaloneInvoice"] == {
        "invoice": {
            "invoiceNumber": "INV00000001",
            "status": "POSTED",
            "amount": "31.50",
            "balance": "31.50",
            "dueDate": "2026-12-01",
            "items": [
                {
                    "chargeName": "Fleet",
                    "quantity": "3",
                    "unitPrice": "10.5",
                    "amount": "31.50",
                }
            ],
        },
        "errors": [],
    }
    pay = await gql(
        PAYMENT,
        input={
            "accountNumber": "ORD",
            "amount": "50",
            "effectiveDate": "2026-11-02",
            "invoices": [{"invoiceNumber": "INV00000001", "amount": "20"}],
        },
    )
    assert pay["createPayment"]["payment"]["unappliedAmount"] == "30.00"
    assert pay["createPayment"]["payment"]["applications"] == [
        {"invoiceNumber": "INV00000001", "amount": "20.00"}
    ]
    m = (await gql(METRICS, n="ORD"))["account"]["metrics"]
    assert {k: v for k, v in m.items() if k != "lastMetricsUpdate"} == {
        "balance": "-18.50",
        "creditBalance": "0.00",
        "totalInvoiceBalance": "11.50",
        "totalDebitMemoBalance": "0.00",
        "unappliedPaymentAmount": "30.00",
        "unappliedCreditMemoAmount": "0.00",
        "contractedMrr": "0",
        "lastInvoiceDate": "2026-11-01",
        "currency": "USD",
    }

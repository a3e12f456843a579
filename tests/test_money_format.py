"""Money is a string in and the currency's scale out (issue 11, 2).

These tests compare the answered text on purpose: the format is what they check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing import money
from schema.root import schema
from schema.scalars import JSON_NUMBER
from server.app import create_app
from server.settings import Settings
from tests.helpers import Gql
from tests.order_helpers import CREATE_ORDER, CREATE_PRODUCT, MRR, make_account, make_catalog, order
from tests.test_bad_input import counts, invoice_input
from tests.test_graphql_accounts import CREATE, INVOICE, PAYMENT, account_input

MASKED = "Unexpected error."


@pytest.fixture
async def gql(sessionmaker: Any, tenant: Any) -> Gql:
    g = Gql(sessionmaker, tenant.id)
    await g(CREATE, input=account_input(accountNumber="ACC"))
    return g


def payment(**over: Any) -> dict[str, Any]:
    return {"accountNumber": "ACC", "amount": "5.00", "effectiveDate": "2026-11-01", **over}


def charge(**over: Any) -> dict[str, Any]:
    base = {"name": "Fee", "chargeType": "RECURRING", "chargeModel": "PER_UNIT", "listPrice": "1"}
    return {**base, **over}


def product(*charges: dict[str, Any]) -> dict[str, Any]:
    return {"name": "P", "ratePlans": [{"name": "R", "charges": list(charges)}]}


# --------------------------------------------------------------------------- a string in

JSON_NUMBERS = [
    ("amount as a float", PAYMENT, payment(amount=60.5), "amount"),
    ("amount as an integer", PAYMENT, payment(amount=60), "amount"),
    ("applied amount as a float", PAYMENT,
     payment(invoices=[{"invoiceNumber": "INV1", "amount": 0.1}]), "invoices[0].amount"),
    ("quantity as an integer", INVOICE,
     invoice_input(items=[{"chargeName": "x", "quantity": 3, "unitPrice": "1"}]),
     "items[0].quantity"),
    ("unit price as a float", INVOICE,
     invoice_input(items=[{"chargeName": "x", "quantity": "3", "unitPrice": 0.1}]),
     "items[0].unitPrice"),
    ("list price as a float", CREATE_PRODUCT, product(charge(listPrice=19.99)),
     "ratePlans[0].charges[0].listPrice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "op", "inp", "where"), JSON_NUMBERS, ids=[c[0] for c in JSON_NUMBERS]
)
async def test_a_json_number_for_a_decimal_is_refused_and_writes_nothing(
    gql: Gql, sessionmaker: Any, tenant: Any, case: str, op: str, inp: dict[str, Any], where: str
) -> None:
    before = await counts(sessionmaker, tenant.id)
    res = await gql.raw(op, input=inp)
    assert res.data is None
    assert res.errors is not None and len(res.errors) == 1
    message = res.errors[0].message
    assert message != MASKED
    assert message == f"Variable '$input' has invalid value at .{where}: {JSON_NUMBER}"
    assert await counts(sessionmaker, tenant.id) == before


@pytest.fixture
async def http(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_a_json_number_over_http_is_refused_with_the_message(
    gql: Gql, http: httpx.AsyncClient, sessionmaker: Any, tenant: Any
) -> None:
    before = await counts(sessionmaker, tenant.id)
    body = (
        '{"query": "mutation($input: CreatePaymentInput!) { createPayment(input: $input) '
        '{ payment { amount } errors { code } } }", "variables": {"input": '
        '{"accountNumber": "ACC", "amount": 12.50, "effectiveDate": "2026-11-01"}}}'
    )
    r = await http.post(
        "/graphql",
        content=body,
        headers={"Authorization": f"Bearer {tenant.api_key}", "Content-Type": "application/json"},
    )
    answer = r.json()
    assert answer.get("data") is None
    [error] = answer["errors"]
    assert error["message"] != MASKED
    assert JSON_NUMBER in error["message"], error
    assert await counts(sessionmaker, tenant.id) == before


LITERAL = """mutation { createPayment(input: {accountNumber: "ACC", amount: %s,
  effectiveDate: "2026-11-01"}) { payment { amount } errors { code } } }"""


@pytest.mark.parametrize(
    ("literal", "answered"),
    [
        ("12.50", "12.50"),
        ("60", "60.00"),
        ('"12.5"', "12.50"),
        # 17 significant digits: a binary float reads it as 1000000000000000.0, over the limit.
        ("999999999999999.99", "999999999999999.99"),
    ],
)
async def test_a_literal_in_the_document_is_read_from_its_text(
    gql: Gql, literal: str, answered: str
) -> None:
    data = await gql(LITERAL % literal)
    assert data["createPayment"] == {"payment": {"amount": answered}, "errors": []}


async def test_a_literal_that_is_no_number_is_refused_readably(gql: Gql) -> None:
    res = await gql.raw(LITERAL % "true")
    assert res.errors is not None and len(res.errors) == 1
    assert res.errors[0].message != MASKED
    assert "Decimal" in res.errors[0].message


# --------------------------------------------------------------------------- the scale out

DOCUMENTS = """
query($n: String!) { account(accountNumber: $n) {
  lastPaymentAmount
  metrics { balance creditBalance totalInvoiceBalance totalDebitMemoBalance
            unappliedPaymentAmount unappliedCreditMemoAmount contractedMrr }
  invoices { edges { node { amount balance items { quantity unitPrice amount }
                            applications { amount } } } }
  payments { edges { node { amount appliedAmount refundAmount unappliedAmount
                            applications { amount } } } }
  creditMemos { edges { node { amount appliedAmount refundAmount unappliedAmount
                               items { quantity unitPrice amount } } } }
  debitMemos { edges { node { amount balance items { quantity unitPrice amount } } } } } }"""

REFUND = """
mutation($input: RefundPaymentInput!) {
  refundPayment(input: $input) { refund { amount } errors { code message } } }"""

CREDIT_MEMO = """
mutation($input: CreateCreditMemoInput!) {
  createCreditMemo(input: $input) { creditMemo { amount } errors { code message } } }"""

DEBIT_MEMO = """
mutation($input: CreateDebitMemoInput!) {
  createDebitMemo(input: $input) { debitMemo { amount } errors { code message } } }"""


@pytest.mark.parametrize(("currency", "places"), [("USD", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3)])
async def test_amounts_and_metrics_answer_at_the_currency_minor_unit(
    sessionmaker: Any, tenant: Any, currency: str, places: int
) -> None:
    gql = Gql(sessionmaker, tenant.id)
    await gql(CREATE, input=account_input(accountNumber="M", currency=currency))

    def at(value: str) -> str:
        return f"{Decimal(value):.{places}f}"

    inv = await gql(
        INVOICE,
        input=invoice_input(
            accountNumber="M", items=[{"chargeName": "Seats", "quantity": "2", "unitPrice": "30"}]
        ),
    )
    number = inv["createStandaloneInvoice"]["invoice"]["invoiceNumber"]
    assert inv["createStandaloneInvoice"]["invoice"]["amount"] == at("60")
    pay = await gql(
        PAYMENT,
        input=payment(
            accountNumber="M", amount="25", invoices=[{"invoiceNumber": number, "amount": "10"}]
        ),
    )
    paid = pay["createPayment"]["payment"]
    assert (paid["amount"], paid["appliedAmount"], paid["unappliedAmount"]) == (
        at("25"), at("10"), at("15")
    )  # fmt: skip
    refund = await gql(REFUND, input={"paymentNumber": paid["paymentNumber"], "amount": "5"})
    assert refund["refundPayment"] == {"refund": {"amount": at("5")}, "errors": []}
    credit = await gql(
        CREDIT_MEMO,
        input={"accountNumber": "M", "items": [{"chargeName": "Goodwill", "amount": "7"}],
               "autoPost": True},
    )  # fmt: skip
    assert credit["createCreditMemo"] == {"creditMemo": {"amount": at("7")}, "errors": []}
    debit = await gql(
        DEBIT_MEMO,
        input={"accountNumber": "M", "amount": "4", "autoPost": True},
    )
    assert debit["createDebitMemo"] == {"debitMemo": {"amount": at("4")}, "errors": []}

    got = (await gql(DOCUMENTS, n="M"))["account"]
    assert got == {
        "lastPaymentAmount": at("25"),
        "metrics": {
            "balance": at("37"),  # 50 + 4 - 10 - 7
            "creditBalance": at("0"),
            "totalInvoiceBalance": at("50"),
            "totalDebitMemoBalance": at("4"),
            "unappliedPaymentAmount": at("10"),
            "unappliedCreditMemoAmount": at("7"),
            "contractedMrr": "0",
        },
        "invoices": {"edges": [{"node": {
            "amount": at("60"), "balance": at("50"),
            "items": [{"quantity": "2", "unitPrice": "30", "amount": at("60")}],
            "applications": [{"amount": at("10")}]}}]},
        "payments": {"edges": [{"node": {
            "amount": at("25"), "appliedAmount": at("10"), "refundAmount": at("5"),
            "unappliedAmount": at("10"), "applications": [{"amount": at("10")}]}}]},
        "creditMemos": {"edges": [{"node": {
            "amount": at("7"), "appliedAmount": at("0"), "refundAmount": at("0"),
            "unappliedAmount": at("7"),
            "items": [{"quantity": "1", "unitPrice": "7", "amount": at("7")}]}}]},
        "debitMemos": {"edges": [{"node": {
            "amount": at("4"), "balance": at("4"),
            "items": [{"quantity": "1", "unitPrice": "4", "amount": at("4")}]}}]},
    }  # fmt: skip


async def test_the_rounding_rule_is_half_up(gql: Gql) -> None:
    # Half up, not half even: 1 x 0.125 is 0.13 (half even would say 0.12), and a unit price
    # derived from 0.05 over 8 units is 0.0063 (half even: 0.0062).
    items = [
        {"chargeName": "a", "quantity": "1", "unitPrice": "0.125"},
        {"chargeName": "b", "quantity": "8", "amount": "0.05"},
    ]
    data = await gql(INVOICE, input=invoice_input(items=items))
    invoice = data["createStandaloneInvoice"]["invoice"]
    assert invoice["items"] == [
        {"chargeName": "a", "quantity": "1", "unitPrice": "0.125", "amount": "0.13"},
        {"chargeName": "b", "quantity": "8", "unitPrice": "0.0063", "amount": "0.05"},
    ]
    assert invoice["amount"] == "0.18"


def test_the_rounding_rule_is_named_in_the_schema_and_the_readme() -> None:
    assert money.ROUNDING == "ROUND_HALF_UP"
    description = schema.get_type_by_name("Decimal").description  # type: ignore[union-attr]
    assert money.ROUNDING in description
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert money.ROUNDING in readme


# --------------------------------------------------------------------------- finer figures


async def test_contracted_mrr_of_an_annual_charge_keeps_its_precision(
    sessionmaker: Any, tenant: Any
) -> None:
    gql = Gql(sessionmaker, tenant.id)
    await make_catalog(gql)
    await make_account(gql, "ANN")
    annual = {"productRatePlanNumber": "PRP-ANNUAL"}
    cheaper = {
        "productRatePlanNumber": "PRP-ANNUAL",
        "chargeOverrides": [{"productRatePlanChargeNumber": "PRPC-ANNUAL", "price": "1000"}],
    }
    data = await gql(
        CREATE_ORDER,
        input=order(
            "ANN",
            [{"orderActions": [{"createSubscription": {"ratePlans": [annual]}}]},
             {"orderActions": [{"createSubscription": {"ratePlans": [cheaper]}}]}],
        ),
    )  # fmt: skip
    assert data["createOrder"]["errors"] == []
    subs = data["createOrder"]["subscriptions"]
    # 1200 a year is 100 a month: no "100.000000", no "1E+2".
    assert subs[0]["mrr"] == "100"
    assert subs[0]["ratePlans"][0]["charges"][0]["price"] == "1200"
    assert subs[0]["ratePlans"][0]["charges"][0]["quantity"] == "1"
    # 1000 a year is 83.333333... a month: six places, not cents.
    assert subs[1]["mrr"] == "83.333333"
    assert subs[1]["ratePlans"][0]["charges"][0]["mrr"] == "83.333333"
    assert subs[1]["ratePlans"][0]["charges"][0]["price"] == "1000"
    mrr = (await gql(MRR, n="ANN"))["account"]["metrics"]["contractedMrr"]
    assert mrr == "183.333333"

    metrics_type = schema.get_type_by_name("AccountMetrics")
    [field] = [f for f in metrics_type.fields if f.python_name == "contracted_mrr"]  # type: ignore[union-attr]
    assert "not rounded to the currency's minor unit" in (field.description or "")


async def test_catalog_prices_keep_their_places_without_needless_zeros(gql: Gql) -> None:
    data = await gql(
        CREATE_PRODUCT,
        input=product(
            charge(listPrice="12.3450", defaultQuantity="2.50"),
            charge(name="Ten", listPrice="10.0000"),
        ),
    )
    charges = data["createProduct"]["product"]["ratePlans"][0]["charges"]
    assert [(c["listPrice"], c["defaultQuantity"]) for c in charges] == [
        ("12.345", "2.5"),
        ("10", "1"),
    ]


@pytest.mark.parametrize(
    ("stored", "answered"),
    [
        ("100.000000", "100"),
        ("10", "10"),
        ("1E+1", "10"),
        ("0.000000", "0"),
        ("8.333333", "8.333333"),
        ("0.5000", "0.5"),
        ("1234567890123456.0000", "1234567890123456"),
    ],
)
def test_exact_figures_are_never_in_exponent_form(stored: str, answered: str) -> None:
    from schema.scalars import serialize_decimal

    assert serialize_decimal(money.exact_out(Decimal(stored))) == answered


@pytest.mark.parametrize(
    ("amount", "currency", "answered"),
    [
        ("60.0000", "USD", "60.00"),
        ("60.0000", "JPY", "60"),
        ("60.0000", "BHD", "60.000"),
        ("0", "KWD", "0.000"),
        ("-2.345", "USD", "-2.35"),
        ("2.5", "JPY", "3"),
    ],
)
def test_money_out_is_the_minor_unit_rounded_half_up(
    amount: str, currency: str, answered: str
) -> None:
    from schema.scalars import serialize_decimal

    assert serialize_decimal(money.money_out(Decimal(amount), currency)) == answered

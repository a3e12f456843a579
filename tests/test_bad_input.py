"""Bad input answers a typed UserError and writes nothing (issue: foundation)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import Gql
from tests.test_graphql_accounts import CREATE, INVOICE, PAYMENT, account_input

POST = (
    "mutation($n: String!) { postInvoice(input: {invoiceNumber: $n}) "
    "{ invoice { status } errors { __typename code field } } }"
)
UNPOST = (
    "mutation($n: String!) { unpostInvoice(input: {invoiceNumber: $n}) "
    "{ invoice { status } errors { __typename code field } } }"
)
APPLY = """mutation($input: PaymentApplicationInput!) { applyPayment(input: $input) {
  payment { appliedAmount } errors { __typename code field } } }"""


@pytest.fixture
async def gql(sessionmaker: Any, tenant: Any) -> Gql:
    g = Gql(sessionmaker, tenant.id)
    await g(CREATE, input=account_input(accountNumber="ACC"))
    await g(CREATE, input=account_input(accountNumber="YEN", currency="JPY"))
    return g


async def counts(sessionmaker: Any, tenant_id: int) -> dict[str, Any]:
    async with sessionmaker() as s:
        row = (
            (
                await s.execute(
                    text(
                        "SELECT (SELECT count(*) FROM invoice WHERE tenant_id = :t) AS invoices,"
                        " (SELECT count(*) FROM invoice_item WHERE tenant_id = :t) AS items,"
                        " (SELECT count(*) FROM payment WHERE tenant_id = :t) AS payments,"
                        " (SELECT count(*) FROM application WHERE tenant_id = :t) AS applications,"
                        " (SELECT count(*) FROM metrics_change WHERE tenant_id = :t) AS ledger,"
                        " (SELECT array_agg(ARRAY[total_invoice_balance, unapplied_payment_amount]"
                        "   ORDER BY account_id) FROM account_metrics WHERE tenant_id = :t)"
                        " AS metrics,"
                        " (SELECT array_agg(balance ORDER BY id) FROM invoice WHERE tenant_id = :t)"
                        " AS balances"
                    ),
                    {"t": tenant_id},
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


def invoice_input(**over: Any) -> dict[str, Any]:
    base = {
        "accountNumber": "ACC",
        "invoiceDate": "2026-11-01",
        "status": "POSTED",
        "items": [{"chargeName": "Seat", "amount": "10.00"}],
    }
    base.update(over)
    return base


CASES = [
    ("unknown account", INVOICE, "createStandaloneInvoice",
     invoice_input(accountNumber="NOPE"),
     "NotFoundError", ["accountNumber"]),
    ("wrong currency", INVOICE, "createStandaloneInvoice",
     invoice_input(currency="EUR"),
     "CurrencyMismatchError", ["currency"]),
    ("negative amount", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "amount": "-1"}]),
     "ValidationError", ["items", "0", "amount"]),
    ("zero amount", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "amount": "0"}]),
     "ValidationError", ["items", "0", "amount"]),
    ("over-precise amount", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "amount": "1.005"}]),
     "ValidationError", ["items", "0", "amount"]),
    ("yen has no cents", INVOICE, "createStandaloneInvoice",
     invoice_input(accountNumber="YEN", items=[{"chargeName": "x", "amount": "100.5"}]),
     "ValidationError", ["items", "0", "amount"]),
    ("payment wrong currency", PAYMENT, "createPayment",
     {"accountNumber": "ACC", "amount": "5", "effectiveDate": "2026-11-01", "currency": "GBP"},
     "CurrencyMismatchError", ["currency"]),
    ("payment zero", PAYMENT, "createPayment",
     {"accountNumber": "ACC", "amount": "0", "effectiveDate": "2026-11-01"},
     "ValidationError", ["amount"]),
    ("payment over-precise", PAYMENT, "createPayment",
     {"accountNumber": "ACC", "amount": "0.001", "effectiveDate": "2026-11-01"},
     "ValidationError", ["amount"]),
    ("payment unknown account", PAYMENT, "createPayment",
     {"accountNumber": "NOPE", "amount": "5", "effectiveDate": "2026-11-01"},
     "NotFoundError", ["accountNumber"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "op", "field", "inp", "typename", "path"), CASES, ids=[c[0] for c in CASES]
)
async def test_rejected_and_nothing_written(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    case: str,
    op: str,
    field: str,
    inp: dict[str, Any],
    typename: str,
    path: list[str],
) -> None:
    before = await counts(sessionmaker, tenant.id)
    data = await gql(op, input=inp)
    result = data[field]
    assert [e["__typename"] for e in result["errors"]] == [typename]
    assert result["errors"][0]["field"] == path
    assert [v for k, v in result.items() if k != "errors"] == [None]
    assert await counts(sessionmaker, tenant.id) == before


async def test_state_and_balance_rules(gql: Gql, sessionmaker: Any, tenant: Any) -> None:
    inv = (await gql(INVOICE, input=invoice_input(invoiceNumber="MIG-1")))[
        "createStandaloneInvoice"
    ]
    assert inv["errors"] == []
    draft = (await gql(INVOICE, input=invoice_input(invoiceNumber="MIG-2", status="DRAFT")))[
        "createStandaloneInvoice"
    ]
    assert draft["errors"] == []
    pay = (
        await gql(
            PAYMENT, input={"accountNumber": "ACC", "amount": "8", "effectiveDate": "2026-11-02"}
        )
    )["createPayment"]
    pnum = pay["payment"]["paymentNumber"]
    before = await counts(sessionmaker, tenant.id)

    dup = await gql(INVOICE, input=invoice_input(invoiceNumber="MIG-1"))
    assert dup["createStandaloneInvoice"]["errors"] == [
        {"__typename": "DuplicateError", "code": "DUPLICATE", "field": ["invoiceNumber"]}
    ]
    posted_again = await gql(POST, n="MIG-1")
    assert posted_again["postInvoice"] == {
        "invoice": None,
        "errors": [{"__typename": "InvalidStateError", "code": "INVALID_STATE", "field": None}],
    }
    to_draft = await gql(
        APPLY,
        input={"paymentNumber": pnum, "invoices": [{"invoiceNumber": "MIG-2", "amount": "1"}]},
    )
    assert to_draft["applyPayment"]["errors"][0]["code"] == "INVALID_STATE"
    over_balance = await gql(
        PAYMENT,
        input={"accountNumber": "ACC", "amount": "50", "effectiveDate": "2026-11-02",
               "invoices": [{"invoiceNumber": "MIG-1", "amount": "10.01"}]},
    )  # fmt: skip
    assert over_balance["createPayment"]["errors"][0]["code"] == "AMOUNT_EXCEEDS_OPEN_BALANCE"
    over_unapplied = await gql(
        APPLY,
        input={"paymentNumber": pnum, "invoices": [{"invoiceNumber": "MIG-1", "amount": "8.01"}]},
    )
    assert over_unapplied["applyPayment"]["errors"][0]["code"] == "AMOUNT_EXCEEDS_UNAPPLIED"
    assert await counts(sessionmaker, tenant.id) == before

    ok = await gql(
        APPLY,
        input={"paymentNumber": pnum, "invoices": [{"invoiceNumber": "MIG-1", "amount": "8"}]},
    )
    assert ok["applyPayment"] == {"payment": {"appliedAmount": "8.00"}, "errors": []}
    before = await counts(sessionmaker, tenant.id)
    unpost = await gql(UNPOST, n="MIG-1")
    assert unpost["unpostInvoice"]["errors"][0]["code"] == "INVALID_STATE"
    assert await counts(sessionmaker, tenant.id) == before


async def test_idempotency_key_replays_and_refuses_reuse(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    first = await gql(INVOICE, input=invoice_input(idempotencyKey="k-1"))
    again = await gql(INVOICE, input=invoice_input(idempotencyKey="k-1"))
    assert again == first
    other = await gql(
        INVOICE,
        input=invoice_input(idempotencyKey="k-1", items=[{"chargeName": "y", "amount": "3.00"}]),
    )
    assert other["createStandaloneInvoice"]["errors"] == [
        {
            "__typename": "IdempotencyKeyReusedError",
            "code": "IDEMPOTENCY_KEY_REUSED",
            "field": ["idempotencyKey"],
        }
    ]
    assert (await counts(sessionmaker, tenant.id))["invoices"] == 1

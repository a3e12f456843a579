"""A client's mistake answers a readable, typed error, never "Unexpected error." (issue 11, 1)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from tests.helpers import Gql
from tests.order_helpers import CREATE_PRODUCT
from tests.test_bad_input import counts, invoice_input
from tests.test_graphql_accounts import CREATE, INVOICE, PAYMENT, account_input

MASKED = "Unexpected error."

BILL_RUN = """
mutation($input: CreateBillRunInput!) { createBillRun(input: $input) {
  billRun { billRunNumber } errors { __typename code field } } }"""


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


COERCION = [
    ("amount abc", PAYMENT, payment(amount="abc"), "amount"),
    ("amount empty", PAYMENT, payment(amount=""), "amount"),
    ("amount comma", PAYMENT, payment(amount="1,00"), "amount"),
    ("amount arabic-indic digits", PAYMENT, payment(amount="\u0661\u0660\u0660"), "amount"),
    ("amount underscore", PAYMENT, payment(amount="1_000"), "amount"),
    ("amount with spaces", PAYMENT, payment(amount=" 5 "), "amount"),
    ("amount NaN", PAYMENT, payment(amount="NaN"), "amount"),
    ("no such date", PAYMENT, payment(effectiveDate="2026-02-30"), "effectiveDate"),
    ("unknown method", PAYMENT, payment(method="BITCOIN"), "method"),
    ("bill cycle day beyond Int", CREATE, account_input(billCycleDay=2147483648), "billCycleDay"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "op", "inp", "where"), COERCION, ids=[c[0] for c in COERCION])
async def test_coercion_errors_are_graphql_cores_own_message(
    gql: Gql, case: str, op: str, inp: dict[str, Any], where: str
) -> None:
    res = await gql.raw(op, input=inp)
    assert res.data is None
    assert res.errors is not None and len(res.errors) == 1
    message = res.errors[0].message
    assert message != MASKED
    assert message.startswith("Variable '$input' has invalid value"), message
    assert f"at .{where}:" in message, message


async def test_a_literal_that_does_not_coerce_is_readable(gql: Gql) -> None:
    res = await gql.raw(
        'mutation { createPayment(input: {accountNumber: "ACC", amount: "1_000",'
        ' effectiveDate: "2026-11-01"}) { errors { code } } }'
    )
    assert res.errors is not None
    assert res.errors[0].message != MASKED
    assert "Decimal" in res.errors[0].message


TYPED = [
    ("quantity 1e309", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "quantity": "1e309", "unitPrice": "1"}]),
     ["items", "0", "quantity"]),
    ("unit price 1e309", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "quantity": "1", "unitPrice": "1e309"}]),
     ["items", "0", "unitPrice"]),
    ("list price 1e309", CREATE_PRODUCT, "createProduct",
     {"name": "P", "ratePlans": [{"name": "R", "charges": [charge(listPrice="1e309")]}]},
     ["ratePlans", "0", "charges", "0", "listPrice"]),
    ("default quantity 1e309", CREATE_PRODUCT, "createProduct",
     {"name": "P", "ratePlans": [{"name": "R", "charges": [charge(defaultQuantity="1e309")]}]},
     ["ratePlans", "0", "charges", "0", "defaultQuantity"]),
    ("amount beyond NUMERIC(20,4)", PAYMENT, "createPayment",
     payment(amount="123456789012345678901234"), ["amount"]),
    ("quantity beyond NUMERIC(20,4)", INVOICE, "createStandaloneInvoice",
     invoice_input(items=[{"chargeName": "x", "quantity": "99999999999999999", "unitPrice": "1"}]),
     ["items", "0", "quantity"]),
    ("empty batch", CREATE, "createAccount", account_input(batch=""), ["batch"]),
    ("blank batch", CREATE, "createAccount", account_input(batch="   "), ["batch"]),
    ("blank bill-run batch", BILL_RUN, "createBillRun",
     {"targetDate": "2026-11-01", "batch": " "}, ["batch"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "op", "field", "inp", "path"), TYPED, ids=[c[0] for c in TYPED])
async def test_bad_values_answer_a_validation_error_and_write_nothing(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    case: str,
    op: str,
    field: str,
    inp: dict[str, Any],
    path: list[str],
) -> None:
    before = await counts(sessionmaker, tenant.id)
    res = await gql.raw(op, input=inp)
    assert res.errors is None, res.errors
    assert res.data is not None
    errors = res.data[field]["errors"]
    assert [(e["__typename"], e["code"], e["field"]) for e in errors] == [
        ("ValidationError", "VALIDATION", path)
    ]
    assert await counts(sessionmaker, tenant.id) == before


@pytest.mark.parametrize(
    ("op", "inp", "where"),
    [
        (PAYMENT, payment(idempotencyKey=""), "input.idempotencyKey"),
        (INVOICE, invoice_input(idempotencyKey="  "), "input.idempotencyKey"),
        (CREATE, account_input(idempotencyKey=""), "input.idempotencyKey"),
    ],
)
async def test_an_empty_idempotency_key_is_refused_and_never_writes(
    gql: Gql, sessionmaker: Any, tenant: Any, op: str, inp: dict[str, Any], where: str
) -> None:
    before = await counts(sessionmaker, tenant.id)
    for _ in range(3):
        res = await gql.raw(op, input=inp)
        assert res.data is None
        assert res.errors is not None and len(res.errors) == 1
        assert res.errors[0].extensions == {"code": "VALIDATION", "retryable": False}
        assert f"at '{where}'" in res.errors[0].message
    assert await counts(sessionmaker, tenant.id) == before


async def test_an_empty_idempotency_key_in_a_literal_is_refused(gql: Gql) -> None:
    res = await gql.raw(
        'mutation { createPayment(input: {accountNumber: "ACC", amount: "5",'
        ' effectiveDate: "2026-11-01", idempotencyKey: ""}) { errors { code } } }'
    )
    assert res.errors is not None
    assert res.errors[0].extensions == {"code": "VALIDATION", "retryable": False}


async def test_a_sum_beyond_the_columns_is_a_validation_error(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    # Each value is in range; their product is not (NUMERIC(20,4) holds 16 integer digits).
    before = await counts(sessionmaker, tenant.id)
    item = {"chargeName": "x", "quantity": "99999999999", "unitPrice": "99999999999"}
    res = await gql.raw(INVOICE, input=invoice_input(items=[item]))
    assert res.errors is None
    errors = res.data["createStandaloneInvoice"]["errors"]
    assert [(e["__typename"], e["code"]) for e in errors] == [("ValidationError", "VALIDATION")]
    assert await counts(sessionmaker, tenant.id) == before


NUL_CASES = [
    ("account name", CREATE, account_input(name="Fleet\x00Reseller")),
    ("contact", CREATE, account_input(billToContact={"firstName": "A\x00", "lastName": "B"})),
    ("charge name", INVOICE, invoice_input(items=[{"chargeName": "x\x00", "amount": "1"}])),
    ("payment reference", PAYMENT, payment(reference="\x00")),
]


@pytest.mark.parametrize(("case", "op", "inp"), NUL_CASES, ids=[c[0] for c in NUL_CASES])
async def test_a_nul_character_in_text_is_a_typed_error(
    gql: Gql, sessionmaker: Any, tenant: Any, case: str, op: str, inp: dict[str, Any]
) -> None:
    before = await counts(sessionmaker, tenant.id)
    res = await gql.raw(op, input=inp)
    assert res.data is None
    assert res.errors is not None and len(res.errors) == 1
    error = res.errors[0]
    assert error.message != MASKED
    assert "NUL" in error.message
    assert error.extensions == {"code": "VALIDATION", "retryable": False}
    assert await counts(sessionmaker, tenant.id) == before


async def test_a_nul_character_in_a_literal_is_a_typed_error(gql: Gql) -> None:
    res = await gql.raw('{ account(accountNumber: "A\\u0000") { name } }')
    assert res.errors is not None
    assert res.errors[0].extensions == {"code": "VALIDATION", "retryable": False}


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ accounts(first: -1) { totalCount } }", "VALIDATION"),
        ("{ accounts(first: 100000) { totalCount } }", "LIMIT_EXCEEDED"),
        ('{ account(accountNumber: "ACC") { invoices(first: -5) { totalCount } } }', "VALIDATION"),
        (
            '{ account(accountNumber: "ACC") { payments(first: 9999) { totalCount } } }',
            "LIMIT_EXCEEDED",
        ),
    ],
)
async def test_first_out_of_range_is_a_typed_error(gql: Gql, query: str, code: str) -> None:
    res = await gql.raw(query)
    assert res.errors is not None and len(res.errors) == 1
    error = res.errors[0]
    assert error.message != MASKED
    assert "first" in error.message
    assert error.extensions is not None
    assert error.extensions["code"] == code
    assert error.extensions["field"] == ["first"]
    assert error.extensions["retryable"] is False


def _forged(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


ACCOUNTS_AFTER = '{ accounts(after: "CURSOR") { totalCount } }'
EVENTS_AFTER = '{ events(after: "CURSOR") { edges { cursor } } }'


@pytest.mark.parametrize(
    ("query", "raw"),
    [
        # Well-formed cursors holding ids beyond the bigint columns.
        (ACCOUNTS_AFTER, "c:" + "9" * 40),
        (EVENTS_AFTER, f"e:{'9' * 40}:1"),
        (EVENTS_AFTER, f"e:1:{'9' * 40}"),
    ],
)
async def test_a_forged_cursor_beyond_the_ids_is_a_typed_error(
    gql: Gql, query: str, raw: str
) -> None:
    res = await gql.raw(query.replace("CURSOR", _forged(raw)))
    assert res.errors is not None and len(res.errors) == 1
    assert res.errors[0].message == "Invalid cursor"
    assert res.errors[0].extensions is not None
    assert res.errors[0].extensions["code"] == "VALIDATION"


async def test_unexpected_exceptions_are_still_masked_and_logged_at_error(
    gql: Gql, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billing import tenants

    async def broken(session: Any, tenant_id: int) -> Any:
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(tenants, "get_settings", broken)
    with caplog.at_level(logging.INFO):
        res = await gql.raw("{ tenantSettings { metricsRefreshInterval } }")
    assert res.errors is not None
    assert [e.message for e in res.errors] == [MASKED]
    assert "secret" not in str(res.errors[0].formatted)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_client_mistakes_are_logged_below_error(
    gql: Gql, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await gql.raw(PAYMENT, input=payment(amount="abc"))
        await gql.raw("{ accounts(first: -1) { totalCount } }")
        await gql.raw("{ nope }")
    mistakes = [r for r in caplog.records if r.name.startswith(("strawberry", "partnerbill"))]
    assert mistakes, "client mistakes are logged"
    assert all(r.levelno < logging.ERROR for r in mistakes), [
        (r.name, r.levelname, r.getMessage()) for r in mistakes
    ]

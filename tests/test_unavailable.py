"""A database that is not there (a restart, a refused connection) is answered with a typed,
retryable UNAVAILABLE error, never "Unexpected error.": in a mutation's payload, and at the
top level for a query."""

from __future__ import annotations

from typing import Any

import pytest

from db import pg
from db.engine import create_engine, create_sessionmaker
from resolvers.context import Context, Services
from schema.root import schema

# Nothing listens on port 1: every connection is refused, as during a restart.
DOWN = "postgresql://postgres@127.0.0.1:1/postgres"

PAYMENT = """mutation($input: CreatePaymentInput!) { createPayment(input: $input) {
  payment { paymentNumber } errors { __typename code retryable } } }"""
ACCOUNT = """mutation($input: CreateAccountInput!) { createAccount(input: $input) {
  account { accountNumber } errors { __typename code retryable } } }"""
READ = """query { account(accountNumber: "A") { accountNumber } }"""
INVOICES = """query { invoice(invoiceNumber: "INV1") { invoiceNumber } }"""


@pytest.fixture(params=["asyncpg pool", "sqlalchemy only"])
async def down(request: Any) -> Any:
    engine = create_engine(DOWN)
    pool = await pg.create_pool(DOWN) if request.param == "asyncpg pool" else None
    try:
        yield Services(sessionmaker=create_sessionmaker(engine), pg=pool)
    finally:
        if pool is not None:
            await pool.close()
        await engine.dispose()


async def run(services: Services, query: str, **variables: Any) -> Any:
    return await schema.execute(
        query, variable_values=variables, context_value=Context(tenant_id=1, services=services)
    )


async def test_a_one_statement_write_answers_unavailable(down: Services) -> None:
    res = await run(
        down,
        PAYMENT,
        input={"accountNumber": "A", "amount": "10.00", "effectiveDate": "2026-11-02"},
    )
    assert res.errors is None
    assert res.data == {
        "createPayment": {
            "payment": None,
            "errors": [
                {"__typename": "UnavailableError", "code": "UNAVAILABLE", "retryable": True}
            ],
        }
    }


async def test_a_session_write_answers_unavailable(down: Services) -> None:
    account = {
        "name": "A",
        "currency": "USD",
        "billToContact": {"firstName": "A", "lastName": "B"},
    }
    res = await run(down, ACCOUNT, input=account)
    assert res.errors is None
    assert res.data["createAccount"]["errors"] == [
        {"__typename": "UnavailableError", "code": "UNAVAILABLE", "retryable": True}
    ]


@pytest.mark.parametrize("query", [READ, INVOICES])
async def test_a_read_answers_unavailable_at_the_top_level(down: Services, query: str) -> None:
    res = await run(down, query)
    assert res.errors is not None and len(res.errors) == 1
    error = res.errors[0]
    assert error.message != "Unexpected error."
    assert error.extensions is not None
    assert error.extensions["code"] == "UNAVAILABLE"
    assert error.extensions["retryable"] is True

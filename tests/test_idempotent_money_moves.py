"""A retried refund never pays twice: every input that moves money (refunds, applications,
cancellations) takes an idempotency key, with the replay rules of the creates. Twenty
concurrent identical requests under one key write one row and all answer the same; the key
reused with another amount is IDEMPOTENCY_KEY_REUSED and writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import Gql
from tests.test_graphql_accounts import CREATE, account_input
from tests.test_memos import Api, Q

RETRIES = 20


@pytest.fixture
async def books(sessionmaker: Any, tenant: Any) -> Api:
    """Account M: posted invoice INV00000001 of 100, unapplied payment P00000001 of 100 and
    posted credit memo CM00000001 of 50."""
    api = Api(Gql(sessionmaker, tenant.id), sessionmaker, tenant.id)
    await api.gql(CREATE, input=account_input(accountNumber="M"))
    await api("invoice", accountNumber="M", invoiceDate="2026-11-01", status="POSTED",
              items=[{"chargeName": "X", "amount": "100"}])  # fmt: skip
    await api("createPayment", accountNumber="M", amount="100", effectiveDate="2026-11-02")
    await api("createCreditMemo", accountNumber="M", amount="50", autoPost=True)
    return api


async def rows(api: Api, table: str) -> int:
    async with api.sessionmaker() as s:
        return int(
            (
                await s.execute(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),
                    {"t": api.tenant_id},
                )
            ).scalar_one()
        )


async def retried(api: Api, op: str, input: dict[str, Any]) -> list[dict[str, Any]]:
    """The same request sent RETRIES times at once, each answer as given."""
    answers = await asyncio.gather(*(api.gql(Q[op], input=input) for _ in range(RETRIES)))
    return [a[op] for a in answers]


CASES = {
    "refundPayment": ("refund", {"paymentNumber": "P00000001", "amount": "10"}),
    "refundCreditMemo": ("refund", {"memoNumber": "CM00000001", "amount": "10"}),
    "applyPayment": (
        "application",
        {
            "paymentNumber": "P00000001",
            "invoices": [{"invoiceNumber": "INV00000001", "amount": "10"}],
        },
    ),
}


def other_amount(op: str, input: dict[str, Any]) -> dict[str, Any]:
    if op == "applyPayment":
        return {**input, "invoices": [{"invoiceNumber": "INV00000001", "amount": "11"}]}
    return {**input, "amount": "11"}


@pytest.mark.parametrize("op", list(CASES))
async def test_concurrent_retries_write_once_and_answer_alike(books: Api, op: str) -> None:
    table, input = CASES[op]
    before = await rows(books, table)
    answers = await retried(books, op, {**input, "idempotencyKey": f"{op}-1"})
    assert await rows(books, table) == before + 1
    assert answers[0]["errors"] == []
    assert all(a == answers[0] for a in answers)

    # The key again with another amount is refused and writes nothing.
    errs = await books.fails(op, **other_amount(op, input), idempotencyKey=f"{op}-1")
    assert errs == [
        {
            "__typename": "IdempotencyKeyReusedError",
            "code": "IDEMPOTENCY_KEY_REUSED",
            "field": ["idempotencyKey"],
        }
    ]
    assert await rows(books, table) == before + 1

    # Without a key, each request is its own write.
    await books(op, **input)
    assert await rows(books, table) == before + 2


async def test_refund_replay_is_the_first_refund(books: Api) -> None:
    first = await books("refundPayment", paymentNumber="P00000001", amount="5", idempotencyKey="r")
    again = await books("refundPayment", paymentNumber="P00000001", amount="5", idempotencyKey="r")
    assert first == again
    assert first["refundNumber"] == "R00000001"
    payment = await books.gql('query { payment(paymentNumber: "P00000001") { refundAmount } }')
    assert payment == {"payment": {"refundAmount": "5.00"}}


async def test_other_money_moves_replay(books: Api) -> None:
    """unapplyPayment, applyCreditMemo, unapplyCreditMemo and cancelPayment replay too."""
    target = {"invoices": [{"invoiceNumber": "INV00000001", "amount": "10"}]}
    await books("applyPayment", paymentNumber="P00000001", **target)
    await books("applyCreditMemo", memoNumber="CM00000001", **target)
    for op, number in (
        ("unapplyPayment", {"paymentNumber": "P00000001"}),
        ("applyCreditMemo", {"memoNumber": "CM00000001"}),
        ("unapplyCreditMemo", {"memoNumber": "CM00000001"}),
    ):
        first = await books(op, **number, **target, idempotencyKey=f"{op}-k")
        again = await books(op, **number, **target, idempotencyKey=f"{op}-k")
        assert first == again, op
        errs = await books.fails(
            op, **number, invoices=[{"invoiceNumber": "INV00000001", "amount": "1"}],
            idempotencyKey=f"{op}-k",
        )  # fmt: skip
        assert [e["code"] for e in errs] == ["IDEMPOTENCY_KEY_REUSED"], op
    # After the replays: the payment's 10 was unapplied once, the memo's 10 applied once more
    # and then unapplied once.
    q = await books.gql(
        'query { payment(paymentNumber: "P00000001") { appliedAmount } '
        'creditMemo(memoNumber: "CM00000001") { appliedAmount } }'
    )
    assert q == {"payment": {"appliedAmount": "0.00"}, "creditMemo": {"appliedAmount": "10.00"}}

    # A second payment, cancelled twice under one key: the second answer replays the first.
    await books("createPayment", accountNumber="M", amount="7", effectiveDate="2026-11-03")
    first = await books("cancelPayment", paymentNumber="P00000002", idempotencyKey="c")
    again = await books("cancelPayment", paymentNumber="P00000002", idempotencyKey="c")
    assert first == again
    assert first["status"] == "CANCELED"

"""The bulk mutations (createStandaloneInvoices, createPayments, createCreditMemos,
createDebitMemos): per-row errors with paths under both policies, the cap, idempotent
replays of whole calls and single rows, concurrency, and the metrics of partner and
ordinary accounts."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing import metrics as met
from billing.accounts import get_account
from tests.helpers import Gql

CREATE_ACCOUNT = """
mutation($n: String!, $p: Boolean!) {
  createAccount(input: {accountNumber: $n, name: $n, currency: "USD", partnerAccount: $p,
      billToContact: {firstName: "A", lastName: "B"}}) { errors { code } }
}
"""

INVOICES = """
mutation($rows: [CreateStandaloneInvoiceInput!]!, $policy: ErrorPolicy) {
  createStandaloneInvoices(input: {invoices: $rows, errorPolicy: $policy}) {
    count
    results { invoice { invoiceNumber amount status accountNumber }
              errors { __typename code field retryable } }
  }
}
"""

PAYMENTS = """
mutation($rows: [CreatePaymentInput!]!, $policy: ErrorPolicy) {
  createPayments(input: {payments: $rows, errorPolicy: $policy}) {
    count
    results { payment { paymentNumber amount appliedAmount unappliedAmount }
              errors { code field } }
  }
}
"""

CREDIT_MEMOS = """
mutation($rows: [CreateCreditMemoInput!]!, $policy: ErrorPolicy) {
  createCreditMemos(input: {creditMemos: $rows, errorPolicy: $policy}) {
    count
    results { creditMemo { memoNumber amount status accountNumber invoiceNumber }
              errors { code field } }
  }
}
"""

DEBIT_MEMOS = """
mutation($rows: [CreateDebitMemoInput!]!, $policy: ErrorPolicy) {
  createDebitMemos(input: {debitMemos: $rows, errorPolicy: $policy}) {
    count
    results { debitMemo { memoNumber amount status accountNumber } errors { code field } }
  }
}
"""


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def _account(gql: Gql, number: str, partner: bool) -> None:
    data = await gql(CREATE_ACCOUNT, n=number, p=partner)
    assert data["createAccount"]["errors"] == []


def _invoice(account: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "accountNumber": account,
        "invoiceDate": "2026-10-01",
        "status": "POSTED",
        "items": [{"chargeName": "Migrated", "amount": amount}],
        **extra,
    }


def _answers(payload: dict[str, Any]) -> list[tuple[str | None, Decimal | None, list[Any]]]:
    """Each result's invoice number and amount (as a Decimal) and its errors."""
    out = []
    for r in payload["results"]:
        inv = r["invoice"]
        out.append((inv and inv["invoiceNumber"], inv and Decimal(inv["amount"]), r["errors"]))
    return out


async def _count(sessionmaker: Any, tenant_id: int, table: str) -> int:
    async with sessionmaker() as s:
        return int(
            (
                await s.execute(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}
                )
            ).scalar_one()
        )


async def _metrics(
    sessionmaker: Any, tenant_id: int, number: str
) -> tuple[met.Metrics, met.Metrics]:
    """(stored, recomputed from the documents) of an account."""
    async with sessionmaker() as s:
        acc = await get_account(s, tenant_id, number)
        return await met.stored_metrics(s, acc["id"]), await met.recompute(s, acc["id"])


async def test_reject_everything_writes_nothing_and_points_at_the_failing_rows(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "ORD", False)
    rows = [
        _invoice("ORD", "10.00"),
        _invoice("NOPE", "10.00"),
        {**_invoice("ORD", "1"), "items": [{"chargeName": "X", "amount": "1.001"}]},
        _invoice("ORD", "5.00"),
    ]
    data = (await gql(INVOICES, rows=rows))["createStandaloneInvoices"]
    assert data["count"] == 0
    results = data["results"]
    assert len(results) == 4
    assert [r["invoice"] for r in results] == [None] * 4
    assert results[0]["errors"] == [] and results[3]["errors"] == []
    assert results[1]["errors"] == [
        {"__typename": "NotFoundError", "code": "NOT_FOUND",
         "field": ["invoices", "1", "accountNumber"], "retryable": False}
    ]  # fmt: skip
    assert results[2]["errors"][0]["code"] == "VALIDATION"
    assert results[2]["errors"][0]["field"] == ["invoices", "2", "items", "0", "amount"]
    assert await _count(sessionmaker, tenant.id, "invoice") == 0
    stored, _ = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.total_invoice_balance == Decimal(0)


async def test_reject_failed_rows_writes_the_others_in_input_order(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "ORD", False)
    rows = [
        _invoice("ORD", "10.00", invoiceNumber="MIG-1"),
        _invoice("ORD", "-3.00"),
        _invoice("ORD", "20.00", invoiceNumber="MIG-1"),  # given twice in the call
        _invoice("ORD", "30.00"),
    ]
    data = (await gql(INVOICES, rows=rows, policy="REJECT_FAILED_ROWS"))["createStandaloneInvoices"]
    assert data["count"] == 2
    r = data["results"]
    assert r[0]["invoice"]["invoiceNumber"] == "MIG-1"
    assert Decimal(r[0]["invoice"]["amount"]) == Decimal("10")
    assert r[1]["invoice"] is None
    assert r[1]["errors"][0]["field"] == ["invoices", "1", "items", "0", "amount"]
    assert r[2]["invoice"] is None
    assert r[2]["errors"][0]["code"] == "DUPLICATE"
    assert r[2]["errors"][0]["field"] == ["invoices", "2", "invoiceNumber"]
    assert Decimal(r[3]["invoice"]["amount"]) == Decimal("30")
    assert r[3]["errors"] == []
    assert await _count(sessionmaker, tenant.id, "invoice") == 2
    # A number already used in the tenant is a DUPLICATE of that row alone.
    again = (await gql(INVOICES, rows=[_invoice("ORD", "1.00", invoiceNumber="MIG-1"),
                                        _invoice("ORD", "2.00")],
                       policy="REJECT_FAILED_ROWS"))["createStandaloneInvoices"]  # fmt: skip
    assert again["count"] == 1
    assert again["results"][0]["errors"][0]["code"] == "DUPLICATE"
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.total_invoice_balance == Decimal("42")


async def test_a_call_that_asks_only_for_errors_writes_the_same(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    """A migration client that selects only each row's errors (no documents are built for
    its answer) gets the same count and errors, and the same rows are written."""
    await _account(gql, "ORD", False)
    rows = [_invoice("ORD", "10.00"), _invoice("ORD", "-3.00"), _invoice("ORD", "30.00")]
    errors_only = INVOICES.replace("invoice { invoiceNumber amount status accountNumber }", "")
    assert errors_only != INVOICES
    data = (await gql(errors_only, rows=rows, policy="REJECT_FAILED_ROWS"))[
        "createStandaloneInvoices"
    ]
    assert data["count"] == 2
    assert [[e["code"] for e in r["errors"]] for r in data["results"]] == [[], ["VALIDATION"], []]
    assert data["results"][1]["errors"][0]["field"] == ["invoices", "1", "items", "0", "amount"]
    assert await _count(sessionmaker, tenant.id, "invoice") == 2
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.total_invoice_balance == Decimal("40")


async def test_over_the_cap_is_limit_exceeded_and_writes_nothing(
    sessionmaker: Any, tenant: Any
) -> None:
    gql = Gql(sessionmaker, tenant.id)
    gql.services.max_bulk_rows = 3
    await _account(gql, "ORD", False)
    data = (await gql(INVOICES, rows=[_invoice("ORD", "1.00")] * 4))["createStandaloneInvoices"]
    assert data["count"] == 0
    assert len(data["results"]) == 4
    assert {(e["code"], tuple(e["field"])) for r in data["results"] for e in r["errors"]} == {
        ("LIMIT_EXCEEDED", ("invoices",))
    }
    assert await _count(sessionmaker, tenant.id, "invoice") == 0
    ok = (await gql(INVOICES, rows=[_invoice("ORD", "1.00")] * 3))["createStandaloneInvoices"]
    assert ok["count"] == 3


async def test_a_whole_call_replayed_answers_the_first_documents_and_writes_nothing(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "P", True)
    rows = [_invoice("P", f"{n}.00", idempotencyKey=f"row-{n}") for n in range(1, 6)]
    first = (await gql(INVOICES, rows=rows))["createStandaloneInvoices"]
    second = (await gql(INVOICES, rows=rows))["createStandaloneInvoices"]
    assert first["count"] == second["count"] == 5
    assert _answers(first) == _answers(second)
    assert await _count(sessionmaker, tenant.id, "invoice") == 5
    assert await _count(sessionmaker, tenant.id, "metrics_change") == 1
    # One row again, with its neighbours new: it replays, they are written.
    mixed = [rows[2], _invoice("P", "7.00", idempotencyKey="row-7"), _invoice("P", "8.00")]
    third = (await gql(INVOICES, rows=mixed))["createStandaloneInvoices"]
    assert _answers(third)[0] == _answers(first)[2]
    assert third["count"] == 3
    assert await _count(sessionmaker, tenant.id, "invoice") == 7
    # The same key through the single mutation replays too: the keys are shared.
    single = await gql(
        """mutation($i: CreateStandaloneInvoiceInput!) {
             createStandaloneInvoice(input: $i) { invoice { invoiceNumber } errors { code } }
           }""",
        i=rows[0],
    )
    assert (
        single["createStandaloneInvoice"]["invoice"]["invoiceNumber"]
        == first["results"][0]["invoice"]["invoiceNumber"]
    )
    # The same key with another input is refused on that row.
    other = {**rows[1], "items": [{"chargeName": "X", "amount": "9"}]}
    changed = (await gql(INVOICES, rows=[other], policy="REJECT_FAILED_ROWS"))[
        "createStandaloneInvoices"
    ]
    assert changed["results"][0]["errors"] == [
        {"code": "IDEMPOTENCY_KEY_REUSED", "field": ["invoices", "0", "idempotencyKey"],
         "retryable": False, "__typename": "IdempotencyKeyReusedError"}
    ]  # fmt: skip
    assert await _count(sessionmaker, tenant.id, "invoice") == 7


async def test_a_failed_row_keeps_no_key_so_its_retry_writes_it(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "ORD", False)
    await gql(INVOICES, rows=[_invoice("ORD", "1.00", invoiceNumber="TAKEN")])
    bad = _invoice("ORD", "2.00", invoiceNumber="TAKEN", idempotencyKey="k-bad")
    data = (await gql(INVOICES, rows=[bad, _invoice("ORD", "3.00", idempotencyKey="k-ok")],
                      policy="REJECT_FAILED_ROWS"))["createStandaloneInvoices"]  # fmt: skip
    assert data["results"][0]["errors"][0]["code"] == "DUPLICATE"
    fixed = {**bad, "invoiceNumber": "FREE"}
    retry = (await gql(INVOICES, rows=[fixed]))["createStandaloneInvoices"]
    assert retry["results"][0]["invoice"]["invoiceNumber"] == "FREE"


async def test_twenty_concurrent_identical_calls_write_once(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "P", True)
    await _account(gql, "ORD", False)
    rows = [_invoice("P" if n % 2 else "ORD", "1.00", idempotencyKey=f"c-{n}") for n in range(50)]
    # Reversed halves: calls that claim the same keys meet in one order (sorted).
    calls = [gql(INVOICES, rows=rows if k % 2 else rows[::-1]) for k in range(20)]
    outs = [o["createStandaloneInvoices"] for o in await asyncio.gather(*calls)]
    assert all(o["count"] == 50 for o in outs)
    numbers = {r["invoice"]["invoiceNumber"] for o in outs for r in o["results"]}
    assert len(numbers) == 50
    assert await _count(sessionmaker, tenant.id, "invoice") == 50
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.total_invoice_balance == Decimal("25")


async def test_partner_account_one_ledger_row_per_call_and_refresh_equals_recompute(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "P", True)
    await _account(gql, "Q", True)
    rows = [_invoice("P" if n % 3 else "Q", f"{n + 1}.50") for n in range(30)]
    rows.append({**_invoice("P", "7.00"), "status": "DRAFT"})
    data = (await gql(INVOICES, rows=rows))["createStandaloneInvoices"]
    assert data["count"] == 31
    async with sessionmaker() as s:
        per_account = dict(
            (
                await s.execute(
                    text(
                        "SELECT a.account_number, count(*) FROM metrics_change m "
                        "JOIN account a ON a.id = m.account_id WHERE m.tenant_id = :t "
                        "GROUP BY a.account_number"
                    ),
                    {"t": tenant.id},
                )
            ).all()
        )
    assert per_account == {"P": 1, "Q": 1}
    for number in ("P", "Q"):
        stored, truth = await _metrics(sessionmaker, tenant.id, number)
        assert stored.total_invoice_balance == Decimal(0)  # not folded yet
        refreshed = await gql(
            """mutation($n: String!) { refreshAccountMetrics(input: {accountNumber: $n}) {
                 errors { code } } }""",
            n=number,
        )
        assert refreshed["refreshAccountMetrics"]["errors"] == []
        stored, truth = await _metrics(sessionmaker, tenant.id, number)
        assert stored.values() == truth.values()
        assert stored.total_invoice_balance > 0


async def test_ordinary_account_metrics_exact_right_after_the_call(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "ORD", False)
    rows = [_invoice("ORD", "12.34", invoiceDate=f"2026-10-{d:02d}") for d in (3, 9, 5)]
    await gql(INVOICES, rows=rows)
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.total_invoice_balance == Decimal("37.02")
    assert str(stored.last_invoice_date) == "2026-10-09"


async def test_opposite_orders_over_two_ordinary_accounts_do_not_deadlock(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "A1", False)
    await _account(gql, "A2", False)
    ab = [_invoice("A1", "1.00"), _invoice("A2", "1.00")] * 10
    ba = [_invoice("A2", "1.00"), _invoice("A1", "1.00")] * 10
    calls = [gql(INVOICES, rows=ab if k % 2 else ba) for k in range(16)]
    outs = [o["createStandaloneInvoices"] for o in await asyncio.gather(*calls)]
    errors = [e for o in outs for r in o["results"] for e in r["errors"]]
    assert errors == []
    assert all(o["count"] == 20 for o in outs)
    for number in ("A1", "A2"):
        stored, truth = await _metrics(sessionmaker, tenant.id, number)
        assert stored.values() == truth.values()
        assert stored.total_invoice_balance == Decimal("160")


async def test_payments_unapplied_applied_and_both(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await _account(gql, "ORD", False)
    await gql(INVOICES, rows=[_invoice("ORD", "100.00", invoiceNumber="I-1"),
                              _invoice("ORD", "50.00", invoiceNumber="I-2")])  # fmt: skip
    pay = {"accountNumber": "ORD", "effectiveDate": "2026-10-02", "method": "WIRE"}
    rows = [
        {**pay, "amount": "30.00"},
        {**pay, "amount": "60.00", "invoices": [{"invoiceNumber": "I-1", "amount": "40.00"}]},
        {**pay, "amount": "70.00", "invoices": [{"invoiceNumber": "I-1", "amount": "60.00"},
                                                {"invoiceNumber": "I-2", "amount": "10.00"}]},
        # I-1 has nothing left once the rows before this one applied theirs
        {**pay, "amount": "5.00", "invoices": [{"invoiceNumber": "I-1", "amount": "5.00"}]},
        {**pay, "amount": "5.00", "invoices": [{"invoiceNumber": "I-9", "amount": "5.00"}]},
        {**pay, "amount": "5.00", "invoices": [{"invoiceNumber": "I-2", "amount": "6.00"}]},
    ]  # fmt: skip
    everything = (await gql(PAYMENTS, rows=rows))["createPayments"]
    assert everything["count"] == 0
    assert await _count(sessionmaker, tenant.id, "payment") == 0
    data = (await gql(PAYMENTS, rows=rows, policy="REJECT_FAILED_ROWS"))["createPayments"]
    r = data["results"]
    assert data["count"] == 3
    assert Decimal(r[0]["payment"]["unappliedAmount"]) == Decimal("30")
    assert Decimal(r[1]["payment"]["appliedAmount"]) == Decimal("40")
    assert Decimal(r[1]["payment"]["unappliedAmount"]) == Decimal("20")
    assert Decimal(r[2]["payment"]["appliedAmount"]) == Decimal("70")
    assert r[3]["errors"] == [
        {
            "code": "AMOUNT_EXCEEDS_OPEN_BALANCE",
            "field": ["payments", "3", "invoices", "0", "amount"],
        }
    ]
    assert r[4]["errors"] == [{"code": "NOT_FOUND", "field": ["payments", "4", "invoices", "0"]}]
    assert r[5]["errors"] == [
        {"code": "AMOUNT_EXCEEDS_UNAPPLIED", "field": ["payments", "5", "amount"]}
    ]
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.total_invoice_balance == Decimal("40")
    assert stored.unapplied_payment_amount == Decimal("50")
    async with sessionmaker() as s:
        res = await s.execute(
            text("SELECT invoice_number, balance FROM invoice WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
        balances = dict(res.all())
        apps = (
            await s.execute(
                text("SELECT count(*) FROM application WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalar_one()
    assert balances == {"I-1": Decimal("0"), "I-2": Decimal("40")}
    assert apps == 3


async def test_credit_and_debit_memos(gql: Gql, sessionmaker: Any, tenant: Any) -> None:
    await _account(gql, "ORD", False)
    await _account(gql, "P", True)
    draft = {**_invoice("ORD", "10.00", invoiceNumber="D-1"), "status": "DRAFT"}
    await gql(INVOICES, rows=[_invoice("ORD", "100.00", invoiceNumber="I-1"), draft])
    credits = [
        {"invoiceNumber": "I-1", "amount": "60.00", "autoPost": True},
        {"invoiceNumber": "I-1", "amount": "50.00", "autoPost": True},  # over what is left
        {"accountNumber": "P", "items": [{"chargeName": "Goodwill", "amount": "5"}],
         "autoPost": True},
        {"invoiceNumber": "D-1", "amount": "1.00"},
        {"accountNumber": "ORD", "invoiceNumber": "I-1", "amount": "1.00"},
        {"accountNumber": "ORD", "amount": "15.00", "autoPost": True},
    ]  # fmt: skip
    data = (await gql(CREDIT_MEMOS, rows=credits, policy="REJECT_FAILED_ROWS"))["createCreditMemos"]
    r = data["results"]
    assert data["count"] == 3
    assert r[0]["creditMemo"]["invoiceNumber"] == "I-1"
    assert r[0]["creditMemo"]["accountNumber"] == "ORD"
    assert r[1]["errors"] == [
        {"code": "AMOUNT_EXCEEDS_OPEN_BALANCE", "field": ["creditMemos", "1", "amount"]}
    ]
    assert r[2]["creditMemo"]["status"] == "POSTED"
    assert r[3]["errors"] == [
        {"code": "INVALID_STATE", "field": ["creditMemos", "3", "invoiceNumber"]}
    ]
    assert r[4]["errors"] == [
        {"code": "VALIDATION", "field": ["creditMemos", "4", "accountNumber"]}
    ]
    debits = [
        {"accountNumber": "ORD", "amount": "8.00", "autoPost": True},
        {"accountNumber": "P", "amount": "4.00", "autoPost": True, "idempotencyKey": "dm-1"},
        {"accountNumber": "ORD", "amount": "2.00"},
    ]
    d1 = (await gql(DEBIT_MEMOS, rows=debits))["createDebitMemos"]
    d2 = (await gql(DEBIT_MEMOS, rows=debits[1:2]))["createDebitMemos"]
    assert d1["count"] == 3
    assert (
        d2["results"][0]["debitMemo"]["memoNumber"] == d1["results"][1]["debitMemo"]["memoNumber"]
    )
    assert await _count(sessionmaker, tenant.id, "debit_memo") == 3
    stored, truth = await _metrics(sessionmaker, tenant.id, "ORD")
    assert stored.values() == truth.values()
    assert stored.unapplied_credit_memo_amount == Decimal("75")
    assert stored.total_debit_memo_balance == Decimal("8")
    await gql(
        """mutation { refreshAccountMetrics(input: {accountNumber: "P"}) { errors { code } } }"""
    )
    stored, truth = await _metrics(sessionmaker, tenant.id, "P")
    assert stored.values() == truth.values()
    assert stored.total_debit_memo_balance == Decimal("4")
    assert stored.unapplied_credit_memo_amount == Decimal("5")

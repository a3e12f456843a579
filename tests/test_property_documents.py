"""Property: random sequences of every money operation across a few accounts (partner and
ordinary mixed, some run concurrently on separate connections) keep the books straight.

Hypothesis drives a plain (sync) test; each example runs its own event loop with
``asyncio.run`` and its own engine on the session's test database, and a fresh tenant.
After the sequence: ordinary accounts' stored metrics equal ``recompute`` as they are;
partner accounts' equal it after ``refresh_account``; no document balance or unapplied
amount is negative; applications never exceed either side; and money in equals money out
plus what is open.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from billing.metrics import recompute, refresh_account, stored_metrics
from billing.tenants import create_tenant
from db.engine import create_engine, create_sessionmaker
from tests.helpers import Gql
from tests.test_graphql_accounts import CREATE, account_input
from tests.test_memos import Q

ACCOUNTS = ("PA", "PB", "OA")  # PA, PB partner; OA ordinary (PB's flag is drawn)

money = st.integers(min_value=1, max_value=20_000).map(lambda c: str(Decimal(c) / 100))
small = st.integers(min_value=1, max_value=6_000).map(lambda c: str(Decimal(c) / 100))
acct = st.sampled_from(ACCOUNTS)
idx = st.integers(min_value=0, max_value=3)

MEMO_STATE_OPS = (
    "postDebitMemo", "unpostDebitMemo", "cancelDebitMemo",
    "postCreditMemo", "unpostCreditMemo", "cancelCreditMemo",
)  # fmt: skip
OPS = st.one_of(
    st.tuples(st.just("invoice"), acct, money, st.booleans()),
    st.tuples(st.sampled_from(["postInvoice", "unpostInvoice", "cancelInvoice"]), acct, idx),
    st.tuples(st.just("createDebitMemo"), acct, st.none() | idx, small, st.booleans()),
    st.tuples(st.just("createCreditMemo"), acct, st.none() | idx, small, st.booleans()),
    st.tuples(
        st.sampled_from(MEMO_STATE_OPS),
        acct,
        idx,
    ),
    st.tuples(
        st.sampled_from(["applyCreditMemo", "unapplyCreditMemo", "applyPayment", "unapplyPayment"]),
        acct,
        idx,
        st.sampled_from(["invoice", "debit_memo"]),
        idx,
        small,
    ),
    st.tuples(st.just("createPayment"), acct, money, st.none() | idx, small),
    st.tuples(st.sampled_from(["refundPayment", "refundCreditMemo"]), acct, idx, small),
    st.tuples(st.just("cancelPayment"), acct, idx),
)


def SEED(a: str) -> list[tuple[Any, ...]]:
    return [
        ("invoice", a, "150", True),
        ("invoice", a, "80", False),
        ("createDebitMemo", a, None, "40", True),
        ("createCreditMemo", a, 0, "30", True),
        ("createPayment", a, "90", 0, "20"),
        ("applyCreditMemo", a, 0, "debit_memo", 0, "10"),
    ]


# Each op with a flag: run it concurrently with the previous one.
SEQUENCES = st.lists(st.tuples(OPS, st.booleans()), min_size=8, max_size=15)


@dataclass
class Books:
    """The numbers each account's documents got, in creation order."""

    docs: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, account: str, kind: str, number: str) -> None:
        self.docs.setdefault((account, kind), []).append(number)

    def pick(self, account: str, kind: str, i: int) -> str:
        found = self.docs.get((account, kind), [])
        return found[i % len(found)] if found else f"NONE-{kind}"


def _target(books: Books, a: str, kind: str, i: int, amount: str) -> dict[str, Any]:
    if kind == "invoice":
        return {"invoices": [{"invoiceNumber": books.pick(a, "invoice", i), "amount": amount}]}
    return {"debitMemos": [{"memoNumber": books.pick(a, "debit_memo", i), "amount": amount}]}


async def run_op(gql: Gql, books: Books, op: tuple[Any, ...]) -> str:
    """Run one operation; returns "ok" or the error code."""
    name, a = op[0], op[1]
    inp: dict[str, Any]
    kind = None
    if name == "invoice":
        inp = {"accountNumber": a, "invoiceDate": "2026-11-01",
               "status": "POSTED" if op[3] else "DRAFT",
               "items": [{"chargeName": "Seats", "amount": op[2]}]}  # fmt: skip
        kind = "invoice"
    elif name in ("postInvoice", "unpostInvoice", "cancelInvoice"):
        data = await gql(
            f"mutation($n: String!) {{ {name}(input: {{invoiceNumber: $n}}) "
            "{ errors { code } } }",
            n=books.pick(a, "invoice", op[2]),
        )
        return _outcome(_typed(data))
    elif name in ("createDebitMemo", "createCreditMemo"):
        src = (
            {"invoiceNumber": books.pick(a, "invoice", op[2])}
            if op[2] is not None
            else {"accountNumber": a}
        )
        inp = {**src, "amount": op[3], "autoPost": op[4]}
        kind = "debit_memo" if name == "createDebitMemo" else "credit_memo"
    elif name in MEMO_STATE_OPS:
        k = "debit_memo" if name.endswith("DebitMemo") else "credit_memo"
        inp = {"memoNumber": books.pick(a, k, op[2])}
    elif name in ("applyCreditMemo", "unapplyCreditMemo"):
        inp = {"memoNumber": books.pick(a, "credit_memo", op[2]), **_target(books, a, *op[3:])}
    elif name in ("applyPayment", "unapplyPayment"):
        inp = {"paymentNumber": books.pick(a, "payment", op[2]), **_target(books, a, *op[3:])}
    elif name == "createPayment":
        inp = {"accountNumber": a, "amount": op[2], "effectiveDate": "2026-11-02"}
        if op[3] is not None:
            inp["invoices"] = [{"invoiceNumber": books.pick(a, "invoice", op[3]), "amount": op[4]}]
        kind = "payment"
    elif name == "refundPayment":
        inp = {"paymentNumber": books.pick(a, "payment", op[2]), "amount": op[3]}
    elif name == "refundCreditMemo":
        inp = {"memoNumber": books.pick(a, "credit_memo", op[2]), "amount": op[3]}
    elif name == "cancelPayment":
        inp = {"paymentNumber": books.pick(a, "payment", op[2])}
    else:  # pragma: no cover
        raise AssertionError(name)
    data = await gql(Q[name], input=inp)
    result = _typed(data)
    if kind is not None and not result["errors"]:
        obj = next(v for k, v in result.items() if k != "errors")
        number = obj.get("memoNumber") or obj.get("paymentNumber") or obj.get("invoiceNumber")
        books.add(a, kind, number)
    return _outcome(result)


def _outcome(result: dict[str, Any]) -> str:
    return str(result["errors"][0]["code"]) if result["errors"] else "ok"


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    """Failures are typed UserErrors (Gql raises on top-level errors, i.e. bugs)."""
    result: dict[str, Any] = next(iter(data.values()))
    for e in result["errors"]:
        assert e["code"] in {
            "VALIDATION", "NOT_FOUND", "INVALID_STATE", "AMOUNT_EXCEEDS_OPEN_BALANCE",
            "AMOUNT_EXCEEDS_UNAPPLIED", "LOCK_COMPETITION",
        }, e  # fmt: skip
    return result


CHECKS = {
    "negative balance or unapplied": """
        SELECT 'inv', id FROM invoice WHERE tenant_id = :t AND (balance < 0 OR balance > amount)
        UNION ALL SELECT 'dm', id FROM debit_memo
          WHERE tenant_id = :t AND (balance < 0 OR balance > amount)
        UNION ALL SELECT 'pay', id FROM payment
          WHERE tenant_id = :t AND amount - applied_amount - refund_amount < 0
        UNION ALL SELECT 'cm', id FROM credit_memo
          WHERE tenant_id = :t AND amount - applied_amount - refund_amount < 0""",
    "target applications != amount - balance": """
        SELECT 'inv', i.id FROM invoice i WHERE i.tenant_id = :t AND i.status = 'POSTED'
          AND i.amount - i.balance <> (SELECT coalesce(sum(amount), 0) FROM application
                                       WHERE invoice_id = i.id)
        UNION ALL SELECT 'dm', d.id FROM debit_memo d WHERE d.tenant_id = :t AND d.status = 'POSTED'
          AND d.amount - d.balance <> (SELECT coalesce(sum(amount), 0) FROM application
                                       WHERE debit_memo_id = d.id)""",
    "applications to unposted targets": """
        SELECT a.id FROM application a
          LEFT JOIN invoice i ON i.id = a.invoice_id
          LEFT JOIN debit_memo d ON d.id = a.debit_memo_id
        WHERE a.tenant_id = :t AND coalesce(i.status, d.status) <> 'POSTED'""",
    "source applications/refunds != applied/refund amount": """
        SELECT 'pay', p.id FROM payment p WHERE p.tenant_id = :t AND (
          p.applied_amount <> (SELECT coalesce(sum(amount), 0) FROM application
                               WHERE payment_id = p.id)
          OR p.refund_amount <> (SELECT coalesce(sum(amount), 0) FROM refund
                                 WHERE payment_id = p.id))
        UNION ALL SELECT 'cm', c.id FROM credit_memo c WHERE c.tenant_id = :t AND (
          c.applied_amount <> (SELECT coalesce(sum(amount), 0) FROM application
                               WHERE credit_memo_id = c.id)
          OR c.refund_amount <> (SELECT coalesce(sum(amount), 0) FROM refund
                                 WHERE credit_memo_id = c.id))""",
    "canceled or draft sources with money out": """
        SELECT 'pay', id FROM payment WHERE tenant_id = :t AND status = 'CANCELED'
          AND (applied_amount <> 0 OR refund_amount <> 0)
        UNION ALL SELECT 'cm', id FROM credit_memo WHERE tenant_id = :t AND status <> 'POSTED'
          AND (applied_amount <> 0 OR refund_amount <> 0)""",
    "credit memos exceed their invoice": """
        SELECT i.id FROM invoice i WHERE i.tenant_id = :t AND i.amount <
          (SELECT coalesce(sum(amount), 0) FROM credit_memo
           WHERE invoice_id = i.id AND status <> 'CANCELED')""",
}

# Money in (processed payments, posted credit) = out (applied + refunded) + open (unapplied).
CONSERVATION = """
SELECT
  (SELECT coalesce(sum(amount), 0) FROM payment WHERE tenant_id = :t AND status = 'PROCESSED')
  + (SELECT coalesce(sum(amount), 0) FROM credit_memo WHERE tenant_id = :t AND status = 'POSTED')
  AS money_in,
  (SELECT coalesce(sum(amount), 0) FROM application WHERE tenant_id = :t)
  + (SELECT coalesce(sum(amount), 0) FROM refund WHERE tenant_id = :t) AS money_out,
  (SELECT coalesce(sum(amount - applied_amount - refund_amount), 0) FROM payment
    WHERE tenant_id = :t AND status = 'PROCESSED')
  + (SELECT coalesce(sum(amount - applied_amount - refund_amount), 0) FROM credit_memo
    WHERE tenant_id = :t AND status = 'POSTED') AS open_credit,
  (SELECT coalesce(sum(amount), 0) FROM invoice WHERE tenant_id = :t AND status = 'POSTED')
  + (SELECT coalesce(sum(amount), 0) FROM debit_memo WHERE tenant_id = :t AND status = 'POSTED')
  AS billed,
  (SELECT coalesce(sum(balance), 0) FROM invoice WHERE tenant_id = :t AND status = 'POSTED')
  + (SELECT coalesce(sum(balance), 0) FROM debit_memo WHERE tenant_id = :t AND status = 'POSTED')
  AS open_billed
"""


async def run_example(
    database_url: str,
    pb_partner: bool,
    seq: list[Any],
    outcomes: list[tuple[str, str]] | None = None,
) -> None:
    engine = create_engine(database_url, pool_size=8, max_overflow=8)
    try:
        sm = create_sessionmaker(engine)
        async with sm.begin() as s:
            tenant_id, _ = await create_tenant(s, f"prop-{secrets.token_hex(4)}")
        gql = Gql(sm, tenant_id)
        partner = {"PA": True, "PB": pb_partner, "OA": False}
        for a in ACCOUNTS:
            data = await gql(
                CREATE, input=account_input(accountNumber=a, partnerAccount=partner[a])
            )
            assert data["createAccount"]["errors"] == []
        books = Books()
        # Every account starts with one document of each kind, so the random operations
        # find something to act on.
        for a in ACCOUNTS:
            for op in SEED(a):
                assert await run_op(gql, books, op) == "ok", op
        batches: list[list[Any]] = []
        for op, concurrent in seq:
            if concurrent and batches:
                batches[-1].append(op)
            else:
                batches.append([op])
        for batch in batches:
            done = await asyncio.gather(*(run_op(gql, books, op) for op in batch))
            if outcomes is not None:
                outcomes.extend((op[0], o) for op, o in zip(batch, done, strict=True))

        async with sm() as s:
            ids = dict(
                (
                    await s.execute(
                        text("SELECT account_number, id FROM account WHERE tenant_id = :t"),
                        {"t": tenant_id},
                    )
                ).all()
            )
            for a in ACCOUNTS:
                if not partner[a]:  # synchronous: current without any refresh
                    stored = await stored_metrics(s, ids[a])
                    assert stored.values() == (await recompute(s, ids[a])).values(), a
        for a in ACCOUNTS:
            if partner[a]:
                async with sm.begin() as s:
                    await refresh_account(s, tenant_id, ids[a])
        async with sm() as s:
            for a in ACCOUNTS:
                stored = await stored_metrics(s, ids[a])
                assert stored.values() == (await recompute(s, ids[a])).values(), a
            for what, sql in CHECKS.items():
                bad = (await s.execute(text(sql), {"t": tenant_id})).all()
                assert bad == [], what
            row = (await s.execute(text(CONSERVATION), {"t": tenant_id})).mappings().one()
            assert row["money_in"] == row["money_out"] + row["open_credit"]
            applied = (
                await s.execute(
                    text("SELECT coalesce(sum(amount), 0) FROM application WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
            ).scalar_one()
            assert row["billed"] == row["open_billed"] + applied
    finally:
        await engine.dispose()


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pb_partner=st.booleans(), seq=SEQUENCES)
def test_random_money_operations_keep_the_books(
    database_url: str, pb_partner: bool, seq: list[Any]
) -> None:
    asyncio.run(run_example(database_url, pb_partner, seq))

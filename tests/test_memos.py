"""GraphQL: an account through invoice, debit memo, credit memo, payment, partial
applications, unapply, refund and cancel, with the metrics checked against a hand
calculation at every step (after a refresh for a partner account)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing.metrics import recompute, refresh_account
from tests.helpers import Gql
from tests.test_graphql_accounts import CREATE, account_input

ERR = "errors { __typename code field }"
CM_FIELDS = "memoNumber invoiceNumber status amount appliedAmount refundAmount unappliedAmount"
DM_FIELDS = "memoNumber invoiceNumber status amount balance dueDate"

REFUND_FIELDS = "refund { refundNumber amount paymentNumber creditMemoNumber }"

Q = {
    "invoice": (
        "mutation($input: CreateStandaloneInvoiceInput!) "
        f"""{{ createStandaloneInvoice(input: $input) {{
        invoice {{ invoiceNumber status amount balance }} {ERR} }} }}"""
    ),
    "postInvoice": (
        "mutation($input: InvoiceNumberInput!) { postInvoice(input: $input) "
        f"{{ invoice {{ status balance }} {ERR} }} }}"
    ),
    "createCreditMemo": (
        "mutation($input: CreateCreditMemoInput!) { createCreditMemo(input: $input) "
        f"{{ creditMemo {{ {CM_FIELDS} }} {ERR} }} }}"
    ),
    "createDebitMemo": (
        "mutation($input: CreateDebitMemoInput!) { createDebitMemo(input: $input) "
        f"{{ debitMemo {{ {DM_FIELDS} }} {ERR} }} }}"
    ),
    **{
        op: (
            f"mutation($input: MemoNumberInput!) {{ {op}(input: $input) "
            f"{{ creditMemo {{ {CM_FIELDS} }} {ERR} }} }}"
        )
        for op in ("postCreditMemo", "unpostCreditMemo", "cancelCreditMemo")
    },
    **{
        op: (
            f"mutation($input: MemoNumberInput!) {{ {op}(input: $input) "
            f"{{ debitMemo {{ {DM_FIELDS} }} {ERR} }} }}"
        )
        for op in ("postDebitMemo", "unpostDebitMemo", "cancelDebitMemo")
    },
    **{
        op: (
            f"mutation($input: CreditMemoApplicationInput!) {{ {op}(input: $input) "
            f"{{ creditMemo {{ {CM_FIELDS} "
            f"applications {{ invoiceNumber debitMemoNumber amount }} }} {ERR} }} }}"
        )
        for op in ("applyCreditMemo", "unapplyCreditMemo")
    },
    "createPayment": (
        "mutation($input: CreatePaymentInput!) { createPayment(input: $input) "
        "{ payment { paymentNumber status amount appliedAmount refundAmount unappliedAmount } "
        f"{ERR} }} }}"
    ),
    **{
        op: (
            f"mutation($input: PaymentApplicationInput!) {{ {op}(input: $input) "
            f"{{ payment {{ paymentNumber status appliedAmount unappliedAmount }} {ERR} }} }}"
        )
        for op in ("applyPayment", "unapplyPayment")
    },
    "cancelPayment": (
        "mutation($input: PaymentNumberInput!) { cancelPayment(input: $input) "
        f"{{ payment {{ paymentNumber status unappliedAmount }} {ERR} }} }}"
    ),
    "refundPayment": (
        "mutation($input: RefundPaymentInput!) { refundPayment(input: $input) "
        f"{{ {REFUND_FIELDS} {ERR} }} }}"
    ),
    "refundCreditMemo": (
        "mutation($input: RefundCreditMemoInput!) { refundCreditMemo(input: $input) "
        f"{{ {REFUND_FIELDS} {ERR} }} }}"
    ),
}

METRIC_KEYS = (
    "totalInvoiceBalance",
    "totalDebitMemoBalance",
    "unappliedPaymentAmount",
    "unappliedCreditMemoAmount",
    "balance",
)
METRICS = (
    "query($n: String!) { account(accountNumber: $n) { lastPaymentDate lastPaymentAmount\n"
    f"  metrics {{ {' '.join(METRIC_KEYS)} }} }} }}"
)


class Api:
    """Runs the mutations above and checks that each one succeeded."""

    def __init__(self, gql: Gql, sessionmaker: Any, tenant_id: int) -> None:
        self.gql = gql
        self.sessionmaker = sessionmaker
        self.tenant_id = tenant_id

    async def __call__(self, op: str, **input: Any) -> dict[str, Any]:
        data = await self.gql(Q[op], input=input)
        result = next(iter(data.values()))
        assert result["errors"] == [], (op, input, result["errors"])
        return next(v for k, v in result.items() if k != "errors")  # type: ignore[no-any-return]

    async def fails(self, op: str, **input: Any) -> list[dict[str, Any]]:
        data = await self.gql(Q[op], input=input)
        result = next(iter(data.values()))
        assert result["errors"], (op, input)
        assert all(v is None for k, v in result.items() if k != "errors")
        return result["errors"]  # type: ignore[no-any-return]

    async def metrics(self, number: str, partner: bool) -> dict[str, Decimal]:
        if partner:
            async with self.sessionmaker.begin() as s:
                aid = (
                    await s.execute(
                        text("SELECT id FROM account WHERE tenant_id = :t AND account_number = :n"),
                        {"t": self.tenant_id, "n": number},
                    )
                ).scalar_one()
                await refresh_account(s, self.tenant_id, aid)
        m = (await self.gql(METRICS, n=number))["account"]["metrics"]
        return {k: Decimal(v) for k, v in m.items()}


@pytest.fixture
def api(sessionmaker: Any, tenant: Any) -> Api:
    return Api(Gql(sessionmaker, tenant.id), sessionmaker, tenant.id)


def expect(inv: str, dm: str, up: str, cm: str) -> dict[str, Decimal]:
    d = dict(zip(METRIC_KEYS[:4], map(Decimal, (inv, dm, up, cm)), strict=True))
    d["balance"] = d["totalInvoiceBalance"] + d["totalDebitMemoBalance"] - d[
        "unappliedPaymentAmount"] - d["unappliedCreditMemoAmount"]  # fmt: skip
    return d


@pytest.mark.parametrize("partner", [False, True], ids=["ordinary", "partner"])
async def test_account_walkthrough_matches_hand_calculation(api: Api, partner: bool) -> None:
    await api.gql(CREATE, input=account_input(accountNumber="W", partnerAccount=partner))

    async def check(inv: str, dm: str, up: str, cm: str) -> None:
        assert await api.metrics("W", partner) == expect(inv, dm, up, cm)

    # Invoice 100 posted.
    inv = await api(
        "invoice", accountNumber="W", invoiceDate="2026-11-01", status="POSTED",
        items=[{"chargeName": "Seats", "quantity": "4", "unitPrice": "25"}],
    )  # fmt: skip
    assert (inv["invoiceNumber"], inv["amount"]) == ("INV00000001", "100.00")
    await check("100", "0", "0", "0")

    # A debit memo from the invoice, draft: nothing moves; posted: +30.
    dm = await api(
        "createDebitMemo", invoiceNumber="INV00000001", amount="30", memoDate="2026-11-03"
    )
    assert dm == {
        "memoNumber": "DM00000001", "invoiceNumber": "INV00000001", "status": "DRAFT",
        "amount": "30.00", "balance": "30.00", "dueDate": "2026-12-03",
    }  # fmt: skip
    await check("100", "0", "0", "0")
    assert (await api("postDebitMemo", memoNumber="DM00000001"))["status"] == "POSTED"
    await check("100", "30", "0", "0")

    # A credit memo from the invoice with items, auto-posted: unapplied credit 40.
    cm = await api(
        "createCreditMemo", invoiceNumber="INV00000001", reasonCode="Goodwill", autoPost=True,
        items=[{"chargeName": "Seats", "quantity": "2", "unitPrice": "20"}],
    )  # fmt: skip
    assert cm == {
        "memoNumber": "CM00000001", "invoiceNumber": "INV00000001", "status": "POSTED",
        "amount": "40.00", "appliedAmount": "0.00", "refundAmount": "0.00",
        "unappliedAmount": "40.00",
    }  # fmt: skip
    await check("100", "30", "0", "40")

    # More than the invoice has left to credit (100 - 40) is refused.
    errs = await api.fails("createCreditMemo", invoiceNumber="INV00000001", amount="60.01")
    assert errs == [
        {
            "__typename": "AmountExceedsOpenBalanceError",
            "code": "AMOUNT_EXCEEDS_OPEN_BALANCE",
            "field": ["amount"],
        }
    ]

    # Apply 25 of the credit to the invoice and 10 to the debit memo.
    cm = await api(
        "applyCreditMemo", memoNumber="CM00000001",
        invoices=[{"invoiceNumber": "INV00000001", "amount": "25"}],
        debitMemos=[{"memoNumber": "DM00000001", "amount": "10"}],
    )  # fmt: skip
    assert cm["unappliedAmount"] == "5.00"
    assert cm["applications"] == [
        {"invoiceNumber": "INV00000001", "debitMemoNumber": None, "amount": "25.00"},
        {"invoiceNumber": None, "debitMemoNumber": "DM00000001", "amount": "10.00"},
    ]
    await check("75", "20", "0", "5")

    # Unapply 10 from the invoice.
    await api(
        "unapplyCreditMemo",
        memoNumber="CM00000001",
        invoices=[{"invoiceNumber": "INV00000001", "amount": "10"}],
    )
    await check("85", "20", "0", "15")

    # Payment 120: 50 to the invoice, 20 to the debit memo, 50 unapplied.
    p = await api(
        "createPayment", accountNumber="W", amount="120", effectiveDate="2026-11-10",
        invoices=[{"invoiceNumber": "INV00000001", "amount": "50"}],
        debitMemos=[{"memoNumber": "DM00000001", "amount": "20"}],
    )  # fmt: skip
    assert p["unappliedAmount"] == "50.00"
    await check("35", "0", "50", "15")
    acct = (await api.gql(METRICS, n="W"))["account"]
    assert (acct["lastPaymentDate"], acct["lastPaymentAmount"]) == ("2026-11-10", "120.00")

    # Unapply 20 of the payment from the invoice; apply 35 to clear it.
    await api(
        "unapplyPayment",
        paymentNumber="P00000001",
        invoices=[{"invoiceNumber": "INV00000001", "amount": "20"}],
    )
    await check("55", "0", "70", "15")
    await api(
        "applyPayment",
        paymentNumber="P00000001",
        invoices=[{"invoiceNumber": "INV00000001", "amount": "55"}],
    )
    await check("0", "0", "15", "15")

    # Refunds from the unapplied amounts; more than unapplied is refused.
    errs = await api.fails("refundPayment", paymentNumber="P00000001", amount="15.01")
    assert errs == [
        {
            "__typename": "AmountExceedsUnappliedError",
            "code": "AMOUNT_EXCEEDS_UNAPPLIED",
            "field": ["amount"],
        }
    ]
    r = await api("refundPayment", paymentNumber="P00000001", amount="15")
    assert r == {
        "refundNumber": "R00000001",
        "amount": "15.00",
        "paymentNumber": "P00000001",
        "creditMemoNumber": None,
    }
    r = await api("refundCreditMemo", memoNumber="CM00000001", amount="5")
    assert r == {
        "refundNumber": "R00000002",
        "amount": "5.00",
        "paymentNumber": None,
        "creditMemoNumber": "CM00000001",
    }
    await check("0", "0", "0", "10")

    # A second, unapplied payment canceled; a payment with applications cannot be.
    await api("createPayment", accountNumber="W", amount="7", effectiveDate="2026-11-12")
    await check("0", "0", "7", "10")
    errs = await api.fails("cancelPayment", paymentNumber="P00000001")
    assert [e["code"] for e in errs] == ["INVALID_STATE"]
    assert (await api("cancelPayment", paymentNumber="P00000002"))["status"] == "CANCELED"
    await check("0", "0", "0", "10")
    acct = (await api.gql(METRICS, n="W"))["account"]
    assert (acct["lastPaymentDate"], acct["lastPaymentAmount"]) == ("2026-11-10", "120.00")

    # Standalone credit memo: draft then canceled moves nothing; posted then unposted nets zero.
    cm2 = await api("createCreditMemo", accountNumber="W", amount="12.50")
    assert (cm2["memoNumber"], cm2["invoiceNumber"], cm2["status"]) == ("CM00000002", None, "DRAFT")
    await check("0", "0", "0", "10")
    await api("postCreditMemo", memoNumber="CM00000002")
    await check("0", "0", "0", "22.5")
    await api("unpostCreditMemo", memoNumber="CM00000002")
    await check("0", "0", "0", "10")
    assert (await api("cancelCreditMemo", memoNumber="CM00000002"))["status"] == "CANCELED"
    await check("0", "0", "0", "10")

    # Standalone debit memo posted, unposted, canceled.
    await api("createDebitMemo", accountNumber="W", amount="9", autoPost=True)
    await check("0", "9", "0", "10")
    await api("unpostDebitMemo", memoNumber="DM00000002")
    await check("0", "0", "0", "10")
    await api("cancelDebitMemo", memoNumber="DM00000002")
    await check("0", "0", "0", "10")

    # Stored metrics equal the from-scratch recompute.
    async with api.sessionmaker() as s:
        aid = (
            await s.execute(
                text("SELECT id FROM account WHERE tenant_id = :t"), {"t": api.tenant_id}
            )
        ).scalar_one()
        from billing.metrics import stored_metrics

        assert (await stored_metrics(s, aid)).values() == (await recompute(s, aid)).values()


async def test_partner_metrics_wait_for_the_refresh(api: Api) -> None:
    await api.gql(CREATE, input=account_input(accountNumber="PA", partnerAccount=True))
    await api("createCreditMemo", accountNumber="PA", amount="8", autoPost=True)
    m = (await api.gql(METRICS, n="PA"))["account"]["metrics"]
    assert Decimal(m["unappliedCreditMemoAmount"]) == 0
    assert await api.metrics("PA", True) == expect("0", "0", "0", "8")


async def test_invoice_lists_its_memos_and_account_lists_filter(api: Api) -> None:
    await api.gql(CREATE, input=account_input(accountNumber="L"))
    await api("invoice", accountNumber="L", invoiceDate="2026-11-01", status="POSTED",
              items=[{"chargeName": "X", "amount": "50"}])  # fmt: skip
    await api("createCreditMemo", invoiceNumber="INV00000001", amount="5")
    await api("createCreditMemo", accountNumber="L", amount="6", autoPost=True)
    await api("createDebitMemo", invoiceNumber="INV00000001", amount="7", autoPost=True)
    data = await api.gql(
        """query { invoice(invoiceNumber: "INV00000001") {
            creditMemos { memoNumber amount items { chargeName quantity amount } }
            debitMemos { memoNumber status }
            account { creditMemos(status: "POSTED") { totalCount edges { node { memoNumber } } }
                      debitMemos { totalCount edges { node { memoNumber invoiceNumber } } } } } }"""
    )
    assert data == {
        "invoice": {
            "creditMemos": [
                {"memoNumber": "CM00000001", "amount": "5.00",
                 "items": [{"chargeName": "Credit", "quantity": "1", "amount": "5.00"}]}
            ],
            "debitMemos": [{"memoNumber": "DM00000001", "status": "POSTED"}],
            "account": {
                "creditMemos": {"totalCount": 1, "edges": [{"node": {"memoNumber": "CM00000002"}}]},
                "debitMemos": {"totalCount": 1, "edges": [
                    {"node": {"memoNumber": "DM00000001", "invoiceNumber": "INV00000001"}}]},
            },
        }
    }  # fmt: skip
    q = await api.gql('query { creditMemo(memoNumber: "CM00000002") { status accountNumber } '
                      'debitMemo(memoNumber: "DM00000009") { status } }')  # fmt: skip
    assert q == {"creditMemo": {"status": "POSTED", "accountNumber": "L"}, "debitMemo": None}


@pytest.mark.parametrize("partner", [False, True], ids=["ordinary", "partner"])
async def test_concurrent_applications_never_exceed_the_memo(
    api: Api, sessionmaker: Any, tenant: Any, partner: bool
) -> None:
    """Five sessions apply 10 each from a memo with 30 unapplied: exactly three win."""
    await api.gql(CREATE, input=account_input(accountNumber="C", partnerAccount=partner))
    await api("invoice", accountNumber="C", invoiceDate="2026-11-01", status="POSTED",
              items=[{"chargeName": "X", "amount": "100"}])  # fmt: skip
    await api("createCreditMemo", accountNumber="C", amount="30", autoPost=True)

    async def one() -> list[str]:
        data = await Gql(sessionmaker, tenant.id)(
            Q["applyCreditMemo"],
            input={"memoNumber": "CM00000001",
                   "invoices": [{"invoiceNumber": "INV00000001", "amount": "10"}]},
        )  # fmt: skip
        return [e["code"] for e in data["applyCreditMemo"]["errors"]]

    results = await asyncio.gather(*(one() for _ in range(5)))
    assert sorted(results) == [
        [],
        [],
        [],
        ["AMOUNT_EXCEEDS_UNAPPLIED"],
        ["AMOUNT_EXCEEDS_UNAPPLIED"],
    ]
    assert await api.metrics("C", partner) == expect("70", "0", "0", "0")


async def test_create_credit_memo_is_idempotent(api: Api) -> None:
    await api.gql(CREATE, input=account_input(accountNumber="K"))
    first = await api("createCreditMemo", accountNumber="K", amount="3", autoPost=True,
                      idempotencyKey="k-1")  # fmt: skip
    again = await api("createCreditMemo", accountNumber="K", amount="3", autoPost=True,
                      idempotencyKey="k-1")  # fmt: skip
    assert first == again
    errs = await api.fails("createCreditMemo", accountNumber="K", amount="4", idempotencyKey="k-1")
    assert [e["code"] for e in errs] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await api.metrics("K", False) == expect("0", "0", "0", "3")

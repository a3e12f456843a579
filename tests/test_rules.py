"""One test per rule of domain.md section 5: each asserts the typed error and that nothing
was written (every document, application, refund, metric and ledger row of the tenant is
the same before and after)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import Gql
from tests.test_graphql_accounts import CREATE, account_input
from tests.test_memos import Api

TABLES = (
    "account",
    "account_metrics",
    "metrics_change",
    "invoice",
    "invoice_item",
    "credit_memo",
    "debit_memo",
    "memo_item",
    "payment",
    "application",
    "refund",
)


async def snapshot(sessionmaker: Any, tenant_id: int) -> dict[str, list[Any]]:
    """Every row the tenant has in the money tables."""
    out: dict[str, list[Any]] = {}
    async with sessionmaker() as s:
        for t in TABLES:
            res = await s.execute(
                text(f"SELECT * FROM {t} WHERE tenant_id = :t ORDER BY 1"), {"t": tenant_id}
            )
            out[t] = [tuple(r) for r in res]
    return out


class World(Api):
    """An ordinary USD account U with documents in every state, a JPY account J and a
    second USD account V."""

    async def build(self) -> None:
        await self.gql(CREATE, input=account_input(accountNumber="U"))
        await self.gql(CREATE, input=account_input(accountNumber="V"))
        await self.gql(CREATE, input=account_input(accountNumber="J", currency="JPY"))
        item = [{"chargeName": "Seats", "amount": "100"}]
        await self("invoice", accountNumber="U", invoiceNumber="INV-P", invoiceDate="2026-11-01",
                   status="POSTED", items=item)  # fmt: skip
        await self("invoice", accountNumber="U", invoiceNumber="INV-D", invoiceDate="2026-11-01",
                   status="DRAFT", items=item)  # fmt: skip
        await self("invoice", accountNumber="V", invoiceNumber="INV-V", invoiceDate="2026-11-01",
                   status="POSTED", items=item)  # fmt: skip
        await self("createDebitMemo", accountNumber="U", amount="30", autoPost=True)  # DM1 posted
        await self("createDebitMemo", accountNumber="U", amount="30")  # DM2 draft
        await self("createCreditMemo", accountNumber="U", amount="40", autoPost=True)  # CM1 posted
        await self("createCreditMemo", accountNumber="U", amount="40")  # CM2 draft
        await self(
            "createPayment", accountNumber="U", amount="50", effectiveDate="2026-11-02"
        )  # P1
        await self("createPayment", accountNumber="U", amount="5", effectiveDate="2026-11-02")  # P2
        await self("cancelPayment", paymentNumber="P00000002")
        # Something applied from each source, to each posted target.
        await self("applyPayment", paymentNumber="P00000001",
                   invoices=[{"invoiceNumber": "INV-P", "amount": "10"}])  # fmt: skip
        await self("applyCreditMemo", memoNumber="CM00000001",
                   debitMemos=[{"memoNumber": "DM00000001", "amount": "10"}])  # fmt: skip

    async def refused(self, op: str, code: str, **input: Any) -> list[dict[str, Any]]:
        """The operation fails with ``code`` and the tenant's rows are unchanged."""
        before = await snapshot(self.sessionmaker, self.tenant_id)
        errors = await self.fails(op, **input)
        assert [e["code"] for e in errors] == [code], errors
        assert errors[0]["__typename"] == "".join(w.title() for w in code.split("_")) + "Error" or (
            code == "VALIDATION" and errors[0]["__typename"] == "ValidationError"
        )
        assert await snapshot(self.sessionmaker, self.tenant_id) == before
        return errors


@pytest.fixture
async def world(sessionmaker: Any, tenant: Any) -> World:
    w = World(Gql(sessionmaker, tenant.id), sessionmaker, tenant.id)
    await w.build()
    return w


# --- Only POSTED invoices and debit memos take applications; only POSTED credit memos and
# --- PROCESSED payments are applied.


async def test_draft_targets_take_no_applications(world: World) -> None:
    await world.refused("applyPayment", "INVALID_STATE", paymentNumber="P00000001",
                        invoices=[{"invoiceNumber": "INV-D", "amount": "1"}])  # fmt: skip
    await world.refused("applyCreditMemo", "INVALID_STATE", memoNumber="CM00000001",
                        debitMemos=[{"memoNumber": "DM00000002", "amount": "1"}])  # fmt: skip
    await world.refused("createPayment", "INVALID_STATE", accountNumber="U", amount="5",
                        effectiveDate="2026-11-03",
                        invoices=[{"invoiceNumber": "INV-D", "amount": "1"}])  # fmt: skip


async def test_only_posted_credit_memos_and_processed_payments_are_applied(world: World) -> None:
    await world.refused("applyCreditMemo", "INVALID_STATE", memoNumber="CM00000002",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "1"}])  # fmt: skip
    await world.refused("applyPayment", "INVALID_STATE", paymentNumber="P00000002",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "1"}])  # fmt: skip


# --- An application never exceeds the target's open balance nor the source's unapplied amount.


async def test_application_never_exceeds_open_balance(world: World) -> None:
    # INV-P is open 90, DM1 open 20.
    await world.refused("applyPayment", "AMOUNT_EXCEEDS_OPEN_BALANCE", paymentNumber="P00000001",
                        debitMemos=[{"memoNumber": "DM00000001", "amount": "20.01"}])  # fmt: skip
    errs = await world.refused("applyCreditMemo", "AMOUNT_EXCEEDS_OPEN_BALANCE",
                               memoNumber="CM00000001",
                               debitMemos=[{"memoNumber": "DM00000001",
                                            "amount": "20.01"}])  # fmt: skip
    assert errs[0]["field"] == ["debitMemos", "0", "amount"]


async def test_application_never_exceeds_unapplied(world: World) -> None:
    # P1 has 40 unapplied, CM1 30.
    await world.refused("applyPayment", "AMOUNT_EXCEEDS_UNAPPLIED", paymentNumber="P00000001",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "40.01"}])  # fmt: skip
    await world.refused("applyCreditMemo", "AMOUNT_EXCEEDS_UNAPPLIED", memoNumber="CM00000001",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "20"}],
                        debitMemos=[{"memoNumber": "DM00000001", "amount": "10.01"}])  # fmt: skip
    await world.refused("createPayment", "AMOUNT_EXCEEDS_UNAPPLIED", accountNumber="U",
                        amount="5", effectiveDate="2026-11-03",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "5.01"}])  # fmt: skip
    # Unapplying more than was applied is refused too.
    await world.refused("unapplyCreditMemo", "VALIDATION", memoNumber="CM00000001",
                        debitMemos=[{"memoNumber": "DM00000001", "amount": "10.01"}])  # fmt: skip


async def test_credit_memo_from_invoice_never_exceeds_what_is_left(world: World) -> None:
    await world("createCreditMemo", invoiceNumber="INV-P", amount="70")
    await world.refused("createCreditMemo", "AMOUNT_EXCEEDS_OPEN_BALANCE", invoiceNumber="INV-P",
                        amount="30.01")  # fmt: skip
    await world.refused("createCreditMemo", "INVALID_STATE", invoiceNumber="INV-D", amount="1")


# --- Unpost is refused while anything is applied to (or from) the document.


async def test_unpost_refused_while_applied(world: World) -> None:
    await world.refused("unpostCreditMemo", "INVALID_STATE", memoNumber="CM00000001")
    await world.refused("unpostDebitMemo", "INVALID_STATE", memoNumber="DM00000001")
    errs = await world.gql(
        'mutation { unpostInvoice(input: {invoiceNumber: "INV-P"}) { invoice { status } '
        "errors { code } } }"
    )
    assert errs == {"unpostInvoice": {"invoice": None, "errors": [{"code": "INVALID_STATE"}]}}


async def test_state_machines_refuse_wrong_transitions(world: World) -> None:
    await world.refused("cancelCreditMemo", "INVALID_STATE", memoNumber="CM00000001")
    await world.refused("cancelDebitMemo", "INVALID_STATE", memoNumber="DM00000001")
    await world.refused("postCreditMemo", "INVALID_STATE", memoNumber="CM00000001")
    await world.refused("unpostDebitMemo", "INVALID_STATE", memoNumber="DM00000002")
    await world.refused("cancelPayment", "INVALID_STATE", paymentNumber="P00000001")
    await world.refused("cancelPayment", "INVALID_STATE", paymentNumber="P00000002")
    await world.refused("postCreditMemo", "NOT_FOUND", memoNumber="CM00000099")


# --- A refund never exceeds the unapplied amount.


async def test_refund_never_exceeds_unapplied(world: World) -> None:
    await world.refused("refundPayment", "AMOUNT_EXCEEDS_UNAPPLIED", paymentNumber="P00000001",
                        amount="40.01")  # fmt: skip
    await world.refused("refundCreditMemo", "AMOUNT_EXCEEDS_UNAPPLIED", memoNumber="CM00000001",
                        amount="30.01")  # fmt: skip
    await world.refused("refundCreditMemo", "INVALID_STATE", memoNumber="CM00000002", amount="1")
    await world.refused("refundPayment", "INVALID_STATE", paymentNumber="P00000002", amount="1")


# --- Currencies match across an application, and a document's currency is its account's.


async def test_currencies_match(world: World) -> None:
    await world.refused("createPayment", "CURRENCY_MISMATCH", accountNumber="U", amount="5",
                        currency="EUR", effectiveDate="2026-11-03")  # fmt: skip
    # A JPY account's payment cannot be applied to a USD invoice (another account's).
    await world("createPayment", accountNumber="J", amount="500", effectiveDate="2026-11-03")
    await world.refused("applyPayment", "VALIDATION", paymentNumber="P00000003",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "1"}])  # fmt: skip
    await world.refused("applyCreditMemo", "VALIDATION", memoNumber="CM00000001",
                        invoices=[{"invoiceNumber": "INV-V", "amount": "1"}])  # fmt: skip
    cm = await world.gql('query { creditMemo(memoNumber: "CM00000001") { currency } }')
    assert cm == {"creditMemo": {"currency": "USD"}}


# --- Amounts are positive with at most the currency's minor-unit places; an invoice's
# --- amount is the sum of its items.


async def test_amounts_positive_with_minor_unit_places(world: World) -> None:
    await world.refused("createCreditMemo", "VALIDATION", accountNumber="U", amount="0")
    await world.refused("createDebitMemo", "VALIDATION", accountNumber="U", amount="-1")
    await world.refused("createCreditMemo", "VALIDATION", accountNumber="U", amount="1.001")
    await world.refused("createDebitMemo", "VALIDATION", accountNumber="J", amount="1.5")
    await world.refused("refundPayment", "VALIDATION", paymentNumber="P00000001", amount="0.001")
    await world.refused("applyPayment", "VALIDATION", paymentNumber="P00000001",
                        invoices=[{"invoiceNumber": "INV-P", "amount": "-2"}])  # fmt: skip
    await world.refused("createCreditMemo", "VALIDATION", accountNumber="U", amount="1",
                        items=[{"chargeName": "x", "amount": "1"}])  # fmt: skip
    await world.refused("createCreditMemo", "VALIDATION", accountNumber="U", invoiceNumber="INV-P",
                        amount="1")  # fmt: skip
    await world.refused("invoice", "VALIDATION", accountNumber="U", invoiceDate="2026-11-01",
                        items=[{"chargeName": "x", "quantity": "2", "unitPrice": "3",
                                "amount": "7"}])  # fmt: skip
    memo = await world("createDebitMemo", accountNumber="U",
                       items=[{"chargeName": "a", "quantity": "3", "unitPrice": "1.25"},
                              {"chargeName": "b", "amount": "0.25"}])  # fmt: skip
    assert memo["amount"] == "4.00"


# --- Numbers given by the caller are unique per tenant.


async def test_caller_numbers_unique(world: World) -> None:
    await world.refused("invoice", "DUPLICATE", accountNumber="V", invoiceNumber="INV-P",
                        invoiceDate="2026-11-01",
                        items=[{"chargeName": "x", "amount": "1"}])  # fmt: skip
    before = await snapshot(world.sessionmaker, world.tenant_id)
    data = await world.gql(CREATE, input=account_input(accountNumber="U"))
    assert [e["code"] for e in data["createAccount"]["errors"]] == ["DUPLICATE"]
    assert await snapshot(world.sessionmaker, world.tenant_id) == before


async def test_unpost_invoice_refused_while_memos_are_made_from_it(world: World) -> None:
    await world("invoice", accountNumber="V", invoiceNumber="INV-M", invoiceDate="2026-11-01",
                status="POSTED", items=[{"chargeName": "x", "amount": "10"}])  # fmt: skip
    await world("createDebitMemo", invoiceNumber="INV-M", amount="3")
    before = await snapshot(world.sessionmaker, world.tenant_id)
    q = (
        'mutation { unpostInvoice(input: {invoiceNumber: "INV-M"}) { invoice { status } '
        "errors { code } } }"
    )
    assert await world.gql(q) == {
        "unpostInvoice": {"invoice": None, "errors": [{"code": "INVALID_STATE"}]}
    }
    assert await snapshot(world.sessionmaker, world.tenant_id) == before
    await world("cancelDebitMemo", memoNumber="DM00000003")
    assert await world.gql(q) == {"unpostInvoice": {"invoice": {"status": "DRAFT"}, "errors": []}}

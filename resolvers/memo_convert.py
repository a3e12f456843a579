"""Memo and refund rows to GraphQL objects (numbers of related objects passed in)."""

from __future__ import annotations

from typing import Any

from billing.money import exact_out, money_out
from resolvers.convert import gid
from schema.documents import DocumentStatus, PaymentMethod
from schema.memos import CreditMemo, DebitMemo, MemoItem, Refund


def credit_memo(row: Any, account_number: str, invoice_number: str | None) -> CreditMemo:
    currency = row["currency"]
    return CreditMemo(
        db_id=row["id"],
        account_id=row["account_id"],
        id=gid("CreditMemo", row["id"]),
        memo_number=row["memo_number"],
        account_number=account_number,
        invoice_number=invoice_number,
        currency=row["currency"],
        memo_date=row["memo_date"],
        status=DocumentStatus(row["status"]),
        amount=money_out(row["amount"], currency),
        applied_amount=money_out(row["applied_amount"], currency),
        refund_amount=money_out(row["refund_amount"], currency),
        unapplied_amount=money_out(
            row["amount"] - row["applied_amount"] - row["refund_amount"], currency
        ),
        reason_code=row["reason_code"],
        created_at=row["created_at"],
    )


def debit_memo(row: Any, account_number: str, invoice_number: str | None) -> DebitMemo:
    return DebitMemo(
        db_id=row["id"],
        account_id=row["account_id"],
        id=gid("DebitMemo", row["id"]),
        memo_number=row["memo_number"],
        account_number=account_number,
        invoice_number=invoice_number,
        currency=row["currency"],
        memo_date=row["memo_date"],
        due_date=row["due_date"],
        status=DocumentStatus(row["status"]),
        amount=money_out(row["amount"], row["currency"]),
        balance=money_out(row["balance"], row["currency"]),
        reason_code=row["reason_code"],
        created_at=row["created_at"],
    )


MEMO = {"credit_memo": credit_memo, "debit_memo": debit_memo}


def memo_item(row: Any, currency: str) -> MemoItem:
    """A line of a memo in ``currency`` (the memo's)."""
    return MemoItem(
        id=gid("MemoItem", row["id"]),
        charge_name=row["charge_name"],
        quantity=exact_out(row["quantity"]),
        unit_price=exact_out(row["unit_price"]),
        amount=money_out(row["amount"], currency),
    )


def refund(
    row: Any,
    account_number: str,
    currency: str,
    payment_number: str | None,
    credit_memo_number: str | None,
) -> Refund:
    """A refund in ``currency`` (its account's)."""
    return Refund(
        db_id=row["id"],
        id=gid("Refund", row["id"]),
        refund_number=row["refund_number"],
        account_number=account_number,
        amount=money_out(row["amount"], currency),
        refund_date=row["refund_date"],
        method=PaymentMethod(row["method"]),
        payment_number=payment_number,
        credit_memo_number=credit_memo_number,
        created_at=row["created_at"],
    )

"""Memo and refund rows to GraphQL objects (numbers of related objects passed in)."""

from __future__ import annotations

from typing import Any

from resolvers.convert import gid
from schema.documents import DocumentStatus, PaymentMethod
from schema.memos import CreditMemo, DebitMemo, MemoItem, Refund


def credit_memo(row: Any, account_number: str, invoice_number: str | None) -> CreditMemo:
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
        amount=row["amount"],
        applied_amount=row["applied_amount"],
        refund_amount=row["refund_amount"],
        unapplied_amount=row["amount"] - row["applied_amount"] - row["refund_amount"],
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
        amount=row["amount"],
        balance=row["balance"],
        reason_code=row["reason_code"],
        created_at=row["created_at"],
    )


MEMO = {"credit_memo": credit_memo, "debit_memo": debit_memo}


def memo_item(row: Any) -> MemoItem:
    return MemoItem(
        id=gid("MemoItem", row["id"]),
        charge_name=row["charge_name"],
        quantity=row["quantity"],
        unit_price=row["unit_price"],
        amount=row["amount"],
    )


def refund(
    row: Any, account_number: str, payment_number: str | None, credit_memo_number: str | None
) -> Refund:
    return Refund(
        db_id=row["id"],
        id=gid("Refund", row["id"]),
        refund_number=row["refund_number"],
        account_number=account_number,
        amount=row["amount"],
        refund_date=row["refund_date"],
        method=PaymentMethod(row["method"]),
        payment_number=payment_number,
        credit_memo_number=credit_memo_number,
        created_at=row["created_at"],
    )

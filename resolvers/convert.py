"""Rows from billing/ to GraphQL objects.

Money is shaped for the client here, and only here: amounts and metrics with
``money_out`` (the currency's minor unit), prices, quantities and MRR with ``exact_out``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import strawberry

from billing.metrics import Metrics
from billing.money import exact_out, money_out
from billing.pages import Page
from schema.accounts import Account, AccountMetrics, AccountStatus, Contact, PaymentTerm
from schema.common import Connection, Edge, PageInfo
from schema.documents import (
    Application,
    DocumentStatus,
    Invoice,
    InvoiceItem,
    InvoiceSource,
    Payment,
    PaymentMethod,
    PaymentStatus,
)


def gid(kind: str, ident: int) -> strawberry.ID:
    """A global opaque id: base64 of ``Kind:id``."""
    return strawberry.ID(base64.b64encode(f"{kind}:{ident}".encode()).decode())


def _contact(raw: dict[str, Any]) -> Contact:
    return Contact(
        first_name=raw.get("firstName", ""),
        last_name=raw.get("lastName", ""),
        work_email=raw.get("workEmail"),
        work_phone=raw.get("workPhone"),
        address1=raw.get("address1"),
        address2=raw.get("address2"),
        city=raw.get("city"),
        state=raw.get("state"),
        postal_code=raw.get("postalCode"),
        country=raw.get("country"),
    )


def contact_dict(c: Any) -> dict[str, Any] | None:
    """ContactInput to the stored camelCase form."""
    if c is None:
        return None
    return {
        k: v
        for k, v in {
            "firstName": c.first_name,
            "lastName": c.last_name,
            "workEmail": c.work_email,
            "workPhone": c.work_phone,
            "address1": c.address1,
            "address2": c.address2,
            "city": c.city,
            "state": c.state,
            "postalCode": c.postal_code,
            "country": c.country,
        }.items()
        if v is not None
    }


def account(row: Any) -> Account:
    return Account(
        db_id=row["id"],
        id=gid("Account", row["id"]),
        account_number=row["account_number"],
        name=row["name"],
        currency=row["currency"],
        status=AccountStatus(row["status"]),
        bill_cycle_day=row["bill_cycle_day"],
        payment_term=PaymentTerm(row["payment_term"]),
        batch=row["batch"],
        partner_account=row["partner_account"],
        bill_to_contact=_contact(row["bill_to"]),
        sold_to_contact=_contact(row["sold_to"]),
        created_at=row["created_at"],
    )


def metrics(m: Metrics, currency: str) -> AccountMetrics:
    return AccountMetrics(
        balance=money_out(m.balance, currency),
        credit_balance=money_out(m.credit_balance, currency),
        total_invoice_balance=money_out(m.total_invoice_balance, currency),
        total_debit_memo_balance=money_out(m.total_debit_memo_balance, currency),
        unapplied_payment_amount=money_out(m.unapplied_payment_amount, currency),
        unapplied_credit_memo_amount=money_out(m.unapplied_credit_memo_amount, currency),
        contracted_mrr=exact_out(m.contracted_mrr),
        last_invoice_date=m.last_invoice_date,
        last_metrics_update=m.last_metrics_update,
        currency=currency,
    )


def invoice(row: Any, account_number: str) -> Invoice:
    return Invoice(
        db_id=row["id"],
        account_id=row["account_id"],
        id=gid("Invoice", row["id"]),
        invoice_number=row["invoice_number"],
        account_number=account_number,
        currency=row["currency"],
        invoice_date=row["invoice_date"],
        due_date=row["due_date"],
        target_date=row["target_date"],
        status=DocumentStatus(row["status"]),
        amount=money_out(row["amount"], row["currency"]),
        balance=money_out(row["balance"], row["currency"]),
        source=InvoiceSource(row["source"]),
        created_at=row["created_at"],
    )


def invoice_item(
    row: Any,
    currency: str,
    subscription_number: str | None = None,
    charge_number: str | None = None,
) -> InvoiceItem:
    """A line of an invoice in ``currency`` (the invoice's)."""
    return InvoiceItem(
        id=gid("InvoiceItem", row["id"]),
        charge_name=row["charge_name"],
        subscription_number=subscription_number,
        charge_number=charge_number,
        service_start_date=row["service_start_date"],
        service_end_date=row["service_end_date"],
        quantity=exact_out(row["quantity"]),
        unit_price=exact_out(row["unit_price"]),
        amount=money_out(row["amount"], currency),
    )


def payment(row: Any, account_number: str) -> Payment:
    currency = row["currency"]
    return Payment(
        db_id=row["id"],
        account_id=row["account_id"],
        id=gid("Payment", row["id"]),
        payment_number=row["payment_number"],
        account_number=account_number,
        currency=row["currency"],
        amount=money_out(row["amount"], currency),
        applied_amount=money_out(row["applied_amount"], currency),
        refund_amount=money_out(row["refund_amount"], currency),
        unapplied_amount=money_out(
            row["amount"] - row["applied_amount"] - row["refund_amount"], currency
        ),
        effective_date=row["effective_date"],
        type=row["type"],
        method=PaymentMethod(row["method"]),
        status=PaymentStatus(row["status"]),
        created_at=row["created_at"],
    )


@dataclass(frozen=True)
class LastPayment:
    """An account's latest processed payment, as Account.lastPayment* answer it."""

    effective_date: date
    amount: Decimal


def last_payment(row: Any) -> LastPayment:
    return LastPayment(row["effective_date"], money_out(row["amount"], row["currency"]))


def application(row: Any, numbers: dict[tuple[str, int], str], currency: str) -> Application:
    """An application between documents in ``currency`` (both sides share it)."""

    def num(kind: str) -> str | None:
        ident = row[f"{kind}_id"]
        return numbers.get((kind, ident)) if ident is not None else None

    return Application(
        id=gid("Application", row["id"]),
        amount=money_out(row["amount"], currency),
        payment_number=num("payment"),
        credit_memo_number=num("credit_memo"),
        invoice_number=num("invoice"),
        debit_memo_number=num("debit_memo"),
        created_at=row["created_at"],
    )


def connection(page: Page, node: Any) -> Connection[Any]:
    return Connection(
        edges=[Edge(cursor=c, node=node(r)) for c, r in zip(page.cursors, page.rows, strict=True)],
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        total_count=page.total,
    )

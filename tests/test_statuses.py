"""The stored statuses and kinds (db/statuses.py) and the GraphQL enums that show them agree."""

from __future__ import annotations

import ast
import re
from enum import Enum
from pathlib import Path

import pytest

import db.statuses as st
import schema.accounts as sa
import schema.billruns as sb
import schema.catalog as sc
import schema.documents as sd
import schema.orders as so
from db.models import TABLES

ROOT = Path(__file__).resolve().parent.parent

PAIRS: list[tuple[type[Enum], type[Enum]]] = [
    (st.AccountStatus, sa.AccountStatus),
    (st.InvoiceStatus, sd.DocumentStatus),
    (st.MemoStatus, sd.DocumentStatus),
    (st.PaymentStatus, sd.PaymentStatus),
    (st.PaymentMethod, sd.PaymentMethod),
    (st.InvoiceSource, sd.InvoiceSource),
    (st.SubscriptionStatus, so.SubscriptionStatus),
    (st.TermType, so.TermType),
    (st.OrderStatus, so.OrderStatus),
    (st.JobStatus, so.JobStatus),
    (st.BillRunStatus, sb.BillRunStatus),
    (st.BillRunPosting, sb.BillRunPosting),
    (st.ChargeType, sc.ChargeType),
    (st.ChargeModel, sc.ChargeModel),
    (st.BillingTiming, sc.BillingTiming),
    (st.MetricsUpdateReason, sa.MetricsUpdateReason),
]


@pytest.mark.parametrize(("stored", "shown"), PAIRS, ids=lambda e: e.__name__)
def test_graphql_enum_shows_the_stored_values(stored: type[Enum], shown: type[Enum]) -> None:
    assert {m.value for m in shown} == {m.value for m in stored}


def test_a_member_is_the_stored_string() -> None:
    assert st.InvoiceStatus.POSTED == "POSTED"
    assert f"status = '{st.InvoiceStatus.POSTED}'" == "status = 'POSTED'"
    assert f"{st.MemoKind.DEBIT_MEMO}_id" == "debit_memo_id"


def test_column_defaults_are_members() -> None:
    defaults = {
        (t.name, c.name): str(c.server_default.arg.text).strip("'")  # type: ignore[union-attr]
        for t in TABLES.sorted_tables
        for c in t.c
        if c.name == "status" and c.server_default is not None
    }
    assert defaults[("invoice", "status")] == st.InvoiceStatus.DRAFT
    assert defaults[("payment", "status")] == st.PaymentStatus.PROCESSED
    assert defaults[("bill_run", "status")] == st.BillRunStatus.PENDING
    assert defaults[("bill_run_account", "status")] == st.BillRunAccountStatus.PENDING
    assert defaults[("job", "status")] == st.JobStatus.QUEUED


STATUS_IN_SQL = re.compile(r"status\s*(?:=|<>|!=)\s*'([A-Z_]+)'|status\s+IN\s*\(([^)]*)\)")
STORED_STATUSES = {
    m.value
    for e in (
        st.AccountStatus,
        st.InvoiceStatus,
        st.MemoStatus,
        st.PaymentStatus,
        st.SubscriptionStatus,
        st.OrderStatus,
        st.BillRunStatus,
        st.BillRunAccountStatus,
        st.JobStatus,
    )
    for m in e
}


def test_statuses_written_in_billing_sql_are_members() -> None:
    """billing/ keeps SQL text readable with quoted statuses; each one is a stored status."""
    seen = set()
    for path in sorted((ROOT / "billing").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for single, listed in STATUS_IN_SQL.findall(node.value):
                    seen |= {single} if single else set(re.findall(r"'([A-Z_]+)'", listed))
    assert seen - STORED_STATUSES == set()
    assert {"DRAFT", "POSTED", "PROCESSED", "PENDING"} <= seen

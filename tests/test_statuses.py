"""The stored statuses and kinds (db/statuses.py) and the GraphQL enums that show them agree."""

from __future__ import annotations

from enum import Enum

import pytest

import db.statuses as st
import schema.accounts as sa
import schema.billruns as sb
import schema.catalog as sc
import schema.documents as sd
import schema.orders as so
from db.models import TABLES

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

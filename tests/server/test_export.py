"""``partnerbill export``: a tenant's accounts with every metric, invoices and payments, as
CSV or JSON Lines, filtered, one snapshot, at constant memory."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import text

from billing.exports import ExportFilter, ExportKind
from server.exports import ExportFormat, export
from tests.helpers import Gql
from tests.server.test_key_revocation import cli_env, partnerbill  # noqa: F401 (fixture)
from tests.test_graphql_accounts import CREATE, account_input
from tests.test_memos import Api

INVOICE = [{"chargeName": "Seats", "amount": "100.10"}]


async def books(sessionmaker: Any, tenant_id: int) -> Api:
    """P (partner, two posted invoices, one change pending), O (ordinary, a JPY payment
    account would not share its currency: O is USD), J (JPY)."""
    api = Api(Gql(sessionmaker, tenant_id), sessionmaker, tenant_id)
    await api.gql(CREATE, input=account_input(accountNumber="P", partnerAccount=True))
    await api.gql(CREATE, input=account_input(accountNumber="O"))
    await api.gql(CREATE, input=account_input(accountNumber="J", currency="JPY"))
    for number, day in (("INV-1", "2026-10-01"), ("INV-2", "2026-11-01")):
        await api("invoice", accountNumber="P", invoiceNumber=number, invoiceDate=day,
                  status="POSTED", items=INVOICE)  # fmt: skip
    await api("invoice", accountNumber="O", invoiceNumber="INV-3", invoiceDate="2026-11-15",
              status="POSTED", items=INVOICE)  # fmt: skip
    await api("createPayment", accountNumber="O", amount="40", effectiveDate="2026-11-20")
    await api("createPayment", accountNumber="J", amount="500", effectiveDate="2026-11-21")
    return api


def run_cli(env: dict[str, str], *args: str) -> Any:
    return asyncio.to_thread(partnerbill, env, "export", *args)


async def test_accounts_carry_every_metric_and_the_pending_changes(
    cli_env: dict[str, str],  # noqa: F811
    sessionmaker: Any,
    tenant: Any,
) -> None:
    await books(sessionmaker, tenant.id)
    out = await run_cli(cli_env, "accounts", "--tenant", str(tenant.id), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    rows = {r["accountNumber"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {"P", "O", "J"}
    o = rows["O"]
    assert (o["totalInvoiceBalance"], o["unappliedPaymentAmount"], o["balance"]) == (
        "100.10",
        "40.00",
        "60.10",
    )
    assert o["partnerAccount"] is False and o["pendingMetricChanges"] == 0
    assert o["lastInvoiceDate"] == "2026-11-15"
    assert rows["J"]["unappliedPaymentAmount"] == "500"  # JPY has no minor unit
    # P's two invoices wait in the ledger: stored metrics are zero, and the file says why.
    p = rows["P"]
    assert p["partnerAccount"] is True
    assert p["pendingMetricChanges"] == 2 and p["totalInvoiceBalance"] == "0.00"
    assert datetime.fromisoformat(p["lastMetricsUpdate"]).tzinfo is not None
    assert "Exported 3 accounts" in out.stderr


async def test_filters_and_csv(
    cli_env: dict[str, str],  # noqa: F811
    sessionmaker: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    await books(sessionmaker, tenant.id)
    target = tmp_path / "invoices.csv"
    base = ("--tenant", str(tenant.id))
    out = await run_cli(cli_env, "invoices", *base, "--from", "2026-10-15", "-o", str(target))
    assert out.returncode == 0, out.stderr
    got = list(csv.DictReader(target.open()))
    assert [(r["invoiceNumber"], r["accountNumber"], r["amount"]) for r in got] == [
        ("INV-2", "P", "100.10"),
        ("INV-3", "O", "100.10"),
    ]
    assert got[0]["postedAt"] != "" and got[0]["status"] == "POSTED"

    out = await run_cli(cli_env, "invoices", *base, "--partner-only", "--to", "2026-10-31")
    assert [r["invoiceNumber"] for r in csv.DictReader(io.StringIO(out.stdout))] == ["INV-1"]

    out = await run_cli(cli_env, "payments", *base, "--format", "jsonl")
    pays = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(p["accountNumber"], p["amount"], p["unappliedAmount"]) for p in pays] == [
        ("O", "40.00", "40.00"),
        ("J", "500", "500"),
    ]

    # Every account's metrics were stamped (at creation or by a write) before now, none
    # before 2000.
    for since, expected in (
        (datetime.now(UTC).isoformat(), {"P", "O", "J"}),
        ("2000-01-01", set()),
    ):
        out = await run_cli(cli_env, "accounts", *base, "--metrics-stale-since", since)
        assert {r["accountNumber"] for r in csv.DictReader(io.StringIO(out.stdout))} == expected

    out = await run_cli(cli_env, "accounts", *base, "--from", "yesterday")
    assert out.returncode == 2 and "is not a date" in out.stderr


async def test_ten_thousand_accounts_at_constant_memory(
    engine: Any, sessionmaker: Any, tenant: Any, tmp_path: Path
) -> None:
    """Peak memory of exporting 10,000 accounts is about that of 5,000: the rows are
    streamed a page at a time, never held whole."""
    async with sessionmaker.begin() as s:
        await s.execute(
            text(
                "INSERT INTO account (tenant_id, account_number, name, currency, status, "
                "bill_cycle_day, payment_term, batch, partner_account, bill_to, sold_to, "
                "created_at, updated_at) "
                "SELECT :t, 'A' || lpad(g::text, 6, '0'), 'Account ' || g, 'USD', 'ACTIVE', 1, "
                "'DUE_UPON_RECEIPT', 'Batch1', g % 2 = 0, '{}', '{}', now(), now() "
                "FROM generate_series(1, 10000) g"
            ),
            {"t": tenant.id},
        )
        await s.execute(
            text(
                "INSERT INTO account_metrics (account_id, tenant_id, total_invoice_balance, "
                "total_debit_memo_balance, unapplied_payment_amount, "
                "unapplied_credit_memo_amount, credit_balance, contracted_mrr) "
                "SELECT id, tenant_id, 12.5, 0, 0, 0, 0, 1.25 FROM account WHERE tenant_id = :t"
            ),
            {"t": tenant.id},
        )

    async def peak(where: ExportFilter) -> tuple[int, int]:
        target = tmp_path / "accounts.jsonl"
        tracemalloc.start()
        try:
            n = await export(engine, tenant.id, ExportKind.ACCOUNTS, ExportFormat.JSONL, where,
                             target, Console(file=io.StringIO()))  # fmt: skip
            return n, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, few_peak = await peak(ExportFilter(metrics_stale_since=None, partner_only=False))
    assert few == 10_000
    lines = (tmp_path / "accounts.jsonl").read_text().splitlines()
    assert len(lines) == 10_000
    assert json.loads(lines[-1])["accountNumber"] == "A010000"
    assert Decimal(json.loads(lines[0])["totalInvoiceBalance"]) == Decimal("12.5")
    half, half_peak = await peak(ExportFilter(partner_only=True))
    assert half == 5_000
    # Holding every row would take twice the memory of 5,000 rows; streaming holds one page
    # whatever the count.
    assert few_peak < half_peak * 1.5, (few_peak, half_peak)
    assert few_peak < 20_000_000

"""``partnerbill reconcile`` over the real HTTP API: every account of the tenant compared with
its documents, exit 0 when all match, 1 with the mismatching account and metric named."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from server.settings import Settings
from tests.helpers import Gql
from tests.server.test_subscriptions import serve
from tests.test_graphql_accounts import CREATE, account_input
from tests.test_memos import Api

REPO = Path(__file__).resolve().parents[2]
ITEMS = [{"chargeName": "Seats", "amount": "70"}]


@pytest.fixture(scope="module")
async def url(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield f"http://{addr}/graphql"


async def reconcile(url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERBILL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "reconcile", "--url", url, "--api-key", key, *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_reconcile_a_tenant(url: str, sessionmaker: Any, tenant: Any, tmp_path: Path) -> None:
    api = Api(Gql(sessionmaker, tenant.id), sessionmaker, tenant.id)
    await api.gql(CREATE, input=account_input(accountNumber="P", partnerAccount=True))
    await api.gql(CREATE, input=account_input(accountNumber="O"))
    for account in ("P", "O"):
        await api("invoice", accountNumber=account, invoiceDate="2026-11-01", status="POSTED",
                  items=ITEMS)  # fmt: skip
    await api("createPayment", accountNumber="O", amount="20", effectiveDate="2026-11-02")

    # P's invoice is still pending: compared live, everything matches.
    code, out, err = await reconcile(url, tenant.api_key, "--page-size", "1")
    assert code == 0, err
    assert "MISMATCH" not in out
    assert "2 accounts reconciled: 0 mismatches; 1 partner accounts have changes" in err

    # A stored total that no document explains.
    async with sessionmaker.begin() as s:
        await s.execute(
            text(
                "UPDATE account_metrics m SET unapplied_payment_amount = 25 FROM account a "
                "WHERE a.id = m.account_id AND a.tenant_id = :t AND a.account_number = 'O'"
            ),
            {"t": tenant.id},
        )
    report = tmp_path / "mismatches.csv"
    code, out, err = await reconcile(url, tenant.api_key, "--report", str(report))
    assert code == 1, err
    assert out.startswith("MISMATCH O: ")
    assert "unappliedPaymentAmount live 25" in out and "balance live 45" in out
    assert "totalInvoiceBalance" not in out  # only the metrics that differ
    rows = list(csv.DictReader(report.open()))
    assert {(r["accountNumber"], r["metric"]) for r in rows} == {
        ("O", "unappliedPaymentAmount"),
        ("O", "balance"),
    }

    code, out, err = await reconcile(url, tenant.api_key, "--partner-only")
    assert code == 0 and "1 accounts reconciled" in err

    code, _, err = await reconcile(url, "pb_not_a_key")
    assert code == 2 and "refused the API key" in err

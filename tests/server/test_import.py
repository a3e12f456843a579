"""``partnerbill import``: files through the real HTTP API in parallel bulk calls, refused rows
to a failed-rows file the same command takes back, a dry run that writes nothing, and an
import killed half-way that, run again, leaves exactly the file's rows."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import text

from db.statuses import ImportKind
from server.importer import Outcome, failed_path, run_import
from server.settings import Settings
from tests.helpers import Gql
from tests.server.test_subscriptions import serve
from tests.test_graphql_accounts import CREATE, account_input

REPO = Path(__file__).resolve().parents[2]
INVOICE_HEADER = ["accountNumber", "invoiceDate", "status", "chargeName", "amount"]


@pytest.fixture(scope="module")
async def url(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield f"http://{addr}/graphql"


@pytest.fixture
async def accounts(sessionmaker: Any, tenant: Any) -> Gql:
    gql = Gql(sessionmaker, tenant.id)
    await gql(CREATE, input=account_input(accountNumber="RESELLER", partnerAccount=True))
    await gql(CREATE, input=account_input(accountNumber="SHOP"))
    return gql


def write_invoices(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INVOICE_HEADER)
        w.writerows(rows)


def invoice_rows(n: int) -> list[list[str]]:
    """n posted invoices without numbers (so only the keys stop a duplicate), amounts
    1.01, 1.02, ... alternating between the partner and the ordinary account."""
    return [
        [
            "RESELLER" if i % 2 else "SHOP",
            "2026-11-01",
            "POSTED",
            "Seats",
            f"{1 + (i % 97) / 100:.2f}",
        ]
        for i in range(n)
    ]


async def written(sessionmaker: Any, tenant_id: int) -> Counter[tuple[str, str]]:
    """The tenant's invoices as (account, amount) with their multiplicity."""
    async with sessionmaker() as s:
        res = await s.execute(
            text(
                "SELECT a.account_number, i.amount FROM invoice i JOIN account a "
                "ON a.id = i.account_id WHERE i.tenant_id = :t"
            ),
            {"t": tenant_id},
        )
        return Counter((r[0], f"{r[1]:.2f}") for r in res)


def expected(rows: list[list[str]]) -> Counter[tuple[str, str]]:
    return Counter((r[0], r[4]) for r in rows)


async def finished(gql: Gql, count: int) -> list[dict[str, Any]]:
    """The data of the tenant's IMPORT_FINISHED events, once ``count`` are readable (the
    feed shows an event when every transaction older than it has ended)."""
    query = "{ events(types: [IMPORT_FINISHED]) { edges { node { data } } } }"
    async with asyncio.timeout(30):
        while True:
            edges = (await gql(query))["events"]["edges"]
            if len(edges) >= count:
                return [e["node"]["data"] for e in edges]
            await asyncio.sleep(0.1)


async def send(
    kind: ImportKind,
    path: Path,
    url: str,
    tenant: Any,
    *,
    batch: int,
    concurrency: int,
    dry_run: bool = False,
) -> Outcome:
    return await run_import(kind, path, url=url, api_key=tenant.api_key, batch_size=batch,
                            concurrency=concurrency, dry_run=dry_run,
                            console=Console(file=io.StringIO()))  # fmt: skip


async def test_refused_rows_go_to_a_file_the_same_command_takes_back(
    url: str, accounts: Gql, sessionmaker: Any, tenant: Any, tmp_path: Path
) -> None:
    rows = invoice_rows(2_500)
    rows[7][4] = "12.345"  # too many places for USD
    rows[1_600][0] = "NOBODY"  # no such account
    source = tmp_path / "november.csv"
    write_invoices(source, rows)

    dry = await send(
        ImportKind.INVOICES, source, url, tenant, batch=1000, concurrency=3, dry_run=True
    )
    assert (dry.rows, dry.written, dry.failed) == (2_500, 2_498, 2)
    assert await written(sessionmaker, tenant.id) == Counter()  # a dry run writes nothing

    out = await send(ImportKind.INVOICES, source, url, tenant, batch=1000, concurrency=3)
    assert (out.rows, out.written, out.failed) == (2_500, 2_498, 2)
    assert out.failed_file == failed_path(source) == tmp_path / "november.failed.csv"
    # The feed heard of it once, with the counts (the dry run recorded nothing).
    assert out.recorded and not dry.recorded
    assert await finished(accounts, 1) == [
        {"kind": "invoices", "file": "november.csv", "rows": 2_500, "written": 2_498,
         "failed": 2}
    ]  # fmt: skip
    # Batches finish in any order: the file keeps each row's number.
    refused = sorted(csv.DictReader(out.failed_file.open()), key=lambda r: int(r["_row"]))
    assert [(r["_row"], r["accountNumber"], r["amount"]) for r in refused] == [
        ("8", "RESELLER", "12.345"),
        ("1601", "NOBODY", rows[1_600][4]),
    ]
    assert "VALIDATION at " in refused[0]["_errors"] and "amount" in refused[0]["_errors"]
    assert "NOT_FOUND" in refused[1]["_errors"]
    good = [r for i, r in enumerate(rows) if i not in (7, 1_600)]
    assert await written(sessionmaker, tenant.id) == expected(good)

    # Run again: nothing is written twice (every row answers from its key).
    again = await send(ImportKind.INVOICES, source, url, tenant, batch=700, concurrency=2)
    assert (again.written, again.failed) == (2_498, 2)
    assert await written(sessionmaker, tenant.id) == expected(good)

    # Correct the refused rows in the failed file and take it back.
    fixed = out.failed_file.read_text().replace("12.345", "12.35").replace("NOBODY", "SHOP")
    out.failed_file.write_text(fixed)
    back = await send(ImportKind.INVOICES, out.failed_file, url, tenant, batch=1000, concurrency=1)
    assert (back.rows, back.written, back.failed) == (2, 2, 0)
    rows[7][4], rows[1_600][0] = "12.35", "SHOP"
    assert await written(sessionmaker, tenant.id) == expected(rows)
    runs = await finished(accounts, 3)
    assert [(r["file"], r["written"], r["failed"]) for r in runs] == [
        ("november.csv", 2_498, 2),
        ("november.csv", 2_498, 2),
        ("november.failed.csv", 2, 0),
    ]


async def test_payments_from_json_lines_with_applications(
    url: str, accounts: Gql, sessionmaker: Any, tenant: Any, tmp_path: Path
) -> None:
    await accounts(
        "mutation($i: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(input: $i) "
        "{ errors { code } } }",
        i={"accountNumber": "SHOP", "invoiceNumber": "INV-9", "invoiceDate": "2026-11-01",
           "status": "POSTED", "items": [{"chargeName": "x", "amount": "50"}]},
    )  # fmt: skip
    source = tmp_path / "payments.jsonl"
    lines = [
        {"accountNumber": "SHOP", "amount": "30", "effectiveDate": "2026-11-02",
         "invoices": [{"invoiceNumber": "INV-9", "amount": "20"}]},
        {"accountNumber": "RESELLER", "amount": "5", "effectiveDate": "2026-11-02"},
        {"accountNumber": "SHOP", "amount": "5", "effectiveDate": "2026-11-31"},
    ]  # fmt: skip
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = await send(ImportKind.PAYMENTS, source, url, tenant, batch=1000, concurrency=1)
    assert (out.written, out.failed) == (2, 1)
    assert out.failed_file is not None
    refused = [json.loads(x) for x in out.failed_file.read_text().splitlines()]
    assert refused[0]["_row"] == 3 and refused[0]["effectiveDate"] == "2026-11-31"
    assert "idempotencyKey" not in refused[0]  # derived again from the row when taken back
    data = await accounts(
        '{ invoice(invoiceNumber: "INV-9") { balance } account(accountNumber: "SHOP") '
        "{ metrics { unappliedPaymentAmount } } }"
    )
    assert Decimal(data["invoice"]["balance"]) == Decimal("30")
    assert Decimal(data["account"]["metrics"]["unappliedPaymentAmount"]) == Decimal("10")


async def test_an_import_killed_half_way_and_run_again_leaves_exactly_the_files_rows(
    url: str, accounts: Gql, sessionmaker: Any, tenant: Any, tmp_path: Path
) -> None:
    rows = invoice_rows(3_000)
    source = tmp_path / "big.csv"
    write_invoices(source, rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERBILL_")}
    command = [sys.executable, "-m", "server.cli", "import", "invoices", str(source),
               "--url", url, "--api-key", tenant.api_key, "--batch", "100",
               "--concurrency", "2"]  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    # Kill it once some rows are in and before all are.
    async with asyncio.timeout(120):
        while sum((await written(sessionmaker, tenant.id)).values()) < 500:
            assert first.returncode is None, "the import ended before it could be killed"
            await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    part = sum((await written(sessionmaker, tenant.id)).values())
    assert 500 <= part < 3_000

    second = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(second.communicate(), 180)
    assert second.returncode == 0, err.decode()
    assert "3,000 of 3,000 invoices written" in err.decode()
    assert await written(sessionmaker, tenant.id) == expected(rows)

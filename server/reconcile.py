"""``partnerbill reconcile``: walk a whole tenant through ``Query.metricsReconciliation`` and
say which accounts' metrics do not match their documents, for sign-off after a migration.

Each page is one snapshot on the service's side; the command pages with the connection's
cursor, shows a progress bar, prints every mismatch with the metrics that differ, can write
them to a CSV report, and its exit status says whether everything matched."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from rich.console import Console

from server.api_client import client, execute
from server.progress import rows_progress

METRICS = (
    "balance",
    "totalInvoiceBalance",
    "totalDebitMemoBalance",
    "unappliedPaymentAmount",
    "unappliedCreditMemoAmount",
    "creditBalance",
    "contractedMrr",
    "lastInvoiceDate",
)
_VALUES = " ".join(METRICS)
QUERY = f"""
query($first: Int!, $after: String, $filter: AccountFilter) {{
  metricsReconciliation(first: $first, after: $after, filter: $filter) {{
    totalCount
    pageInfo {{ hasNextPage endCursor }}
    edges {{ node {{
      account {{ accountNumber partnerAccount pendingMetricChanges lastMetricsUpdate }}
      stored {{ {_VALUES} }} live {{ {_VALUES} }} recomputed {{ {_VALUES} }}
      matches
    }} }}
  }}
}}"""


@dataclass(frozen=True)
class Mismatch:
    """An account whose live metrics differ from the metrics its documents make."""

    account_number: str
    partner_account: bool
    pending_changes: int
    # metric -> (live, recomputed), only the metrics that differ
    differences: dict[str, tuple[str | None, str | None]]


@dataclass
class Reconciliation:
    accounts: int = 0
    pending_accounts: int = 0  # partner accounts whose stored metrics wait for a refresh
    mismatches: list[Mismatch] = field(default_factory=list)


def _same(a: str | None, b: str | None) -> bool:
    """Equal as values: "45.0000" is "45.00" (dates and absent values compare as text)."""
    try:
        return a == b or (a is not None and b is not None and Decimal(a) == Decimal(b))
    except InvalidOperation:
        return False


def _mismatch(node: dict[str, Any]) -> Mismatch:
    live, recomputed = node["live"], node["recomputed"]
    return Mismatch(
        account_number=node["account"]["accountNumber"],
        partner_account=node["account"]["partnerAccount"],
        pending_changes=node["account"]["pendingMetricChanges"],
        differences={
            m: (live[m], recomputed[m]) for m in METRICS if not _same(live[m], recomputed[m])
        },
    )


async def reconcile(
    url: str,
    api_key: str | None,
    console: Console,
    *,
    partner_only: bool = False,
    page_size: int = 100,
) -> Reconciliation:
    """Every account of the tenant (or its partner accounts), page by page."""
    out = Reconciliation()
    account_filter = {"partnerAccount": True} if partner_only else None
    async with client(api_key, connections=1, timeout_s=120.0) as http:
        with rows_progress(console) as progress:
            task = progress.add_task("reconcile", total=None, failed=0)
            after: str | None = None
            while True:
                variables = {"first": page_size, "after": after, "filter": account_filter}
                page = (await execute(http, url, QUERY, variables))["metricsReconciliation"]
                for edge in page["edges"]:
                    node = edge["node"]
                    out.accounts += 1
                    out.pending_accounts += node["account"]["pendingMetricChanges"] > 0
                    if not node["matches"]:
                        out.mismatches.append(_mismatch(node))
                progress.update(task, total=page["totalCount"], completed=out.accounts,
                                failed=len(out.mismatches))  # fmt: skip
                if not page["pageInfo"]["hasNextPage"]:
                    return out
                after = page["pageInfo"]["endCursor"]


def write_report(path: Path, mismatches: list[Mismatch]) -> None:
    """One line per differing metric of each mismatching account."""
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["accountNumber", "partnerAccount", "pendingMetricChanges", "metric",
                    "live", "recomputed"])  # fmt: skip
        for m in mismatches:
            for metric, (live, recomputed) in m.differences.items():
                w.writerow([m.account_number, m.partner_account, m.pending_changes, metric,
                            live, recomputed])  # fmt: skip

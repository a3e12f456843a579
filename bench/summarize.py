# ruff: noqa: E501
"""Median and spread (min..max) of the runs in a bench/run.py --json file, as Markdown;
with --plot, the hot scenario's throughput against N as a PNG (matplotlib: the bench extra).

python bench/summarize.py results.json [--plot bench/results/hot.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median_spread


def fmt(values: list[float], digits: int = 1) -> str:
    med, lo, hi = median_spread(values)
    return f"{med:.{digits}f} ({lo:.{digits}f}..{hi:.{digits}f})"


def _cpu(r: dict[str, Any]) -> str:
    c = r["cpu_ms_per_req"]
    return f"{c['api']:.2f} / {c.get('worker', 0):.2f} / {c['postgres']:.2f} / {c['loadgen']:.3f}"


def hot(runs: list[dict[str, Any]]) -> list[str]:
    """The hot-account table: medians and spread of the runs, CPU per request of the middle run."""
    orders = runs[0].get("mode") == "orders_only"
    labels = ("graphql", "ceiling") if orders else ("partner", "ordinary", "spread")
    cfg = runs[0]["config"]
    out = [
        f"{cfg['api_workers']} API process(es), {cfg['seconds_per_window']} s windows, "
        f"mutations {', '.join(cfg['mutations'])}; PostgreSQL {cfg['postgres_version']}",
        "",
        "| N | target | throughput/s | p50 ms | p99 ms | LOCK_COMPETITION | other errors | CPU ms/request api / worker / postgres / loadgen (middle run) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    mid = runs[len(runs) // 2]
    for i, row in enumerate(runs[0]["runs"]):
        n = row["clients"]
        for label in labels:
            rs = [run["runs"][i][label] for run in runs]
            out.append(
                f"| {n} | {label} | {fmt([r['throughput'] for r in rs])} | {fmt([r['p50_ms'] for r in rs])} | "
                f"{fmt([r['p99_ms'] for r in rs])} | {sum(r['lock_competition'] for r in rs)} | "
                f"{sum(sum(r['other_errors'].values()) for r in rs)} | {_cpu(mid['runs'][i][label])} |"
            )
        if orders:
            out.append(
                f"| {n} | **GraphQL / ceiling** | {fmt([run['runs'][i]['graphql_to_ceiling_throughput'] for run in runs], 3)} | | | | | "
                f"API CPU {fmt([run['runs'][i]['graphql_to_ceiling_api_cpu'] for run in runs], 2)}x |"
            )
        else:
            out.append(
                f"| {n} | **ratio (a)/(c)** | {fmt([run['runs'][i]['hot_ratio'] for run in runs], 3)} | | | | | |"
            )
    out.append("")
    out.append(
        "Metrics equal recompute after refresh (partner, folded = writes, other accounts), per run: "
        + ", ".join(
            f"{r['partner_check']['exact']}/{r['partner_check']['folded_equals_writes']}/"
            f"{r['others_check']['exact']} ({r['others_check']['accounts_checked']})"
            for r in runs
        )
    )
    return out


def hot_plot(runs: list[dict[str, Any]], path: Path) -> Path:
    """Throughput against N (median of the runs, min..max as error bars), one line per target
    of the hot scenario (or GraphQL createOrder vs its ceiling for --orders-only runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orders = runs[0].get("mode") == "orders_only"
    names = (
        {"graphql": "GraphQL createOrder", "ceiling": "ceiling: bare Starlette + asyncpg"}
        if orders
        else {
            "partner": "(a) one partner account",
            "ordinary": "(b) one ordinary account",
            "spread": f"(c) {runs[0]['config']['spread_accounts']:,} ordinary accounts",
        }
    )
    sizes = [row["clients"] for row in runs[0]["runs"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, name in names.items():
        meds, lows, highs = [], [], []
        for i in range(len(sizes)):
            med, lo, hi = median_spread([run["runs"][i][label]["throughput"] for run in runs])
            meds.append(med)
            lows.append(med - lo)
            highs.append(hi - med)
        ax.errorbar(sizes, meds, yerr=[lows, highs], marker="o", capsize=4, label=name)
    cfg = runs[0]["config"]
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("N concurrent clients (one request at a time each)")
    ax.set_ylabel("successful requests per second")
    what = "createOrder only" if orders else "createOrder / createStandaloneInvoice / createPayment"
    ax.set_title(
        f"Hot account: {what}\n{cfg['api_workers']} API process(es), "
        f"{cfg['seconds_per_window']} s windows, median of {len(runs)} run(s)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


SEED_STAGES = ("accounts", "catalog", "orders", "bill_run", "refresh", "check")


def seed(runs: list[dict[str, Any]]) -> list[str]:
    size = runs[0]["sizes"]
    mid = runs[len(runs) // 2]
    orders = [r["stages"]["orders"] for r in runs]
    out = [
        f"1 reseller, {size['customers']:,} end customers, {size['subscriptions']:,} subscriptions "
        f"in {size['orders']:,} orders of {size['per_order']} ({size['order_clients']} clients), "
        "one month-end bill run (autoPost), then the refresh.",
        "",
        "| stage | seconds | CPU s api / worker / loadgen / postgres+rest (middle run) |",
        "|---|---|---|",
    ]
    for name in SEED_STAGES:
        cpu = mid["stages"][name]["cpu_s"]
        out.append(
            f"| {name} | {fmt([r['stages'][name]['seconds'] for r in runs], 2)} | "
            f"{cpu.get('api')} / {cpu.get('worker')} / {cpu.get('loadgen')} / {cpu.get('postgres_and_rest')} |"
        )
    out.append(f"| **total** | {fmt([r['total_seconds'] for r in runs], 2)} | |")
    out += [
        "",
        f"- orders: {fmt([o['subscriptions_per_s'] for o in orders])} subscriptions/s, "
        f"{fmt([o['orders_per_s'] for o in orders], 2)} orders/s; createOrder p50 "
        f"{fmt([o['p50_ms'] for o in orders])} ms, p99 {fmt([o['p99_ms'] for o in orders])} ms; "
        f"LOCK_COMPETITION {sum(o['lock_competition'] for o in orders)}, other errors "
        f"{sum(sum(o['errors'].values()) - o['lock_competition'] for o in orders)} (all runs)",
        f"- bill run to POSTED with its invoices posted: {fmt([r['stages']['bill_run']['seconds'] for r in runs], 2)} s; "
        f"invoices {', '.join(str(r['stages']['bill_run']['invoices']) for r in runs)}; "
        f"total {', '.join(r['stages']['bill_run']['invoice_total'] for r in runs)}",
        f"- refresh wait after the post (interval 1 s): {fmt([r['stages']['refresh']['waited_s'] for r in runs], 2)} s",
        "- peak RSS MiB api / worker: "
        + ", ".join(
            f"{r['peak_rss_mb'].get('api')} / {r['peak_rss_mb'].get('worker')}" for r in runs
        ),
        "- stored metrics equal recompute for every account, per run: "
        + ", ".join(
            f"{r['stages']['check']['exact']} ({r['stages']['check']['mismatches']} mismatches)"
            for r in runs
        ),
        "- reseller totalInvoiceBalance = invoice total, sum contractedMrr = N x price, per run: "
        + ", ".join(
            f"{r['stages']['check']['reseller_balance_equals_invoices']}/"
            f"{r['stages']['check']['contracted_mrr_equals_expected']}"
            for r in runs
        ),
        "- all checks passed, per run: " + ", ".join(str(r["ok"]) for r in runs),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a bench/run.py --json file")
    ap.add_argument("--plot", help="write the hot scenario's plot (PNG) here")
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text())
    if args.plot and "hot" in data:
        print(f"plot: {hot_plot(data['hot'], Path(args.plot))}", file=sys.stderr)
    lines: list[str] = []
    if "hot" in data:
        lines += ["### Hot account", *hot(data["hot"]), ""]
    if "seed" in data:
        lines += ["### Seed scenario 1, whole", *seed(data["seed"]), ""]
    if "framework" in data:
        rs = data["framework"]
        lines += [
            "### Framework cost",
            f"bare Starlette {fmt([r['bare']['throughput'] for r in rs])}/s, GraphQL "
            f"{fmt([r['graphql']['throughput'] for r in rs])}/s, ratio {fmt([r['ratio_graphql_to_bare'] for r in rs], 3)}",
            "",
        ]
    if "refresh" in data:
        rs = data["refresh"]
        k = rs[0]
        sub = [key for key in k["subset_refresh"] if key.endswith("_s")]
        lines += [
            "### Refresh scale",
            f"- {k['changed_accounts']} changed partner accounts, refresh_tenant: {fmt([r['tenant_refresh']['seconds'] for r in rs], 3)} s",
            "- "
            + "; ".join(f"{key}: {fmt([r['subset_refresh'][key] for r in rs], 4)}" for key in sub),
            f"- one account, {k['invoices_on_one_account']} posted invoices: refresh folding all pending rows {fmt([r['big_account']['refresh_folding_all_s'] for r in rs], 3)} s; "
            f"after 10 new {fmt([r['big_account']['refresh_after_10_new_s'] for r in rs], 4)} s; recompute oracle {fmt([r['big_account']['recompute_oracle_s'] for r in rs], 3)} s",
            "- exact: "
            + ", ".join(
                str(
                    r["tenant_refresh"]["exact_sample"]
                    and r["subset_refresh"]["exact"]
                    and r["big_account"]["exact"]
                )
                for r in rs
            ),
            "",
        ]
    if "freshness" in data:
        rs = data["freshness"]
        k = rs[0]
        lines += [
            "### Freshness",
            f"- {k['partner_accounts']} partner accounts, {k['clients']} clients, {k['seconds']} s, metricsRefreshInterval {k['interval_s']} s",
            f"- writes/s {fmt([r['writes_per_s'] for r in rs])}; staleness p50 {fmt([r['staleness_s']['p50'] for r in rs], 2)} s, "
            f"p99 {fmt([r['staleness_s']['p99'] for r in rs], 2)} s, max {fmt([r['staleness_s']['max'] for r in rs], 2)} s",
            f"- LOCK_COMPETITION {sum(r['lock_competition'] for r in rs)}, other errors {sum(sum(r['other_errors'].values()) for r in rs)}, "
            f"writes not covered {sum(r['writes_not_covered_by_a_refresh'] for r in rs)}",
            f"- refresh ticks per run {[r['refresh_ticks'] for r in rs]}; ms per changed account {fmt([r['refresh']['ms_per_changed_account'] for r in rs], 3)}; "
            f"longest tick {fmt([r['refresh']['ms_per_tick_max'] for r in rs], 1)} ms",
            "- exact after the last refresh: "
            + ", ".join(str(r["metrics_exact_after_last_refresh"]) for r in rs),
            "",
        ]
    if "raw" in data:
        rs = data["raw"]
        lines += ["### Raw ceilings"]
        for i, row in enumerate(rs[0]["single_row"]):
            lines.append(
                f"- single-row INSERT, {row['clients']} connections: {fmt([r['single_row'][i]['tps'] for r in rs], 0)} tx/s"
            )
        lines.append(
            f"- multi-row INSERT (1,000 rows/statement): {fmt([r['multi_row']['rows_per_s'] for r in rs], 0)} rows/s"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

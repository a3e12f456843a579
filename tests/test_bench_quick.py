"""Keeps the benchmark scripts working: the cheapest pieces at tiny size, correctness only."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bench import framework, freshness, hot, raw, refresh, seed
from bench.summarize import hot as summarize_hot
from bench.summarize import hot_plot


async def test_refresh_scale_quick_is_exact(database_url: str) -> None:
    out = await refresh.run(database_url, quick=True)
    many = out["tenant_refresh"]
    assert many["accounts_refreshed"] == out["changed_accounts"]
    assert many["changes_folded"] == 2 * out["changed_accounts"]
    assert many["skipped"] == 0
    assert many["exact_sample"]
    sub = out["subset_refresh"]
    assert sub["refreshed"] == [out["subset"], out["subset"]]
    assert sub["exact"]
    big = out["big_account"]
    assert big["folded_all"] == out["invoices_on_one_account"]
    assert big["folded_new"] == 10
    assert big["exact"]


async def test_raw_ceilings_write_every_row(database_url: str) -> None:
    out = await raw.run(database_url, seconds=0.2)
    assert [r["clients"] for r in out["single_row"]] == [1, 8, 32]
    assert all(r["transactions"] > 0 for r in out["single_row"])
    assert out["multi_row"]["rows"] % 1000 == 0 and out["multi_row"]["rows"] > 0
    assert out["all_rows_present"]


async def test_seed_scenario_quick_is_exact(database_url: str, redis_url: str) -> None:
    """The whole seed scenario at quick size, with a real uvicorn and a real arq worker
    (separate processes) on the suite's PostgreSQL and Redis (a unix socket when embedded)."""
    out = await seed.run(database_url, quick=True, redis=redis_url, progress=False)
    st = out["stages"]
    sizes = out["sizes"]
    assert sizes == {**sizes, "customers": 20, "subscriptions": 1000, "orders": 20}
    assert st["accounts"]["created"] == st["accounts"]["updated"] == 21
    assert st["accounts"]["errors"] == {}
    orders = st["orders"]
    assert orders["ok_orders"] == 20 and orders["ok_subscriptions"] == 1000
    assert orders["lock_competition"] == 0 and orders["errors"] == {}
    run = st["bill_run"]
    assert run["status"] == "POSTED" and run["run_errors"] == []
    assert run["invoices"] == 1
    assert Decimal(run["invoice_total"]) == Decimal("25000")
    assert st["refresh"]["fresh"]
    check = st["check"]
    assert check["accounts_checked"] == 21
    assert check["exact"] and check["mismatches"] == 0
    assert check["subscriptions_in_db"] == 1000
    assert check["reseller_balance_equals_invoices"]
    assert check["invoice_total_equals_expected"]
    assert check["customers_counted"] == 20 and check["customers_not_partner"] == 0
    assert check["contracted_mrr_equals_expected"]
    assert out["ok"]


async def test_hot_account_quick_partner_takes_every_write(
    database_url: str, redis_url: str
) -> None:
    """The hot-account load (orders, invoices, payments) through real uvicorn and arq
    processes, driven by the light client: the partner account takes every write, every
    touched account is exact after its refresh, and the plot is drawn from the results."""
    out = await hot.run(
        database_url, [4], 1.0, spread=20, redis=redis_url, warmup=0.3, progress=False
    )
    assert out["mode"] == "mix"
    (row,) = out["runs"]
    partner = row["partner"]
    assert partner["lock_competition"] == 0 and partner["other_errors"] == {}
    assert set(partner["ok_by_mutation"]) == {
        "createOrder",
        "createStandaloneInvoice",
        "createPayment",
    }
    for label in hot.TARGETS:
        r = row[label]
        assert r["ok"] > 0 and r["ok"] == r["requests"] and r["other_errors"] == {}
        assert r["cpu_ms_per_req"]["api"] > 0 and r["cpu_ms_per_req"]["loadgen"] > 0
    assert row["hot_ratio"] > 0
    check = out["partner_check"]
    assert check["folded"] == partner["ok"]  # one ledger row per write on the partner account
    assert check["folded_equals_writes"] and check["exact"]
    others = out["others_check"]
    assert others["accounts_checked"] == 21 and others["exact"]
    assert out["all_exact"]
    assert summarize_hot([out])[0].startswith("1 API process(es)")


async def test_hot_orders_only_beside_the_ceiling(database_url: str, redis_url: str) -> None:
    """createOrder only on a partner account, then the bare asyncpg endpoint (the ceiling)
    on another, in the same run: both take every order and both accounts end exact."""
    out = await hot.run(
        database_url, [2], 0.5, redis=redis_url, warmup=0.2, orders_only=True, progress=False
    )
    assert out["mode"] == "orders_only"
    (row,) = out["runs"]
    for label in ("graphql", "ceiling"):
        r = row[label]
        assert r["ok"] > 0 and r["ok"] == r["requests"] and r["other_errors"] == {}
        assert r["lock_competition"] == 0 and r["ok_by_mutation"] == {"createOrder": r["ok"]}
    assert row["graphql_to_ceiling_throughput"] > 0
    assert out["partner_check"]["folded_equals_writes"] and out["partner_check"]["exact"]
    assert out["others_check"] == {**out["others_check"], "accounts_checked": 1, "exact": True}


def test_hot_plot_draws_throughput_against_n(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the bench extra
    window = {"throughput": 100.0}
    run = {
        "mode": "mix",
        "config": {"api_workers": 1, "seconds_per_window": 1.0, "spread_accounts": 1000},
        "runs": [{"clients": n, **{t: window for t in hot.TARGETS}} for n in (8, 32, 128)],
    }
    png = hot_plot([run, run], tmp_path / "results" / "hot.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


async def test_framework_quick_serves_both_paths(database_url: str, redis_url: str) -> None:
    out = await framework.run(database_url, 4, 1.0, redis=redis_url)
    for path in ("bare", "graphql"):
        assert out[path]["ok"] > 0 and out[path]["errors"] == {}
    assert out["ratio_graphql_to_bare"] > 0


async def test_freshness_quick_every_write_reaches_the_metrics(
    database_url: str, redis_url: str
) -> None:
    """Sustained partner writes with a 1 s interval: the worker's periodic refresh covers
    every write, its ticks report their cost, and the metrics end exact."""
    out = await freshness.run(
        database_url, seconds=3, interval=1, accounts=5, clients=2, redis=redis_url
    )
    assert out["writes_ok"] > 0
    assert out["lock_competition"] == 0 and out["other_errors"] == {}
    assert out["writes_not_covered_by_a_refresh"] == 0
    assert 0 < out["staleness_s"]["p99"] <= out["staleness_s"]["max"] < 10
    assert out["refresh_ticks"] >= 1
    assert out["refresh"]["changes_folded"] == out["writes_ok"]
    assert out["metrics_exact_after_last_refresh"]

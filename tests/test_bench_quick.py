"""Keeps the benchmark scripts working: the cheapest pieces at tiny size, correctness only."""

from __future__ import annotations

from bench import raw, refresh


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

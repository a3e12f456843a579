"""bench/asof.py at a tiny size, for correctness only (no timing): every write is covered by
a later metricsCurrentAsOf, liveMetrics answers every pending change, and a quiet pass
leaves no account behind."""

from __future__ import annotations

from decimal import Decimal

from bench import asof


async def test_staleness_quick_covers_every_write(database_url: str, redis_url: str) -> None:
    out = await asof.staleness(database_url, redis_url, clients=2, seconds=3)
    assert out["writes_ok"] > 0
    assert out["lock_competition"] == 0 and out["other_errors"] == {}
    assert out["writes_not_covered"] == 0
    assert 0 <= out["staleness_s"]["p50"] <= out["staleness_s"]["p99"] <= out["staleness_s"]["max"]
    # A value is read after it is current: the read-based figure is never the smaller.
    assert out["staleness_as_read_s"]["max"] >= out["staleness_s"]["max"]


async def test_live_metrics_quick_answers_every_pending_change(
    database_url: str, redis_url: str
) -> None:
    out = await asof.live_metrics(database_url, redis_url, 0.5, sizes=(300, 3))
    for size in (300, 3):
        run = out[str(size)]
        assert run["graphql"]["errors"] == {} and run["graphql"]["requests"] > 0
        assert run["sql"]["pending"] == size
        # One 1.00 invoice per change.
        assert Decimal(run["graphql"]["live_balance"]) == Decimal(size)


async def test_quiet_pass_quick_leaves_no_account_behind(database_url: str) -> None:
    out = await asof.quiet_pass(database_url, 50, 2)
    for p in out["passes"]:
        assert p["accounts"] == 50 and p["accounts_behind"] == 0
        assert p["accounts_refreshed"] == 0

"""Bill runs through GraphQL and the real arq worker: consolidation, idempotent reruns,
post with deferred partner metrics, cancel with chargedThroughDate rollback."""

from __future__ import annotations

from datetime import UTC, date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing import metrics
from jobs import enqueue
from tests import rating_fixtures as rf
from tests.billrun_worker import arq_pool, drain
from tests.helpers import Gql

CREATE = """
mutation($input: CreateBillRunInput!) { createBillRun(input: $input) {
  billRun { billRunNumber status targetDate invoiceDate autoPost accountsTotal accountsProcessed
            invoicesGenerated errors { accountNumber code message } }
  errors { __typename code field } } }"""

RUN = """
query($n: String!) { billRun(billRunNumber: $n) { billRunNumber status accountsTotal
  accountsProcessed
  invoicesGenerated errors { accountNumber code message } } }"""

POST = """
mutation($n: String!) { postBillRun(input: { billRunNumber: $n }) {
  billRun { status invoicesGenerated } errors { __typename code field } } }"""

CANCEL = """
mutation($n: String!) { cancelBillRun(input: { billRunNumber: $n }) {
  billRun { status } errors { __typename code field } } }"""

D = Decimal
MAR1 = date(2026, 3, 1)


@pytest.fixture
async def redis(redis_url: str) -> Any:
    pool = await arq_pool(redis_url)
    await pool.flushdb()  # this suite's own Redis database: no jobs of earlier runs
    yield pool
    await pool.aclose()


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any, redis: Any) -> Gql:
    return Gql(sessionmaker, tenant.id, redis=redis)


async def reseller_world(sessionmaker: Any, t: int) -> dict[str, Any]:
    """A partner reseller invoice owner of 3 owners' USD subscriptions (one invoiced
    separately) and of one EUR subscription; plus an unrelated ordinary account."""
    async with sessionmaker.begin() as s:
        reseller = await rf.account(s, t, bcd=1, partner=True, batch="Resellers")
        owners = [await rf.account(s, t, bcd=1, partner=True) for _ in range(3)]
        other = await rf.account(s, t, bcd=1)
        subs = []
        for o in owners:
            subs.append(
                await rf.subscription(
                    s,
                    t,
                    o["id"],
                    reseller["id"],
                    start=date(2026, 2, 1),
                    charges=[{"name": "Seat", "price": "10"}],
                )
            )
        subs.append(
            await rf.subscription(
                s,
                t,
                owners[0]["id"],
                reseller["id"],
                start=date(2026, 2, 15),
                separately=True,
                charges=[{"name": "Own", "price": "28"}],
            )
        )
        subs.append(
            await rf.subscription(
                s,
                t,
                owners[1]["id"],
                reseller["id"],
                start=date(2026, 3, 1),
                currency="EUR",
                charges=[{"name": "Euro", "price": "5"}],
            )
        )
        await rf.subscription(
            s, t, other["id"], start=date(2026, 3, 1), charges=[{"name": "Other", "price": "7"}]
        )
    return {"reseller": reseller, "owners": owners, "other": other, "subs": subs}


async def invoices_of(sessionmaker: Any, account_id: int) -> list[tuple[Any, ...]]:
    async with sessionmaker() as s:
        res = await s.execute(
            text(
                "SELECT i.currency, i.status, i.amount, i.source, "
                "i.subscription_id IS NOT NULL, count(ii.id) "
                "FROM invoice i LEFT JOIN invoice_item ii ON ii.invoice_id = "
                "i.id WHERE i.account_id = :a "
                "GROUP BY i.id ORDER BY i.id"
            ),
            {"a": account_id},
        )
        return [tuple(r) for r in res]


async def test_consolidated_run_rerun_post_and_partner_metrics(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str, redis_url: str
) -> None:
    w = await reseller_world(sessionmaker, tenant.id)
    reseller = w["reseller"]
    data = await gql(
        CREATE, input={"targetDate": "2026-03-01", "accountNumbers": [reseller["account_number"]]}
    )
    number = data["createBillRun"]["billRun"]["billRunNumber"]
    assert data["createBillRun"] == {
        "billRun": {
            "billRunNumber": number,
            "status": "PENDING",
            "targetDate": "2026-03-01",
            "invoiceDate": "2026-03-01",
            "autoPost": False,
            "accountsTotal": 1,
            "accountsProcessed": 0,
            "invoicesGenerated": 0,
            "errors": [],
        },
        "errors": [],
    }
    await drain(database_url, redis_url)
    assert (await gql(RUN, n=number))["billRun"] == {
        "billRunNumber": number,
        "status": "COMPLETED",
        "accountsTotal": 1,
        "accountsProcessed": 1,
        "invoicesGenerated": 3,
        "errors": [],
    }
    # One consolidated USD invoice (3 owners x Feb + Mar), one for the separate subscription
    # (Feb 15-28 = 14/28 of 28, then March), one EUR invoice.
    assert await invoices_of(sessionmaker, reseller["id"]) == [
        ("USD", "DRAFT", D("60.00"), "BILL_RUN", False, 6),
        ("USD", "DRAFT", D("42.00"), "BILL_RUN", True, 2),
        ("EUR", "DRAFT", D("5.00"), "BILL_RUN", False, 1),
    ]
    assert await invoices_of(sessionmaker, w["other"]["id"]) == []  # not selected

    # A second run over the same dates bills nothing.
    again = (await gql(CREATE, input={"targetDate": "2026-03-01", "batch": "Resellers"}))[
        "createBillRun"
    ]
    await drain(database_url, redis_url)
    assert (await gql(RUN, n=again["billRun"]["billRunNumber"]))["billRun"][
        "invoicesGenerated"
    ] == 0
    assert len(await invoices_of(sessionmaker, reseller["id"])) == 3

    # Posting reaches the partner reseller's metrics through the ledger (deferred).
    assert (await gql(POST, n=number))["postBillRun"] == {
        "billRun": {"status": "POSTED", "invoicesGenerated": 3},
        "errors": [],
    }
    assert [r[1] for r in await invoices_of(sessionmaker, reseller["id"])] == ["POSTED"] * 3
    async with sessionmaker() as s:
        stored = (
            await s.execute(
                text("SELECT total_invoice_balance FROM account_metrics WHERE account_id = :a"),
                {"a": reseller["id"]},
            )
        ).scalar_one()
        ledger = (
            await s.execute(
                text("SELECT sum(d_invoice_balance) FROM metrics_change WHERE account_id = :a"),
                {"a": reseller["id"]},
            )
        ).scalar_one()
    assert stored == 0 and ledger == D("107.00")
    async with sessionmaker.begin() as s:
        await metrics.refresh_account(s, tenant.id, reseller["id"])
    async with sessionmaker() as s:
        truth = await metrics.recompute(s, reseller["id"])
        stored = (
            await s.execute(
                text(
                    "SELECT total_invoice_balance, last_invoice_date FROM account_metrics "
                    "WHERE account_id = :a"
                ),
                {"a": reseller["id"]},
            )
        ).one()
    assert (
        tuple(stored)
        == (truth.total_invoice_balance, truth.last_invoice_date)
        == (D("107.00"), MAR1)
    )
    # A posted run cannot be cancelled, nor posted twice into anything new.
    assert (await gql(CANCEL, n=number))["cancelBillRun"] == {
        "billRun": None,
        "errors": [{"__typename": "InvalidStateError", "code": "INVALID_STATE", "field": None}],
    }


async def test_cancel_rolls_charged_through_back_and_auto_post(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str, redis_url: str
) -> None:
    w = await reseller_world(sessionmaker, tenant.id)
    reseller = w["reseller"]
    first = (await gql(CREATE, input={"targetDate": "2026-03-01", "batch": "Resellers"}))[
        "createBillRun"
    ]
    await drain(database_url, redis_url)
    number = first["billRun"]["billRunNumber"]
    assert (await gql(CANCEL, n=number))["cancelBillRun"] == {
        "billRun": {"status": "CANCELED"},
        "errors": [],
    }
    assert [r[1] for r in await invoices_of(sessionmaker, reseller["id"])] == ["CANCELED"] * 3
    async with sessionmaker() as s:
        ctds = (
            (
                await s.execute(
                    text(
                        "SELECT charged_through_date FROM subscription_charge c JOIN "
                        "subscription s "
                        "ON s.id = c.subscription_id WHERE s.invoice_owner_account_id = :a"
                    ),
                    {"a": reseller["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert ctds == [None] * 5
    # Billed again from scratch, auto-posted at completion.
    second = (
        await gql(
            CREATE,
            input={
                "targetDate": "2026-03-01",
                "invoiceDate": "2026-03-02",
                "billCycleDay": 1,
                "autoPost": True,
            },
        )
    )["createBillRun"]
    assert second["billRun"]["accountsTotal"] == 2  # the reseller and the ordinary account
    await drain(database_url, redis_url)
    assert (await gql(RUN, n=second["billRun"]["billRunNumber"]))["billRun"]["status"] == "POSTED"
    assert [r[:3] for r in await invoices_of(sessionmaker, reseller["id"])][3:] == [
        ("USD", "POSTED", D("60.00")),
        ("USD", "POSTED", D("42.00")),
        ("EUR", "POSTED", D("5.00")),
    ]
    # The ordinary account's metrics move at once.
    async with sessionmaker() as s:
        other = (
            await s.execute(
                text(
                    "SELECT total_invoice_balance, last_invoice_date FROM account_metrics "
                    "WHERE account_id = :a"
                ),
                {"a": w["other"]["id"]},
            )
        ).one()
    assert tuple(other) == (D("7.00"), date(2026, 3, 2))


async def test_bad_input_writes_nothing(gql: Gql, sessionmaker: Any, tenant: Any) -> None:
    await reseller_world(sessionmaker, tenant.id)
    cases = [
        (
            {"targetDate": "2026-03-01", "accountNumbers": ["NOPE"]},
            {"__typename": "NotFoundError", "code": "NOT_FOUND", "field": ["accountNumbers", "0"]},
        ),
        (
            {"targetDate": "2026-03-01", "billCycleDay": 32},
            {"__typename": "ValidationError", "code": "VALIDATION", "field": ["billCycleDay"]},
        ),
        (
            {"targetDate": "2026-03-01", "accountNumbers": []},
            {"__typename": "ValidationError", "code": "VALIDATION", "field": ["accountNumbers"]},
        ),
    ]
    for given, error in cases:
        assert (await gql(CREATE, input=given))["createBillRun"] == {
            "billRun": None,
            "errors": [error],
        }
    for q, key in ((POST, "postBillRun"), (CANCEL, "cancelBillRun")):
        assert (await gql(q, n="BR404"))[key] == {
            "billRun": None,
            "errors": [
                {"__typename": "NotFoundError", "code": "NOT_FOUND", "field": ["billRunNumber"]}
            ],
        }
    async with sessionmaker() as s:
        n = (
            await s.execute(
                text("SELECT count(*) FROM bill_run WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalar_one()
    assert n == 0
    assert (await gql(RUN, n="BR404"))["billRun"] is None


async def test_post_before_completion_is_invalid_state(
    gql: Gql, sessionmaker: Any, tenant: Any
) -> None:
    await reseller_world(sessionmaker, tenant.id)
    run = (await gql(CREATE, input={"targetDate": "2026-03-01"}))["createBillRun"]["billRun"]
    assert run["status"] == "PENDING" and run["accountsTotal"] == 2
    for q, key in ((POST, "postBillRun"), (CANCEL, "cancelBillRun")):
        assert (await gql(q, n=run["billRunNumber"]))[key] == {
            "billRun": None,
            "errors": [{"__typename": "InvalidStateError", "code": "INVALID_STATE", "field": None}],
        }


async def test_failed_account_is_reported_and_the_run_goes_on(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str, redis_url: str
) -> None:
    t = tenant.id
    async with sessionmaker.begin() as s:
        good = await rf.account(s, t, batch="B")
        bad = await rf.account(s, t, batch="B")
        await rf.subscription(s, t, good["id"], start=MAR1, charges=[{"price": "10"}])
        sub = await rf.subscription(s, t, bad["id"], start=MAR1, charges=[{"price": "10"}])
        # A period the rating does not know: the account fails, nothing of it is written.
        await s.execute(
            text(
                "UPDATE subscription_charge SET billing_period = 'FORTNIGHT' "
                "WHERE subscription_id = :s"
            ),
            {"s": sub["id"]},
        )
    run = (await gql(CREATE, input={"targetDate": "2026-03-01", "batch": "B"}))["createBillRun"]
    await drain(database_url, redis_url)
    number = run["billRun"]["billRunNumber"]
    assert (await gql(RUN, n=number))["billRun"] == {
        "billRunNumber": number,
        "status": "COMPLETED",
        "accountsTotal": 2,
        "accountsProcessed": 2,
        "invoicesGenerated": 1,
        "errors": [
            {
                "accountNumber": bad["account_number"],
                "code": "INTERNAL",
                "message": "Internal error while billing",
            }
        ],
    }
    assert len(await invoices_of(sessionmaker, good["id"])) == 1
    assert await invoices_of(sessionmaker, bad["id"]) == []
    # A run whose every account fails ends in ERROR.
    only_bad = {"targetDate": "2026-03-01", "accountNumbers": [bad["account_number"]]}
    run = (await gql(CREATE, input=only_bad))["createBillRun"]
    await drain(database_url, redis_url)
    assert (await gql(RUN, n=run["billRun"]["billRunNumber"]))["billRun"]["status"] == "ERROR"


async def test_idempotent_create_and_a_run_with_nothing_to_bill(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str, redis_url: str
) -> None:
    async with sessionmaker.begin() as s:
        lonely = await rf.account(s, tenant.id)  # invoice owner of nothing
    given = {"targetDate": "2026-03-01", "accountNumbers": [lonely["account_number"]]}
    first = await gql(CREATE, input={**given, "idempotencyKey": "k1"})
    again = await gql(CREATE, input={**given, "idempotencyKey": "k1"})
    assert first == again and first["createBillRun"]["billRun"]["accountsTotal"] == 0
    reused = await gql(CREATE, input={**given, "autoPost": True, "idempotencyKey": "k1"})
    assert reused["createBillRun"] == {
        "billRun": None,
        "errors": [
            {
                "__typename": "IdempotencyKeyReusedError",
                "code": "IDEMPOTENCY_KEY_REUSED",
                "field": ["idempotencyKey"],
            }
        ],
    }
    async with sessionmaker() as s:
        runs = (
            await s.execute(
                text("SELECT count(*) FROM bill_run WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalar_one()
    assert runs == 1
    await drain(database_url, redis_url)
    number = first["createBillRun"]["billRun"]["billRunNumber"]
    assert (await gql(RUN, n=number))["billRun"] == {
        "billRunNumber": number,
        "status": "COMPLETED",
        "accountsTotal": 0,
        "accountsProcessed": 0,
        "invoicesGenerated": 0,
        "errors": [],
    }


# ---------------------------------------------------------------------- post and cancel in chunks

STATE = """
query($n: String!) { billRun(billRunNumber: $n) { status posting postingStartedAt } }"""

POST_STATE = """
mutation($n: String!) { postBillRun(input: { billRunNumber: $n }) {
  billRun { status posting } errors { __typename code } } }"""

CANCEL_STATE = """
mutation($n: String!) { cancelBillRun(input: { billRunNumber: $n }) {
  billRun { status posting } errors { __typename code } } }"""


async def completed_run(
    gql: Gql,
    sessionmaker: Any,
    t: int,
    database_url: str,
    redis_url: str,
    n: int,
    auto_post: bool = False,
) -> tuple[str, int, list[dict[str, Any]]]:
    """A run over n fresh accounts of one 10.00 subscription each, drained by the worker:
    COMPLETED with n drafts (POSTED when ``auto_post``). Returns its number and id."""
    async with sessionmaker.begin() as s:
        accounts = [await rf.account(s, t, batch=f"chunks{t}") for _ in range(n)]
        for a in accounts:
            await rf.subscription(s, t, a["id"], start=MAR1, charges=[{"price": "10"}])
    run = (
        await gql(CREATE, input={"targetDate": "2026-03-01", "batch": f"chunks{t}",
                                 "autoPost": auto_post})
    )["createBillRun"]["billRun"]  # fmt: skip
    await drain(database_url, redis_url)
    async with sessionmaker() as s:
        run_id = (
            await s.execute(
                text("SELECT id FROM bill_run WHERE tenant_id = :t AND bill_run_number = :n"),
                {"t": t, "n": run["billRunNumber"]},
            )
        ).scalar_one()
    return run["billRunNumber"], run_id, accounts


async def observe(sessionmaker: Any, run_id: int) -> tuple[str, str | None, dict[str, int]]:
    """The committed run status, its marker and its invoices per status."""
    async with sessionmaker() as s:
        status, posting = (
            await s.execute(
                text("SELECT status, posting FROM bill_run WHERE id = :r"), {"r": run_id}
            )
        ).one()
        counts = (
            await s.execute(
                text("SELECT status, count(*) FROM invoice WHERE bill_run_id = :r GROUP BY status"),
                {"r": run_id},
            )
        ).all()
    return status, posting, {k: int(v) for k, v in counts}


async def charged_through(sessionmaker: Any, accounts: list[dict[str, Any]]) -> list[Any]:
    async with sessionmaker() as s:
        return list(
            (
                await s.execute(
                    text(
                        "SELECT c.charged_through_date FROM subscription_charge c "
                        "JOIN subscription s ON s.id = c.subscription_id "
                        "WHERE s.invoice_owner_account_id = ANY(:a) ORDER BY c.id"
                    ),
                    {"a": [a["id"] for a in accounts]},
                )
            ).scalars()
        )


async def test_posted_only_once_no_draft_is_left_and_an_interrupted_post_resumes(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing import billruns
    from billing.errors import LockCompetition

    number, run_id, accounts = await completed_run(
        gql, sessionmaker, tenant.id, database_url, redis_url, 5
    )
    assert await observe(sessionmaker, run_id) == ("COMPLETED", None, {"DRAFT": 5})
    monkeypatch.setattr(billruns, "POST_CHUNK", 2)
    seen: list[tuple[str, str | None, dict[str, int]]] = []
    fail_on = {2}
    real_post = billruns.post_invoices

    async def post_invoices(s: Any, tenant_id: int, ids: list[int]) -> int:
        # What every other client can read at the start of each chunk.
        seen.append(await observe(sessionmaker, run_id))
        if len(seen) in fail_on:
            raise LockCompetition("busy")  # the post stops between two chunks
        return await real_post(s, tenant_id, ids)

    monkeypatch.setattr(billruns, "post_invoices", post_invoices)
    first = (await gql(POST_STATE, n=number))["postBillRun"]
    assert first == {
        "billRun": {"status": "COMPLETED", "posting": "POST"},
        "errors": [{"__typename": "LockCompetitionError", "code": "LOCK_COMPETITION"}],
    }
    assert await observe(sessionmaker, run_id) == (
        "COMPLETED", "POST", {"POSTED": 2, "DRAFT": 3}
    )  # fmt: skip
    state = (await gql(STATE, n=number))["billRun"]
    assert state["status"] == "COMPLETED" and state["posting"] == "POST"
    assert state["postingStartedAt"] is not None

    # A post under way cannot turn into a cancel: nothing is written.
    before = await charged_through(sessionmaker, accounts)
    assert (await gql(CANCEL_STATE, n=number))["cancelBillRun"] == {
        "billRun": None,
        "errors": [{"__typename": "InvalidStateError", "code": "INVALID_STATE"}],
    }
    assert await observe(sessionmaker, run_id) == (
        "COMPLETED", "POST", {"POSTED": 2, "DRAFT": 3}
    )  # fmt: skip
    assert await charged_through(sessionmaker, accounts) == before

    # Repeating postBillRun finishes it; POSTED arrives with the last draft.
    fail_on.clear()
    assert (await gql(POST_STATE, n=number))["postBillRun"] == {
        "billRun": {"status": "POSTED", "posting": None},
        "errors": [],
    }
    final = await observe(sessionmaker, run_id)
    assert final == ("POSTED", None, {"POSTED": 5})
    seen.append(final)
    assert [s[2].get("DRAFT", 0) for s in seen] == [5, 3, 3, 1, 0]
    for status, posting, counts in seen:
        assert status != "POSTED" or (posting is None and "DRAFT" not in counts)
        assert status == "POSTED" or posting == "POST"
    assert (await gql(STATE, n=number))["billRun"] == {
        "status": "POSTED", "posting": None, "postingStartedAt": None
    }  # fmt: skip
    # The posted invoices reached the (ordinary) accounts' metrics with the commit.
    async with sessionmaker() as s:
        balances = (
            (
                await s.execute(
                    text(
                        "SELECT total_invoice_balance FROM account_metrics "
                        "WHERE account_id = ANY(:a)"
                    ),
                    {"a": [a["id"] for a in accounts]},
                )
            )
            .scalars()
            .all()
        )
    assert balances == [D("10.00")] * 5
    # Posting a POSTED run again changes nothing; cancelling it is INVALID_STATE.
    assert (await gql(POST_STATE, n=number))["postBillRun"]["billRun"] == {
        "status": "POSTED", "posting": None
    }  # fmt: skip
    assert (await gql(CANCEL_STATE, n=number))["cancelBillRun"]["errors"][0]["code"] == (
        "INVALID_STATE"
    )


async def test_the_chunk_that_takes_the_last_drafts_moves_the_status(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing import billruns

    number, run_id, _ = await completed_run(
        gql, sessionmaker, tenant.id, database_url, redis_url, 4
    )
    monkeypatch.setattr(billruns, "POST_CHUNK", 2)
    chunks: list[int] = []
    real_post = billruns.post_invoices

    async def post_invoices(s: Any, tenant_id: int, ids: list[int]) -> int:
        chunks.append(len(ids))
        return await real_post(s, tenant_id, ids)

    monkeypatch.setattr(billruns, "post_invoices", post_invoices)
    assert (await gql(POST_STATE, n=number))["postBillRun"]["billRun"]["status"] == "POSTED"
    assert chunks == [2, 2]  # no empty transaction after the last drafts
    assert await observe(sessionmaker, run_id) == ("POSTED", None, {"POSTED": 4})


async def test_canceled_only_once_no_draft_is_left_and_a_cancel_excludes_a_post(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing import billruns
    from billing.errors import LockCompetition

    number, run_id, accounts = await completed_run(
        gql, sessionmaker, tenant.id, database_url, redis_url, 4
    )
    billed = await charged_through(sessionmaker, accounts)
    assert billed == [date(2026, 4, 1)] * 4
    monkeypatch.setattr(billruns, "CANCEL_CHUNK", 1)
    calls: list[str] = []
    real_cancel = billruns.cancel_invoice

    async def cancel_invoice(s: Any, tenant_id: int, invoice_number: str) -> Any:
        calls.append(invoice_number)
        if len(calls) == 3:
            raise LockCompetition("busy")
        return await real_cancel(s, tenant_id, invoice_number)

    monkeypatch.setattr(billruns, "cancel_invoice", cancel_invoice)
    assert (await gql(CANCEL_STATE, n=number))["cancelBillRun"] == {
        "billRun": {"status": "COMPLETED", "posting": "CANCEL"},
        "errors": [{"__typename": "LockCompetitionError", "code": "LOCK_COMPETITION"}],
    }
    assert await observe(sessionmaker, run_id) == (
        "COMPLETED", "CANCEL", {"CANCELED": 2, "DRAFT": 2}
    )  # fmt: skip
    # A cancel under way cannot turn into a post: nothing is written.
    assert (await gql(POST_STATE, n=number))["postBillRun"] == {
        "billRun": None,
        "errors": [{"__typename": "InvalidStateError", "code": "INVALID_STATE"}],
    }
    assert await observe(sessionmaker, run_id) == (
        "COMPLETED", "CANCEL", {"CANCELED": 2, "DRAFT": 2}
    )  # fmt: skip
    assert (await gql(CANCEL_STATE, n=number))["cancelBillRun"] == {
        "billRun": {"status": "CANCELED", "posting": None},
        "errors": [],
    }
    assert await observe(sessionmaker, run_id) == ("CANCELED", None, {"CANCELED": 4})
    assert await charged_through(sessionmaker, accounts) == [None] * 4
    assert (await gql(POST_STATE, n=number))["postBillRun"]["errors"][0]["code"] == (
        "INVALID_STATE"
    )


async def test_a_post_or_cancel_cut_short_is_finished_by_a_restarted_worker(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing import billruns

    monkeypatch.setattr(billruns, "POST_CHUNK", 2)
    monkeypatch.setattr(billruns, "CANCEL_CHUNK", 2)
    real_post = billruns.post_invoices
    real_cancel = billruns.cancel_invoice
    calls: list[int] = []

    async def post_invoices(s: Any, tenant_id: int, ids: list[int]) -> int:
        calls.append(1)
        if len(calls) >= 2:
            raise RuntimeError("killed")  # the worker dies after the first chunk
        return await real_post(s, tenant_id, ids)

    async def cancel_invoice(s: Any, tenant_id: int, invoice_number: str) -> Any:
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("killed")  # the API process dies after the first chunk
        return await real_cancel(s, tenant_id, invoice_number)

    # An autoPost run whose post the worker did not finish stays COMPLETED, marked.
    monkeypatch.setattr(billruns, "post_invoices", post_invoices)
    _, auto_id, _ = await completed_run(
        gql, sessionmaker, tenant.id, database_url, redis_url, 3, auto_post=True
    )
    assert await observe(sessionmaker, auto_id) == (
        "COMPLETED", "POST", {"POSTED": 2, "DRAFT": 1}
    )  # fmt: skip
    # A cancel cut short between chunks.
    calls.clear()
    monkeypatch.setattr(billruns, "post_invoices", real_post)
    number, run_id, accounts = await completed_run(
        gql, sessionmaker, tenant.id, database_url, redis_url, 5
    )
    monkeypatch.setattr(billruns, "cancel_invoice", cancel_invoice)
    with pytest.raises(AssertionError, match="Unexpected error"):
        await gql(CANCEL_STATE, n=number)
    assert await observe(sessionmaker, run_id) == (
        "COMPLETED", "CANCEL", {"CANCELED": 2, "DRAFT": 3}
    )  # fmt: skip
    monkeypatch.setattr(billruns, "cancel_invoice", real_cancel)
    # The worker's start-up picks both up and finishes them.
    await drain(database_url, redis_url)
    assert await observe(sessionmaker, auto_id) == ("POSTED", None, {"POSTED": 3})
    assert await observe(sessionmaker, run_id) == ("CANCELED", None, {"CANCELED": 5})
    assert await charged_through(sessionmaker, accounts) == [None] * 5
    async with sessionmaker() as s:
        assert auto_id not in [r for _, r in await billruns.runs_to_resume(s)]


# --------------------------------------------------------------------------- transient failures


class PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


order: list[int] = []  # the accounts failing_billing was asked to bill, in order


def failing_billing(
    monkeypatch: pytest.MonkeyPatch, failures: dict[int, list[Exception]]
) -> dict[int, int]:
    """Make the billing of each listed invoice owner raise its exceptions, one per try, in
    order (then bill it for real); returns how often each account was billed or tried.
    Only a claimed (PENDING) account gets this far in billruns.bill_account."""
    from billing import billruns
    from jobs import tasks

    real = billruns.bill_subscriptions
    tries: dict[int, int] = {}
    order.clear()

    async def bill_subscriptions(s: Any, spec: Any, *, invoice_owner_id: int) -> Any:
        tries[invoice_owner_id] = tries.get(invoice_owner_id, 0) + 1
        order.append(invoice_owner_id)
        left = failures.get(invoice_owner_id)
        if left:
            raise left.pop(0)
        return await real(s, spec, invoice_owner_id=invoice_owner_id)

    monkeypatch.setattr(billruns, "bill_subscriptions", bill_subscriptions)
    monkeypatch.setattr(tasks, "ACCOUNT_RETRY_PAUSE", 0.01)
    monkeypatch.setattr(tasks, "BATCH_RETRY_DEFER", 0)
    return tries


async def create_undriven(sessionmaker: Any, t: int) -> str:
    """A run over batch T that no job drives yet: the worker's start-up drives it, once."""
    data = await Gql(sessionmaker, t)(CREATE, input={"targetDate": "2026-03-01", "batch": "T"})
    return data["createBillRun"]["billRun"]["billRunNumber"]  # type: ignore[no-any-return]


async def accounts_of_batch(sessionmaker: Any, t: int, n: int) -> list[dict[str, Any]]:
    async with sessionmaker.begin() as s:
        accounts = [await rf.account(s, t, batch="T") for _ in range(n)]
        for a in accounts:
            await rf.subscription(s, t, a["id"], start=MAR1, charges=[{"price": "10"}])
    return sorted(accounts, key=lambda a: a["id"])


async def account_rows(sessionmaker: Any, number: str, t: int) -> dict[int, tuple[Any, ...]]:
    async with sessionmaker() as s:
        rows = await s.execute(
            text(
                "SELECT x.account_id, x.status, x.invoices, x.error_code FROM bill_run_account x "
                "JOIN bill_run r ON r.id = x.bill_run_id "
                "WHERE r.tenant_id = :t AND r.bill_run_number = :n"
            ),
            {"t": t, "n": number},
        )
        return {r[0]: tuple(r[1:]) for r in rows}


async def test_an_account_that_fails_transiently_is_billed_on_a_later_try(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy.exc import DBAPIError

    from billing.errors import LockCompetition

    a, b, c = await accounts_of_batch(sessionmaker, tenant.id, 3)
    deadlock = DBAPIError("UPDATE ...", {}, PgError("40P01"))
    tries = failing_billing(
        monkeypatch,
        {
            a["id"]: [LockCompetition("busy")],  # once: the second try in the batch bills it
            # Four times: the batch job's first run gives up on it after three tries and
            # leaves it PENDING; the job's second run bills it.
            c["id"]: [deadlock, LockCompetition("busy"), deadlock, deadlock],
        },
    )
    number = await create_undriven(sessionmaker, tenant.id)
    await drain(database_url, redis_url)
    assert (await gql(RUN, n=number))["billRun"] == {
        "billRunNumber": number,
        "status": "COMPLETED",
        "accountsTotal": 3,
        "accountsProcessed": 3,
        "invoicesGenerated": 3,
        "errors": [],
    }
    assert await account_rows(sessionmaker, number, tenant.id) == {
        x["id"]: ("DONE", 1, None) for x in (a, b, c)
    }
    assert tries == {a["id"]: 2, b["id"]: 1, c["id"]: 5}
    for x in (a, b, c):
        assert [r[:3] for r in await invoices_of(sessionmaker, x["id"])] == [
            ("USD", "DRAFT", D("10.00"))
        ]


async def test_a_lasting_failure_is_an_error_and_the_others_are_billed(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing.errors import LockCompetition, ValidationFailed
    from jobs import tasks

    a, b, c, d = await accounts_of_batch(sessionmaker, tenant.id, 4)
    tries_each = tasks.ACCOUNT_TRIES * tasks.BATCH_TRIES
    tries = failing_billing(
        monkeypatch,
        {
            b["id"]: [LockCompetition("busy") for _ in range(tries_each + 1)],  # never through
            c["id"]: [ValidationFailed("Charge has no price")],  # not worth a second try
        },
    )
    number = await create_undriven(sessionmaker, tenant.id)
    await drain(database_url, redis_url)
    out = (await gql(RUN, n=number))["billRun"]
    assert (out["status"], out["accountsProcessed"], out["invoicesGenerated"]) == (
        "COMPLETED",
        4,
        2,
    )
    assert sorted(out["errors"], key=lambda e: e["code"]) == [
        {
            "accountNumber": b["account_number"],
            "code": "LOCK_COMPETITION",
            "message": "busy",
        },
        {
            "accountNumber": c["account_number"],
            "code": "VALIDATION",
            "message": "Charge has no price",
        },
    ]
    assert await account_rows(sessionmaker, number, tenant.id) == {
        a["id"]: ("DONE", 1, None),
        b["id"]: ("ERROR", 0, "LOCK_COMPETITION"),
        c["id"]: ("ERROR", 0, "VALIDATION"),
        d["id"]: ("DONE", 1, None),
    }
    assert tries == {a["id"]: 1, b["id"]: tries_each, c["id"]: 1, d["id"]: 1}
    assert await invoices_of(sessionmaker, b["id"]) == []
    assert await invoices_of(sessionmaker, c["id"]) == []


async def test_when_accounts_keep_failing_in_a_row_the_rest_waits_for_the_next_run(
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy.exc import DBAPIError

    from jobs import tasks

    accounts = await accounts_of_batch(sessionmaker, tenant.id, 4)
    ids = [x["id"] for x in accounts]
    lost = [DBAPIError("SELECT 1", {}, PgError("08006")) for _ in range(tasks.ACCOUNT_TRIES)]
    failing_billing(monkeypatch, {i: list(lost) for i in ids[:3]})
    number = await create_undriven(sessionmaker, tenant.id)
    await drain(database_url, redis_url)
    # The first run of the batch gives up on three accounts in a row (the database seems
    # gone) and leaves the fourth untried; the second run bills all four.
    n = tasks.ACCOUNT_TRIES
    assert order == [ids[0]] * n + [ids[1]] * n + [ids[2]] * n + ids
    assert await account_rows(sessionmaker, number, tenant.id) == {
        i: ("DONE", 1, None) for i in ids
    }


async def test_first_drive_job_id_is_unique_per_run_even_when_ids_start_over(
    redis_url: str,
) -> None:
    """A database created afresh numbers its tenants and runs from 1 again; arq keeps a
    finished job's id for an hour and ignores an enqueue under it. The first drive's id
    carries the run's creation time, so the new run is queued; a repeat of the same run's
    enqueue is still a no-op."""
    from datetime import datetime

    pool = await arq_pool(redis_url)
    try:
        earlier = datetime(2026, 11, 24, 9, 0, 0, 123456, tzinfo=UTC)
        old_id = enqueue.drive_job_id(1, 1, enqueue.first_generation(earlier))
        await pool.set(f"arq:result:{old_id}", b"kept result of a run of an earlier database")
        now = datetime(2026, 11, 24, 10, 0, 0, 654321, tzinfo=UTC)
        await enqueue.enqueue_bill_run(pool, 1, 1, enqueue.first_generation(now))
        await enqueue.enqueue_bill_run(pool, 1, 1, enqueue.first_generation(now))  # a repeat
        queued = [j.job_id for j in await pool.queued_jobs()]
        assert queued == [enqueue.drive_job_id(1, 1, "c1795514400654321")]
        assert old_id not in queued
    finally:
        await pool.aclose()


async def test_an_auto_post_that_fails_transiently_is_retried_by_its_job(
    gql: Gql,
    sessionmaker: Any,
    tenant: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lock competition while a job auto-posts a run's drafts: the job asks arq to run it
    again (Retry) instead of failing, and its next run finishes the post."""
    from arq import Retry

    from billing import billruns
    from billing.errors import LockCompetition
    from jobs import tasks

    _, run_id, _ = await completed_run(gql, sessionmaker, tenant.id, database_url, redis_url, 3)
    async with sessionmaker.begin() as s:  # as if created with autoPost
        await s.execute(text("UPDATE bill_run SET auto_post = true WHERE id = :r"), {"r": run_id})
    monkeypatch.setattr(billruns, "POST_CHUNK", 2)
    real_post = billruns.post_invoices
    calls: list[int] = []

    async def post_invoices(s: Any, tenant_id: int, ids: list[int]) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise LockCompetition("Account is locked by another operation")
        return await real_post(s, tenant_id, ids)

    monkeypatch.setattr(billruns, "post_invoices", post_invoices)
    ctx = {"sessionmaker": sessionmaker, "redis": None, "job_try": 1}
    with pytest.raises(Retry):
        await tasks._finish_bill_run(ctx, tenant.id, run_id)
    assert await observe(sessionmaker, run_id) == ("COMPLETED", "POST", {"POSTED": 2, "DRAFT": 1})
    await tasks._finish_bill_run({**ctx, "job_try": 2}, tenant.id, run_id)
    assert await observe(sessionmaker, run_id) == ("POSTED", None, {"POSTED": 3})
    # a failure that is not transient is not retried
    calls.clear()
    _, run2, _ = await completed_run(gql, sessionmaker, tenant.id, database_url, redis_url, 3)
    async with sessionmaker.begin() as s:
        await s.execute(text("UPDATE bill_run SET auto_post = true WHERE id = :r"), {"r": run2})

    async def broken(s: Any, tenant_id: int, ids: list[int]) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(billruns, "post_invoices", broken)
    with pytest.raises(ValueError):
        await tasks._finish_bill_run(ctx, tenant.id, run2)

"""arq job functions. Every job is idempotent: arq may run any job twice."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

from billing import metrics
from jobs import events
from jobs.enqueue import REDIS_DOWN
from jobs.instruments import observe_refresh

log = logging.getLogger("partnerbill.jobs")


async def refresh_due_tenants(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron tick: refresh the partner accounts of every tenant whose interval has passed.

    Claiming a tenant is one UPDATE ... RETURNING, so two workers never take the same
    tenant in the same interval; each account is still claimed by locking its metrics
    row (FOR UPDATE SKIP LOCKED). The result (kept by arq) says what the tick did for
    each tenant and how long each refresh took."""
    engine = ctx["engine"]
    by_tenant: dict[int, dict[str, float]] = {}
    failed: dict[int, str] = {}
    for tenant_id in await metrics.claim_due_tenants(engine):
        t0 = time.perf_counter()
        try:
            report = await metrics.refresh_tenant(
                engine, tenant_id, on_refreshed=_announce_refresh(ctx, tenant_id)
            )
        except Exception as exc:
            # One tenant's failure never starves the others: log it, carry on with the
            # next; this tenant is claimed again after its interval.
            log.exception("tenant %s: refresh failed", tenant_id)
            failed[tenant_id] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        seconds = time.perf_counter() - t0
        observe_refresh(report, seconds)
        by_tenant[tenant_id] = {
            "accounts": report.accounts_refreshed,
            "skipped": report.accounts_skipped,
            "changes": report.changes_folded,
            "set_aside": len(report.set_aside_ids),
            "seconds": round(seconds, 4),
        }
        if report.accounts_refreshed or report.accounts_skipped or report.set_aside_ids:
            log.info(
                "tenant %s: refreshed %s accounts (%s changes), skipped %s, set aside %s",
                tenant_id, report.accounts_refreshed, report.changes_folded,
                report.accounts_skipped, len(report.set_aside_ids),
            )  # fmt: skip
        if report.set_aside_ids:
            log.warning(
                "tenant %s: accounts %s set aside, their metrics could not be folded "
                "(see metrics_refresh_failure); retried later",
                tenant_id, report.set_aside_ids,
            )  # fmt: skip
    done: dict[str, Any] = {
        k: sum(t[k] for t in by_tenant.values())
        for k in ("accounts", "skipped", "changes", "set_aside")
    }
    done["tenants"] = len(by_tenant)
    done["failed_tenants"] = failed
    done["seconds"] = round(sum(t["seconds"] for t in by_tenant.values()), 4)
    done["by_tenant"] = by_tenant
    return done


async def refresh_tenant_metrics(ctx: dict[str, Any], tenant_id: int) -> dict[str, int]:
    """Refresh one tenant's changed partner accounts now."""
    t0 = time.perf_counter()
    report = await metrics.refresh_tenant(
        ctx["engine"], tenant_id, on_refreshed=_announce_refresh(ctx, tenant_id)
    )
    observe_refresh(report, time.perf_counter() - t0)
    return {
        "accounts": report.accounts_refreshed,
        "skipped": report.accounts_skipped,
        "changes": report.changes_folded,
        **({"set_aside": len(report.set_aside_ids)} if report.set_aside_ids else {}),
    }


def _announce_refresh(ctx: dict[str, Any], tenant_id: int) -> metrics.OnRefreshed:
    """Publishes each committed refresh batch to the tenant's accountMetricsUpdated subscribers."""

    async def announce(account_ids: list[int]) -> None:
        await events.publish_metrics(ctx.get("redis"), tenant_id, account_ids, metrics.REFRESH)

    return announce


FUNCTIONS: list[Any] = [refresh_tenant_metrics]


async def create_order(ctx: dict[str, Any], job_id: str) -> str:
    """Run an asynchronous order. Idempotent: the job row is locked for the run and a job
    that already COMPLETED or FAILED is left alone; the order and the COMPLETED status
    commit together."""
    from sqlalchemy.exc import DBAPIError

    from billing import orders
    from billing.dbutil import translate
    from billing.errors import BillingError
    from db.statuses import JobStatus

    sessionmaker = ctx["sessionmaker"]
    async with sessionmaker.begin() as s:
        row = await orders.claim_job_any_tenant(s, job_id)
        if row is None or row["status"] in (JobStatus.COMPLETED, JobStatus.FAILED):
            return row["status"] if row is not None else "MISSING"
        await orders.set_job(s, job_id, JobStatus.PROCESSING)
    try:
        async with sessionmaker() as s:
            try:
                async with s.begin():
                    row = await orders.claim_job_any_tenant(s, job_id)
                    if row is None or row["status"] in (JobStatus.COMPLETED, JobStatus.FAILED):
                        return row["status"] if row is not None else "MISSING"
                    order = orders.decode_order(row["input"])
                    order_id = await orders.create_order(s, row["tenant_id"], order)
                    made = await orders.get_order(s, row["tenant_id"], order_id=order_id)
                    assert made is not None
                    await orders.set_job(
                        s,
                        job_id,
                        JobStatus.COMPLETED,
                        result={"orderId": order_id, "orderNumber": made["order_number"]},
                    )
            except DBAPIError as exc:
                mapped = translate(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            await events.publish_committed(ctx.get("redis"), s)
        return JobStatus.COMPLETED
    except BillingError as exc:
        if exc.retryable and ctx.get("job_try", 1) < 5:
            from arq import Retry

            raise Retry(defer=ctx.get("job_try", 1)) from exc
        async with sessionmaker.begin() as s:
            await orders.set_job(
                s,
                job_id,
                JobStatus.FAILED,
                errors=[
                    {
                        "code": exc.code,
                        "message": exc.message,
                        "field": exc.field,
                        "retryable": exc.retryable,
                    }
                ],
            )
        return JobStatus.FAILED


FUNCTIONS.append(create_order)


# --------------------------------------------------------------------------- bill runs

PROGRESS_EVERY = 1.0  # seconds between billRunProgress announcements within one batch
ACCOUNT_TRIES = 3  # tries of one account within a batch job, for a transient failure
ACCOUNT_RETRY_PAUSE = 0.2  # seconds (and up to twice that) before an account's 2nd try; doubles
BATCH_TRIES = 3  # runs of a batch job while accounts fail transiently (arq's max_tries is 5)
BATCH_RETRY_DEFER = 5.0  # seconds before a batch job's next run, times the runs so far
FINISH_TRIES = (
    5  # runs of a job whose post or cancel of the drafts fails transiently (arq's max_tries)
)
POSTPONE_REST_AFTER = 3  # accounts in a row left for the next run: leave the rest too


async def bill_run_drive(
    ctx: dict[str, Any], tenant_id: int, run_id: int, generation: str = "0"
) -> dict[str, Any]:
    """Move a run on: PENDING -> PROCESSING and hand its pending accounts to batch jobs;
    complete it when none is pending; auto-post a completed autoPost run."""
    from billing import billruns
    from jobs import enqueue

    async with ctx["sessionmaker"].begin() as s:
        run = await billruns.start_bill_run(s, run_id)
        processing = run["status"] == "PROCESSING"
        pending = await billruns.pending_accounts(s, run_id) if processing else []
    await events.publish_bill_run(ctx.get("redis"), tenant_id, run_id)
    if pending:
        try:
            batches = await enqueue.enqueue_bill_run_batches(
                ctx["redis"], tenant_id, run_id, generation, pending
            )
        except REDIS_DOWN as exc:
            # Run this drive again once Redis answers: batches already queued keep their
            # ids, so nothing is queued twice.
            from arq import Retry

            log.warning("bill run %s: cannot queue its batches (%r); retrying", run_id, exc)
            raise Retry(defer=BATCH_RETRY_DEFER) from exc
        return {"status": run["status"], "pending": len(pending), "batches": batches}
    await _finish_bill_run(ctx, tenant_id, run_id)
    return {"status": run["status"], "pending": 0, "batches": 0}


async def bill_run_batch(
    ctx: dict[str, Any], tenant_id: int, run_id: int, account_ids: list[int]
) -> dict[str, int]:
    """Bill a batch of a run's accounts, each in its own transaction (invoices + DONE
    together); DONE accounts and accounts another worker holds are skipped.

    An account that fails for a transient reason (``billing.dbutil.is_transient``: lock
    competition, deadlock, serialization failure, lost connection) is tried again after a
    short pause, up to ACCOUNT_TRIES times; if it still fails, it stays PENDING and the
    batch job is run again later (arq Retry; what is DONE or ERROR by then is skipped, so
    the rerun bills nothing twice), up to BATCH_TRIES runs. Only on the last run, or for
    a failure that is not transient, is the account marked ERROR, with its last error."""
    from billing import billruns

    done = skipped = failed = postponed = in_a_row = 0
    sm = ctx["sessionmaker"]
    job_try = int(ctx.get("job_try") or 1)
    last_run = job_try >= BATCH_TRIES
    told = time.monotonic()
    for account_id in account_ids:
        if time.monotonic() - told >= PROGRESS_EVERY:
            await events.publish_bill_run(ctx.get("redis"), tenant_id, run_id)
            told = time.monotonic()
        if in_a_row >= POSTPONE_REST_AFTER:
            postponed += 1  # the database is likely out of reach: leave the rest for later
            continue
        try:
            made = await _bill_one(sm, run_id, account_id)
        except Exception as exc:
            code, message, transient = _failure(exc)
            if transient and not last_run:
                log.warning(
                    "bill run %s: account %s failed (%s), left for the batch's next run",
                    run_id, account_id, code,
                )  # fmt: skip
                postponed += 1
                in_a_row += 1
                continue
            log.exception("bill run %s: account %s failed", run_id, account_id)
            async with sm.begin() as s:
                await billruns.mark_account_error(s, run_id, account_id, code, message)
            failed += 1
            in_a_row = 0
            continue
        in_a_row = 0
        if made is None:
            skipped += 1
        else:
            done += 1
    await events.publish_bill_run(ctx.get("redis"), tenant_id, run_id)
    if postponed:
        from arq import Retry

        log.info(
            "bill run %s: %s accounts left for the batch's run %s", run_id, postponed, job_try + 1
        )
        raise Retry(defer=BATCH_RETRY_DEFER * job_try)
    await _finish_bill_run(ctx, tenant_id, run_id)
    return {"done": done, "skipped": skipped, "failed": failed}


async def _bill_one(sessionmaker: Any, run_id: int, account_id: int) -> int | None:
    """``billruns.bill_account`` in its own transaction, tried again after a short pause
    (doubling, with jitter) while it fails for a transient reason, up to ACCOUNT_TRIES."""
    from billing import billruns
    from billing.dbutil import is_transient

    pause = ACCOUNT_RETRY_PAUSE
    for attempt in range(1, ACCOUNT_TRIES + 1):
        try:
            async with sessionmaker.begin() as s:
                return await billruns.bill_account(s, run_id, account_id)
        except Exception as exc:
            if attempt == ACCOUNT_TRIES or not is_transient(exc):
                raise
            delay = pause * (1 + random.random())
            log.info(
                "bill run %s: account %s failed (%s: %s), try %s in %.2fs",
                run_id, account_id, type(exc).__name__, exc, attempt + 1, delay,
            )  # fmt: skip
        await asyncio.sleep(delay)
        pause *= 2
    raise AssertionError("unreachable")


def _failure(exc: BaseException) -> tuple[str, str, bool]:
    """(code, message, transient) of an account's failure, for its bill_run_account row."""
    from sqlalchemy.exc import DBAPIError

    from billing.dbutil import is_transient, translate
    from billing.errors import BillingError

    transient = is_transient(exc)
    if isinstance(exc, DBAPIError):
        mapped = translate(exc)
        if isinstance(mapped, BillingError):
            exc = mapped
    if isinstance(exc, BillingError):
        return str(exc.code), exc.message, transient
    if transient:
        return "INTERNAL", "Temporary database failure while billing; tries used up", True
    return "INTERNAL", "Internal error while billing", False


async def _finish_bill_run(ctx: dict[str, Any], tenant_id: int, run_id: int) -> None:
    """Complete the run when no account is pending; then carry on a post or cancel under
    way (interrupted), or auto-post a completed autoPost run."""
    from billing import billruns
    from billing.dbutil import is_transient

    async with ctx["sessionmaker"].begin() as s:
        finished = await billruns.finish_if_done(s, run_id)
        run = await billruns.get_bill_run_by_id(s, run_id)
    if finished is not None:
        await events.publish_bill_run(ctx.get("redis"), tenant_id, run_id)
    number = run["bill_run_number"]
    try:
        if run["posting"] == "CANCEL":
            await cancel_bill_run(ctx["sessionmaker"], tenant_id, number, ctx.get("redis"))
        elif run["posting"] == "POST" or (run["auto_post"] and run["status"] == "COMPLETED"):
            await post_bill_run(ctx["sessionmaker"], tenant_id, number, ctx.get("redis"))
    except Exception as exc:
        # A transient failure while walking the drafts: run this job again (its accounts
        # are DONE and skipped; the post or cancel carries on from its marker).
        job_try = int(ctx.get("job_try", 1))
        if is_transient(exc) and job_try < FINISH_TRIES:
            from arq import Retry

            log.warning("bill run %s: %s while posting or canceling; retrying", number, exc)
            raise Retry(defer=BATCH_RETRY_DEFER * job_try) from exc
        raise


async def post_bill_run(sessionmaker: Any, tenant_id: int, number: str, redis: Any = None) -> None:
    """Mark the run as being posted, then post its drafts in short transactions; the last
    one makes it POSTED. A run a cancelBillRun took meanwhile is left to it."""
    from billing import billruns

    await _walk_drafts(
        sessionmaker, tenant_id, number, redis, billruns.begin_post, billruns.post_chunk
    )


async def cancel_bill_run(
    sessionmaker: Any, tenant_id: int, number: str, redis: Any = None
) -> None:
    """Finish a cancel under way (a cancelBillRun interrupted between its chunks)."""
    from billing import billruns

    await _walk_drafts(
        sessionmaker, tenant_id, number, redis, billruns.begin_cancel, billruns.cancel_chunk
    )


async def _walk_drafts(
    sessionmaker: Any, tenant_id: int, number: str, redis: Any, begin: Any, chunk: Any
) -> None:
    """``begin`` (which marks the run) then ``chunk`` until it reports the run done; each
    step is announced after its commit (the run's move, the posted accounts' metrics)."""
    from billing.errors import InvalidState

    try:
        async with sessionmaker.begin() as s:
            run = await begin(s, tenant_id, number)
    except InvalidState as exc:
        log.info("bill run %s: %s", number, exc.message)
        return
    await events.publish_bill_run(redis, tenant_id, run["id"])
    while True:
        async with sessionmaker.begin() as s:
            more = await chunk(s, tenant_id, run["id"])
        await events.publish_committed(redis, s)
        if not more:
            await events.publish_bill_run(redis, tenant_id, run["id"])
            return


async def resume_bill_runs(ctx: dict[str, Any]) -> int:
    """Worker start-up: re-drive every unfinished run under a generation of this start.

    A killed worker's jobs keep their ids (and stay "in progress") until arq's timeout, so
    the restarted worker enqueues fresh drive jobs; they bill only PENDING accounts, and
    accounts are claimed with FOR UPDATE (rechecked after the wait), so a run that another
    live worker is driving is not billed twice either."""
    import time

    from billing import billruns
    from jobs import enqueue

    async with ctx["sessionmaker"]() as s:
        runs = await billruns.runs_to_resume(s)
    generation = f"r{time.time_ns()}"
    for tenant_id, run_id in runs:
        await enqueue.enqueue_bill_run(ctx["redis"], tenant_id, run_id, generation)
    if runs:
        log.info("re-driving %s unfinished bill runs", len(runs))
    return len(runs)


FUNCTIONS.extend([bill_run_drive, bill_run_batch])


# --------------------------------------------------------------------------- stranded jobs


async def queue_unfinished_orders(ctx: dict[str, Any]) -> int:
    """Queue every asynchronous order not yet COMPLETED or FAILED under its own arq id: a
    no-op for one arq still holds (queued, running or kept), the start of one whose enqueue
    failed after its commit (Redis away) or that a Redis restart lost."""
    from billing import orders
    from jobs import enqueue

    async with ctx["sessionmaker"]() as s:
        rows = await orders.unfinished_jobs(s)
    for job_id, created_at in rows:
        await enqueue.enqueue_create_order(ctx["redis"], job_id, created_at)
    return len(rows)


async def queue_runs_not_started(ctx: dict[str, Any]) -> int:
    """Queue the first drive of every PENDING bill run (a no-op while arq holds it)."""
    from billing import billruns
    from jobs import enqueue

    async with ctx["sessionmaker"]() as s:
        runs = await billruns.runs_not_started(s)
    for tenant_id, run_id, created_at in runs:
        await enqueue.enqueue_bill_run(
            ctx["redis"], tenant_id, run_id, enqueue.first_generation(created_at)
        )
    return len(runs)


async def sweep_stranded_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: what committed is run even when its enqueue failed. An API process that could
    not reach Redis after committing an asynchronous order or a bill run answered that its
    start is delayed; this queues it under the same deterministic id, so a job that is
    queued after all is never queued twice."""
    return {
        "orders": await queue_unfinished_orders(ctx),
        "bill_runs": await queue_runs_not_started(ctx),
    }


async def recover_after_outage(ctx: dict[str, Any]) -> dict[str, int]:
    """After Redis was away (the worker's own calls failed): the sweep, and every
    unfinished bill run re-driven as at a worker start, because Redis may have come back
    without the jobs it held (a restart without persistence) or with jobs of this worker
    still marked running."""
    return {
        "orders": await queue_unfinished_orders(ctx),
        "bill_runs": await resume_bill_runs(ctx),
    }


# --------------------------------------------------------------------------- the event feed


def event_retention_days() -> int:
    """PARTNERBILL_EVENT_RETENTION_DAYS (30 by default): how long events are kept."""
    from billing.events import RETENTION_DAYS

    raw = os.environ.get("PARTNERBILL_EVENT_RETENTION_DAYS") or str(RETENTION_DAYS)
    return max(1, int(raw))


async def prune_events(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: delete events and webhook attempts older than the retention."""
    from billing.events import prune_events as prune

    async with ctx["sessionmaker"].begin() as s:
        return {"pruned": await prune(s, event_retention_days())}

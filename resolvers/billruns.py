"""Root fields for bill runs. The run is written in the request's transaction; the worker
is asked to drive it only after that commit (jobs.enqueue)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billing import billruns as br
from billing import events as ev
from billing.dbutil import translate
from billing.errors import BillingError
from jobs import enqueue
from resolvers.accounts import input_payload
from resolvers.base import announce, event_hub, idempotent, in_transaction, read
from resolvers.convert import gid
from resolvers.errors import to_graphql_error, to_user_error
from resolvers.queue import enqueue_committed
from schema.billruns import (
    BillRun,
    BillRunError,
    BillRunNumberInput,
    BillRunPayload,
    BillRunPosting,
    BillRunStatus,
    CreateBillRunInput,
)


async def bill_run_out(s: AsyncSession, row: Any) -> BillRun:
    """The run with its live progress (read from its account rows)."""
    p = await br.progress(s, row["id"])
    return BillRun(
        db_id=row["id"],
        id=gid("BillRun", row["id"]),
        bill_run_number=row["bill_run_number"],
        status=BillRunStatus(row["status"]),
        target_date=row["target_date"],
        invoice_date=row["invoice_date"],
        auto_post=row["auto_post"],
        accounts_total=row["accounts_total"],
        accounts_processed=p.accounts_processed,
        invoices_generated=p.invoices_generated,
        errors=[
            BillRunError(account_number=e["account_number"], code=e["code"], message=e["message"])
            for e in p.errors
        ],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        posting=BillRunPosting(row["posting"]) if row["posting"] else None,
        posting_started_at=row["posting_started_at"],
    )


async def _chunks(ctx: Any, work: Any) -> list[Any]:
    """Repeat a short transaction until it reports nothing left to do; a domain error stops
    and is returned. Each committed chunk's metric updates are announced."""
    try:
        while True:
            async with ctx.sessionmaker() as s:
                try:
                    async with s.begin():
                        more = await work(s)
                except DBAPIError as exc:
                    mapped = translate(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                await announce(ctx, s)
                if not more:
                    return []
    except BillingError as exc:
        return [to_user_error(exc)]


async def _moved(ctx: Any, run_id: int) -> None:
    """Tell billRunProgress subscribers that the run moved (after the commit)."""
    if ctx.services.events is not None:
        await ctx.services.events.publish_bill_run(ctx.tenant_id, run_id)


@strawberry.type
class BillRunQueries:
    @strawberry.field(description="One bill run by its number, with its progress and errors.")
    async def bill_run(self, info: strawberry.Info, bill_run_number: str) -> BillRun | None:
        async def go(s: AsyncSession) -> BillRun | None:
            row = await br.find_bill_run(s, info.context.tenant_id, bill_run_number)
            return await bill_run_out(s, row) if row else None

        return await read(info.context, go)


@strawberry.type
class BillRunMutations:
    @strawberry.mutation(
        description="Create a bill run; the worker bills its accounts in the background."
    )
    async def create_bill_run(
        self, info: strawberry.Info, input: CreateBillRunInput
    ) -> BillRunPayload:
        ctx = info.context
        payload = input_payload(input)
        payload.pop("idempotency_key", None)
        data = br.BillRunData(
            target_date=input.target_date,
            invoice_date=input.invoice_date,
            account_numbers=input.account_numbers,
            batch=input.batch,
            bill_cycle_day=input.bill_cycle_day,
            auto_post=input.auto_post,
        )

        async def work(s: AsyncSession) -> BillRun:
            return await bill_run_out(s, await br.create_bill_run(s, ctx.tenant_id, data))

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> BillRun:
            return await bill_run_out(s, await br.get_bill_run_by_id(s, stored["id"]))

        out, errors = await idempotent(
            ctx,
            input.idempotency_key,
            "createBillRun",
            payload,
            work,
            _remember,
            replay,
        )
        if out is not None and ctx.services.redis is not None:
            run = out
            errors = await enqueue_committed(
                "bill run",
                run.bill_run_number,
                lambda: enqueue.enqueue_bill_run(
                    ctx.services.redis,
                    ctx.tenant_id,
                    run.db_id,
                    enqueue.first_generation(run.created_at),
                ),
            )
        return BillRunPayload(bill_run=out, errors=errors)

    @strawberry.mutation(
        description="Post the drafts of a completed bill run, a few hundred per transaction; "
        "the run shows posting POST meanwhile and becomes POSTED with its last draft "
        "(repeat to finish an interrupted post). INVALID_STATE while it is being canceled."
    )
    async def post_bill_run(
        self, info: strawberry.Info, input: BillRunNumberInput
    ) -> BillRunPayload:
        ctx = info.context
        run, errors = await in_transaction(
            ctx, lambda s: br.begin_post(s, ctx.tenant_id, input.bill_run_number)
        )
        if run is None:
            return BillRunPayload(errors=errors)
        await _moved(ctx, run["id"])
        errors = await _chunks(ctx, lambda s: br.post_chunk(s, ctx.tenant_id, run["id"]))
        await _moved(ctx, run["id"])
        return BillRunPayload(
            bill_run=await read(ctx, lambda s: _fresh(s, run["id"])), errors=errors
        )

    @strawberry.mutation(
        description="Cancel the drafts of a completed (or ERROR) bill run and roll "
        "chargedThroughDate back; the run shows posting CANCEL meanwhile and becomes CANCELED "
        "with its last draft (repeat to finish an interrupted cancel). INVALID_STATE while it "
        "is being posted."
    )
    async def cancel_bill_run(
        self, info: strawberry.Info, input: BillRunNumberInput
    ) -> BillRunPayload:
        ctx = info.context
        run, errors = await in_transaction(
            ctx, lambda s: br.begin_cancel(s, ctx.tenant_id, input.bill_run_number)
        )
        if run is None:
            return BillRunPayload(errors=errors)
        await _moved(ctx, run["id"])
        errors = await _chunks(ctx, lambda s: br.cancel_chunk(s, ctx.tenant_id, run["id"]))
        await _moved(ctx, run["id"])
        return BillRunPayload(
            bill_run=await read(ctx, lambda s: _fresh(s, run["id"])), errors=errors
        )


RECHECK_SECONDS = 30.0  # a subscriber re-reads its run this often even without news


@strawberry.type
class BillRunSubscriptions:
    @strawberry.subscription(
        description="The bill run now, then again each time its status, posting or progress "
        "(accountsProcessed, invoicesGenerated, errors) moves. Completes once the run is "
        "settled: POSTED or CANCELED; or, with no post or cancel under way, ERROR or "
        "COMPLETED without autoPost (it waits for postBillRun or cancelBillRun: subscribe "
        "again to follow those). An unknown number is a NOT_FOUND error. `after` (a cursor "
        "of the event feed) is accepted for symmetry with accountMetricsUpdated: the run's "
        "first message is its state now, which already holds every change after any cursor, "
        "so a client that resubscribes misses nothing with or without it (the run's individual "
        "BILL_RUN_PROGRESSED events are in `events`)."
    )
    async def bill_run_progress(
        self, info: strawberry.Info, bill_run_number: str, after: str | None = None
    ) -> AsyncGenerator[BillRun, None]:
        ctx = info.context
        hub = event_hub(ctx)
        try:
            ev.decode_position(after)  # a forged cursor is refused like anywhere else
            run = await read(ctx, lambda s: br.get_bill_run(s, ctx.tenant_id, bill_run_number))
        except BillingError as exc:
            raise to_graphql_error(exc, info) from None
        run_id = run["id"]

        async def now(s: AsyncSession) -> tuple[BillRun, bool]:
            row = await br.get_bill_run_by_id(s, run_id)
            return await bill_run_out(s, row), br.is_settled(row)

        # Subscribed before the first read: no move after that read goes unheard.
        async with hub.bill_run_feed(ctx.tenant_id, run_id) as feed:
            last: tuple[Any, ...] | None = None
            while True:
                out, settled = await read(ctx, now)
                seen = (out.status, out.posting, out.accounts_processed,
                        out.invoices_generated, len(out.errors))  # fmt: skip
                if seen != last:
                    last = seen
                    yield out
                if settled:
                    return
                # A lost message (Redis hiccup) only delays the news until the recheck.
                if await feed.get(within=RECHECK_SECONDS) is None:
                    return  # the server is shutting down


def _remember(run: BillRun | None) -> dict[str, Any]:
    assert run is not None
    return {"id": run.db_id}


async def _fresh(s: AsyncSession, run_id: int) -> BillRun:
    return await bill_run_out(s, await br.get_bill_run_by_id(s, run_id))

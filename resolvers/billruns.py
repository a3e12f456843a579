"""Root fields for bill runs. The run is written in the request's transaction; the worker
is asked to drive it only after that commit (jobs.enqueue)."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billing import billruns as br
from billing.dbutil import translate
from billing.errors import BillingError
from jobs import enqueue
from resolvers.accounts import input_payload
from resolvers.base import idempotent, in_transaction, read
from resolvers.convert import gid
from resolvers.errors import to_user_error
from schema.billruns import (
    BillRun,
    BillRunError,
    BillRunNumberInput,
    BillRunPayload,
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
    )


async def _chunks(ctx: Any, work: Any) -> list[Any]:
    """Repeat a short transaction until it does nothing; a domain error stops and is returned."""
    try:
        while True:
            async with ctx.sessionmaker() as s:
                try:
                    async with s.begin():
                        if not await work(s):
                            return []
                except DBAPIError as exc:
                    mapped = translate(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
    except BillingError as exc:
        return [to_user_error(exc)]


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
            await enqueue.enqueue_bill_run(ctx.services.redis, ctx.tenant_id, out.db_id)
        return BillRunPayload(bill_run=out, errors=errors)

    @strawberry.mutation(
        description="Post the drafts of a completed bill run "
        "(repeat to finish an interrupted post)."
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
        errors = await _chunks(ctx, lambda s: br.post_chunk(s, ctx.tenant_id, run["id"]))
        return BillRunPayload(
            bill_run=await read(ctx, lambda s: _fresh(s, run["id"])), errors=errors
        )

    @strawberry.mutation(
        description="Cancel the drafts of a bill run and roll chargedThroughDate back."
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
        errors = await _chunks(ctx, lambda s: br.cancel_chunk(s, ctx.tenant_id, run["id"]))
        return BillRunPayload(
            bill_run=await read(ctx, lambda s: _fresh(s, run["id"])), errors=errors
        )


def _remember(run: BillRun | None) -> dict[str, Any]:
    assert run is not None
    return {"id": run.db_id}


async def _fresh(s: AsyncSession, run_id: int) -> BillRun:
    return await bill_run_out(s, await br.get_bill_run_by_id(s, run_id))

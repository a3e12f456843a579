"""Bill runs (domain.md section 8): selection, the resumable per-account unit, post, cancel.

Life of a run: ``create_bill_run`` writes the run (PENDING) and one ``bill_run_account`` row
(PENDING) per selected invoice-owner account in the request's transaction. The worker moves
the run to PROCESSING and bills accounts in batches; each account is one transaction that
writes the account's invoice(s) AND marks its row DONE, so a worker killed mid-run leaves
every account either wholly billed (DONE) or untouched (PENDING), and a restarted job only
takes PENDING rows (claimed ``FOR UPDATE``: two workers never bill one account). The
run completes when no PENDING row is left; progress is read from the rows, so parallel
batches never contend on the run's row.

Posting and cancelling walk the run's drafts in short transactions (a few hundred invoices,
hence a bounded number of account locks, per transaction). The status tells the truth: a
run keeps COMPLETED (or ERROR) while its drafts are walked and takes POSTED or CANCELED in
the transaction that leaves it no draft. The operation under way is the run's ``posting``
marker ('POST' or 'CANCEL'), set under the run's row lock (so a post and a cancel exclude
each other) and cleared with that last transaction; every chunk takes the same row lock.
An interrupted post or cancel keeps its marker: repeating it, or a restarted worker
(``runs_to_resume``), finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import get_account
from billing.errors import InvalidState, NotFound, ValidationFailed
from billing.invoices import cancel_invoice
from billing.rating import InvoiceSpec, bill_subscriptions, post_invoices
from db.models import BillRun, BillRunAccount, table_of
from db.statuses import BillRunAccountStatus, BillRunPosting, BillRunStatus, InvoiceSource

bill_run_t = table_of(BillRun)
bill_run_account_t = table_of(BillRunAccount)

MAX_ACCOUNT_NUMBERS = 10_000
POST_CHUNK = 200
CANCEL_CHUNK = 50


@dataclass
class BillRunData:
    target_date: date
    invoice_date: date | None = None
    account_numbers: list[str] | None = None
    batch: str | None = None
    bill_cycle_day: int | None = None
    auto_post: bool = False


@dataclass
class Progress:
    accounts_processed: int = 0
    invoices_generated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


async def create_bill_run(session: AsyncSession, tenant_id: int, data: BillRunData) -> RowMapping:
    """A PENDING run over the selected invoice-owner accounts (all of them when nothing is
    given; the criteria combine with AND)."""
    invoice_date = data.invoice_date or data.target_date
    ids: list[int] | None = None
    if data.account_numbers is not None:
        if not data.account_numbers:
            raise ValidationFailed("accountNumbers must not be empty", ["accountNumbers"])
        if len(data.account_numbers) > MAX_ACCOUNT_NUMBERS:
            from billing.errors import LimitExceeded

            raise LimitExceeded(
                f"At most {MAX_ACCOUNT_NUMBERS} account numbers", ["accountNumbers"]
            )
        ids = []
        for n, number in enumerate(data.account_numbers):
            try:
                acc = await get_account(session, tenant_id, number)
            except NotFound:
                raise NotFound(f"Account {number} not found", ["accountNumbers", str(n)]) from None
            ids.append(acc["id"])
    if data.bill_cycle_day is not None and not 1 <= data.bill_cycle_day <= 31:
        raise ValidationFailed("billCycleDay must be 1-31", ["billCycleDay"])
    if data.batch is not None and not data.batch.strip():
        raise ValidationFailed("batch must not be blank", ["batch"])
    number = await numbering.next_number(session, tenant_id, "bill_run")
    selection = {
        "accountNumbers": data.account_numbers,
        "batch": data.batch,
        "billCycleDay": data.bill_cycle_day,
    }
    run_id = (
        await session.execute(
            insert(bill_run_t)
            .values(
                tenant_id=tenant_id,
                bill_run_number=number,
                target_date=data.target_date,
                invoice_date=invoice_date,
                selection=selection,
                auto_post=data.auto_post,
                status=BillRunStatus.PENDING,
                accounts_total=0,
                accounts_processed=0,
                invoices_generated=0,
            )
            .returning(bill_run_t.c.id)
        )
    ).scalar_one()
    where = ["a.tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id, "r": run_id}
    binds = []
    if ids is not None:
        where.append("a.id = ANY(:ids)")
        params["ids"] = ids
        binds.append(bindparam("ids", type_=ARRAY(BigInteger)))
    if data.batch is not None:
        where.append("a.batch = :b")
        params["b"] = data.batch
    if data.bill_cycle_day is not None:
        where.append("a.bill_cycle_day = :bcd")
        params["bcd"] = data.bill_cycle_day
    stmt = text(
        f"""
        INSERT INTO bill_run_account (bill_run_id, account_id, tenant_id, status, invoices)
        SELECT :r, a.id, a.tenant_id, 'PENDING', 0 FROM account a
        WHERE {" AND ".join(where)}
          AND EXISTS (SELECT 1 FROM subscription s WHERE s.invoice_owner_account_id = a.id)
        """
    )
    if binds:
        stmt = stmt.bindparams(*binds)
    total = int((await session.execute(stmt, params)).rowcount)  # type: ignore[attr-defined]
    await session.execute(
        update(bill_run_t).where(bill_run_t.c.id == run_id).values(accounts_total=total)
    )
    return await get_bill_run_by_id(session, run_id)


async def find_bill_run(session: AsyncSession, tenant_id: int, number: str) -> RowMapping | None:
    """The bill run with that number in the tenant, or None."""
    stmt = select(bill_run_t).where(
        bill_run_t.c.tenant_id == tenant_id, bill_run_t.c.bill_run_number == number
    )
    return (await session.execute(stmt)).mappings().one_or_none()


async def get_bill_run(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """The bill run with that number, or NOT_FOUND."""
    row = await find_bill_run(session, tenant_id, number)
    if row is None:
        raise NotFound(f"Bill run {number} not found", ["billRunNumber"])
    return row


async def get_bill_run_by_id(session: AsyncSession, run_id: int) -> RowMapping:
    """The bill run with that id (the caller already checked the tenant)."""
    return (
        (await session.execute(select(bill_run_t).where(bill_run_t.c.id == run_id)))
        .mappings()
        .one()
    )


async def progress(session: AsyncSession, run_id: int) -> Progress:
    """Accounts done, invoices made and per-account errors, read from the account rows."""
    done, invoices = (
        await session.execute(
            text(
                "SELECT count(*) FILTER (WHERE status <> 'PENDING'), coalesce(sum(invoices), 0) "
                "FROM bill_run_account WHERE bill_run_id = :r"
            ),
            {"r": run_id},
        )
    ).one()
    errors = (
        await session.execute(
            text(
                "SELECT a.account_number, x.error_code, x.error_message FROM bill_run_account x "
                "JOIN account a ON a.id = x.account_id "
                "WHERE x.bill_run_id = :r AND x.status = 'ERROR' ORDER BY a.account_number"
            ),
            {"r": run_id},
        )
    ).all()
    return Progress(
        int(done),
        int(invoices),
        [{"account_number": n, "code": c or "ERROR", "message": m or ""} for n, c, m in errors],
    )


def is_settled(run: RowMapping) -> bool:
    """True once nothing moves the run on by itself: POSTED or CANCELED; ERROR, or
    COMPLETED without autoPost (it waits for postBillRun or cancelBillRun), when no post or
    cancel is under way."""
    status = run["status"]
    if status in (BillRunStatus.POSTED, BillRunStatus.CANCELED):
        return True
    if run["posting"] is not None:
        return False
    return status == BillRunStatus.ERROR or (
        status == BillRunStatus.COMPLETED and not run["auto_post"]
    )


# --------------------------------------------------------------------------- the worker's side


async def start_bill_run(session: AsyncSession, run_id: int) -> RowMapping:
    """PENDING -> PROCESSING (other states are left as they are)."""
    await session.execute(
        update(bill_run_t)
        .where(bill_run_t.c.id == run_id, bill_run_t.c.status == BillRunStatus.PENDING)
        .values(status=BillRunStatus.PROCESSING)
    )
    return await get_bill_run_by_id(session, run_id)


async def pending_accounts(session: AsyncSession, run_id: int) -> list[int]:
    """Ids of the run's accounts not yet billed (the resumable unit of work)."""
    res = await session.execute(
        text(
            "SELECT account_id FROM bill_run_account WHERE bill_run_id = :r AND status = 'PENDING' "
            "ORDER BY account_id"
        ),
        {"r": run_id},
    )
    return [r[0] for r in res]


async def bill_account(session: AsyncSession, run_id: int, account_id: int) -> int | None:
    """Bill one account of a PROCESSING run and mark it DONE, in the caller's transaction.

    None when the account is not PENDING; otherwise the number of invoices made. A row
    another worker is billing is waited for: its commit makes it DONE (skipped here), its
    death rolls it back to PENDING (billed here), so nothing is billed twice or lost."""
    claimed = (
        await session.execute(
            text(
                "SELECT x.tenant_id FROM bill_run_account x "
                "JOIN bill_run r ON r.id = x.bill_run_id "
                "WHERE x.bill_run_id = :r AND x.account_id = :a AND x.status = 'PENDING' "
                "AND r.status = 'PROCESSING' FOR UPDATE OF x"
            ),
            {"r": run_id, "a": account_id},
        )
    ).scalar_one_or_none()
    if claimed is None:
        return None
    run = await get_bill_run_by_id(session, run_id)
    spec = InvoiceSpec(
        claimed, run["target_date"], run["invoice_date"], InvoiceSource.BILL_RUN, bill_run_id=run_id
    )
    result = await bill_subscriptions(session, spec, invoice_owner_id=account_id)
    await session.execute(
        update(bill_run_account_t)
        .where(
            bill_run_account_t.c.bill_run_id == run_id,
            bill_run_account_t.c.account_id == account_id,
        )
        .values(status=BillRunAccountStatus.DONE, invoices=len(result.invoice_ids))
    )
    return len(result.invoice_ids)


async def mark_account_error(
    session: AsyncSession, run_id: int, account_id: int, code: str, message: str
) -> None:
    """Record why one account of a run failed; the run goes on with the others."""
    await session.execute(
        update(bill_run_account_t)
        .where(
            bill_run_account_t.c.bill_run_id == run_id,
            bill_run_account_t.c.account_id == account_id,
            bill_run_account_t.c.status == BillRunAccountStatus.PENDING,
        )
        .values(status=BillRunAccountStatus.ERROR, error_code=code, error_message=message[:1000])
    )


async def finish_if_done(session: AsyncSession, run_id: int) -> RowMapping | None:
    """PROCESSING -> COMPLETED (or ERROR when every account failed) once no account is
    PENDING; returns the run when this call completed it."""
    row = (
        await session.execute(
            text(
                """
                UPDATE bill_run r SET
                  status = CASE WHEN p.errors > 0 AND p.errors = r.accounts_total THEN 'ERROR'
                                ELSE 'COMPLETED' END,
                  accounts_processed = p.done, invoices_generated = p.invoices,
                  completed_at = now()
                FROM (SELECT count(*) FILTER (WHERE status <> 'PENDING') AS done,
                             count(*) FILTER (WHERE status = 'ERROR') AS errors,
                             coalesce(sum(invoices), 0) AS invoices,
                             count(*) FILTER (WHERE status = 'PENDING') AS pending
                      FROM bill_run_account WHERE bill_run_id = :r) p
                WHERE r.id = :r AND r.status = 'PROCESSING' AND p.pending = 0
                RETURNING r.id
                """
            ),
            {"r": run_id},
        )
    ).scalar_one_or_none()
    return None if row is None else await get_bill_run_by_id(session, run_id)


# --------------------------------------------------------------------------- post and cancel


async def begin_post(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """Mark a COMPLETED run as being posted (``post_chunk`` then walks its drafts).

    A run already being posted is continued (repeating an interrupted post) and a POSTED
    run is left as it is; a run being canceled, or in any other state, is INVALID_STATE."""
    run = await _lock_run(session, tenant_id, number)
    if run["posting"] == BillRunPosting.CANCEL:
        raise InvalidState(f"Bill run {number} is being canceled; it cannot be posted")
    if run["status"] == BillRunStatus.POSTED or run["posting"] == BillRunPosting.POST:
        return run
    if run["status"] != BillRunStatus.COMPLETED:
        raise InvalidState(
            f"Bill run {number} is {run['status']}; only a COMPLETED run can be posted"
        )
    return await _mark(session, run["id"], BillRunPosting.POST)


async def post_chunk(
    session: AsyncSession, tenant_id: int, run_id: int, limit: int | None = None
) -> bool:
    """Post up to ``limit`` (POST_CHUNK) drafts of a run being posted; the chunk that leaves
    no draft makes the run POSTED in its own transaction. True while the post goes on."""
    limit = limit or POST_CHUNK
    run = await _lock_run_by_id(session, run_id)
    if run["posting"] != BillRunPosting.POST:
        return False
    ids = await _draft_ids(session, run_id, limit + 1)  # one more: is this chunk the last?
    await post_invoices(session, tenant_id, ids[:limit])
    return not await _done_if_no_draft(session, run_id, len(ids) > limit, BillRunStatus.POSTED)


async def begin_cancel(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """Mark a COMPLETED or ERROR run as being canceled (``cancel_chunk`` then walks its
    drafts). A run already being canceled is continued and a CANCELED run is left as it
    is; a run being posted, or in any other state, is INVALID_STATE."""
    run = await _lock_run(session, tenant_id, number)
    if run["posting"] == BillRunPosting.POST:
        raise InvalidState(f"Bill run {number} is being posted; it cannot be canceled")
    if run["status"] == BillRunStatus.CANCELED or run["posting"] == BillRunPosting.CANCEL:
        return run
    if run["status"] not in (BillRunStatus.COMPLETED, BillRunStatus.ERROR):
        raise InvalidState(
            f"Bill run {number} is {run['status']}; only a COMPLETED or ERROR run can be canceled"
        )
    return await _mark(session, run["id"], BillRunPosting.CANCEL)


async def cancel_chunk(
    session: AsyncSession, tenant_id: int, run_id: int, limit: int | None = None
) -> bool:
    """Cancel up to ``limit`` (CANCEL_CHUNK) drafts of a run being canceled, rolling
    chargedThroughDate back; the chunk that leaves no draft makes the run CANCELED in its
    own transaction. True while the cancel goes on."""
    limit = limit or CANCEL_CHUNK
    run = await _lock_run_by_id(session, run_id)
    if run["posting"] != BillRunPosting.CANCEL:
        return False
    res = await session.execute(
        text(
            "SELECT invoice_number FROM invoice WHERE bill_run_id = :r AND status = 'DRAFT' "
            "ORDER BY id LIMIT :n"
        ),
        {"r": run_id, "n": limit + 1},  # one more: is this chunk the last?
    )
    numbers = [r[0] for r in res]
    for number in numbers[:limit]:
        await cancel_invoice(session, tenant_id, number)
    return not await _done_if_no_draft(
        session, run_id, len(numbers) > limit, BillRunStatus.CANCELED
    )


async def _mark(session: AsyncSession, run_id: int, posting: str) -> RowMapping:
    await session.execute(
        update(bill_run_t)
        .where(bill_run_t.c.id == run_id)
        .values(posting=posting, posting_started_at=func.now())
    )
    return await get_bill_run_by_id(session, run_id)


async def _done_if_no_draft(
    session: AsyncSession, run_id: int, drafts_left: bool, status: str
) -> bool:
    """After a chunk: unless drafts are left beyond the ones it took, the run takes its
    final status and loses its marker, in the chunk's transaction. No draft can join a
    COMPLETED or ERROR run (only a PROCESSING one is billed), and each draft the chunk
    took is no longer one once the chunk's statements are through, so none is left."""
    if drafts_left:
        return False
    await session.execute(
        update(bill_run_t)
        .where(bill_run_t.c.id == run_id)
        .values(status=status, posting=None, posting_started_at=None)
    )
    return True


async def _lock_run(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    stmt = (
        select(bill_run_t)
        .where(bill_run_t.c.tenant_id == tenant_id, bill_run_t.c.bill_run_number == number)
        .with_for_update()
    )
    run = (await session.execute(stmt)).mappings().one_or_none()
    if run is None:
        raise NotFound(f"Bill run {number} not found", ["billRunNumber"])
    return run


async def _lock_run_by_id(session: AsyncSession, run_id: int) -> RowMapping:
    stmt = select(bill_run_t).where(bill_run_t.c.id == run_id).with_for_update()
    return (await session.execute(stmt)).mappings().one()


async def _draft_ids(session: AsyncSession, run_id: int, limit: int) -> list[int]:
    res = await session.execute(
        text(
            "SELECT id FROM invoice WHERE bill_run_id = :r AND status = 'DRAFT' "
            "ORDER BY id LIMIT :n"
        ),
        {"r": run_id, "n": limit},
    )
    return [r[0] for r in res]


async def runs_to_resume(session: AsyncSession) -> list[tuple[int, int]]:
    """(tenant_id, run id) of every run a worker should drive on: PENDING or PROCESSING,
    COMPLETED with autoPost, or with a post or cancel under way (interrupted: its process
    was killed between chunks)."""
    res = await session.execute(
        text(
            "SELECT tenant_id, id FROM bill_run WHERE status IN ('PENDING', 'PROCESSING') "
            "OR (status = 'COMPLETED' AND auto_post) OR posting IS NOT NULL ORDER BY id"
        )
    )
    return [(r[0], r[1]) for r in res]


async def runs_not_started(session: AsyncSession) -> list[tuple[int, int, datetime]]:
    """(tenant_id, run id, created_at) of every PENDING run: created, but no worker has
    started it yet (its first drive may never have been queued)."""
    res = await session.execute(
        select(bill_run_t.c.tenant_id, bill_run_t.c.id, bill_run_t.c.created_at)
        .where(bill_run_t.c.status == BillRunStatus.PENDING)
        .order_by(bill_run_t.c.id)
    )
    return [(r[0], r[1], r[2]) for r in res]

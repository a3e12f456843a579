"""Root fields of the bulk mutations: the rows decoded once, one transaction per call,
one result per input row (billing.bulk)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import strawberry
from strawberry.types.nodes import SelectedField

from billing import bulk, idempotency
from billing.dbutil import DatabaseError, translate
from billing.errors import BillingError
from billing.metrics import SYNC
from db.pg import Db, connection_of
from db.statuses import MemoKind
from resolvers import convert, memo_convert
from resolvers.base import expected_failure
from resolvers.context import Context
from resolvers.documents import payment_data, standalone_data
from resolvers.errors import to_user_error
from resolvers.memos import memo_data
from schema.bulk import (
    BulkCreditMemoPayload,
    BulkCreditMemoResult,
    BulkDebitMemoPayload,
    BulkDebitMemoResult,
    BulkInvoicePayload,
    BulkInvoiceResult,
    BulkPaymentPayload,
    BulkPaymentResult,
    CreateCreditMemosInput,
    CreateDebitMemosInput,
    CreatePaymentsInput,
    CreateStandaloneInvoicesInput,
)
from schema.common import ErrorPolicy
from schema.errors import UserError

T = TypeVar("T")


def row_keys(rows: Sequence[Any], operation: str) -> list[bulk.RowKey | None]:
    """Each row's idempotency key with the hash of its input, the same hash the single
    mutation ``operation`` takes (so a row may be retried through either)."""
    out: list[bulk.RowKey | None] = []
    for row in rows:
        key = row.idempotency_key
        if key is None:
            out.append(None)
            continue
        payload = strawberry.asdict(row)
        payload.pop("idempotency_key", None)
        out.append(bulk.RowKey(key, idempotency.request_hash(operation, payload)))
    return out


class _Rejected(Exception):
    """Unwinds the transaction of a call its error policy rejected."""

    def __init__(self, outcome: bulk.BulkOutcome) -> None:
        self.outcome = outcome


async def run_bulk(
    ctx: Context,
    n: int,
    plural: str,
    work: Callable[[Db], Awaitable[bulk.BulkOutcome]],
    *,
    dry_run: bool = False,
) -> bulk.BulkOutcome:
    """One bulk call: the cap, then ``work`` in one transaction, committed unless the
    outcome is rejected or the call is a dry run. A failure of the whole call
    (LOCK_COMPETITION, UNAVAILABLE, the cap) is every row's error. After the commit the
    ordinary accounts whose metrics moved are announced."""
    try:
        bulk.check_cap(n, ctx.services.max_bulk_rows, plural)
        async with ctx.sessionmaker() as session:
            try:
                async with session.begin():
                    outcome = await work(await connection_of(session))
                    if outcome.rejected or dry_run:
                        raise _Rejected(outcome)
            except DatabaseError as exc:
                mapped = translate(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
    except _Rejected as rejected:
        return rejected.outcome
    except BillingError as exc:
        return bulk.BulkOutcome.failed(n, exc)
    except Exception as exc:
        return bulk.BulkOutcome.failed(n, expected_failure(exc))
    if outcome.synced_account_ids and ctx.services.events is not None:
        ctx.services.events.announce_metrics(ctx.tenant_id, outcome.synced_account_ids, SYNC)
    return outcome


def document_selected(info: strawberry.Info, document: str) -> bool:
    """Whether the call asks for ``results { <document> }``. A migration client that needs
    only each row's errors leaves the documents out, and building a thousand GraphQL objects
    nobody reads is a good part of a bulk call's cost. Fragments: assume it does."""
    for call in info.selected_fields:
        for part in call.selections:
            if not isinstance(part, SelectedField):
                return True
            if part.name == "results":
                return any(
                    not isinstance(s, SelectedField) or s.name == document for s in part.selections
                )
    return False


def results(
    outcome: bulk.BulkOutcome, out: Callable[[Any], T], *, documents: bool = True
) -> list[tuple[T | None, list[UserError]]]:
    """Per row: the GraphQL object of its document (or None, also when ``documents`` is
    false: nobody asked for them) and its errors."""
    errors_of: dict[int, list[UserError]] = {}
    cache: dict[int, list[UserError]] = {}
    for i, e in enumerate(outcome.errors):
        if e is not None:
            # A call-wide error is one object for every row: build its UserError once.
            known = cache.get(id(e))
            if known is None:
                known = cache[id(e)] = [to_user_error(e)]
            errors_of[i] = known
    return [
        (out(row) if row is not None and documents else None, errors_of.get(i, []))
        for i, row in enumerate(outcome.rows)
    ]


def _policy(p: ErrorPolicy) -> bool:
    return p == ErrorPolicy.REJECT_EVERYTHING


@strawberry.type
class BulkMutations:
    @strawberry.mutation(
        description="Many standalone invoices in one call (migrations), written set-based; "
        "one result per input row, in order."
    )
    async def create_standalone_invoices(
        self, info: strawberry.Info, input: CreateStandaloneInvoicesInput
    ) -> BulkInvoicePayload:
        ctx = info.context
        rows = input.invoices
        outcome = await run_bulk(
            ctx,
            len(rows),
            "invoices",
            lambda db: bulk.create_standalone_invoices(
                db,
                ctx.tenant_id,
                [standalone_data(r) for r in rows],
                row_keys(rows, "createStandaloneInvoice"),
                all_or_nothing=_policy(input.error_policy),
            ),
            dry_run=input.dry_run,
        )
        return BulkInvoicePayload(
            count=outcome.count,
            results=[
                BulkInvoiceResult(invoice=obj, errors=errs)
                for obj, errs in results(
                    outcome,
                    lambda r: convert.invoice(r, r["account_number"]),
                    documents=document_selected(info, "invoice"),
                )
            ],
        )

    @strawberry.mutation(
        description="Many payments in one call, each applied, unapplied or both as in "
        "createPayment; one result per input row, in order."
    )
    async def create_payments(
        self, info: strawberry.Info, input: CreatePaymentsInput
    ) -> BulkPaymentPayload:
        ctx = info.context
        rows = input.payments
        outcome = await run_bulk(
            ctx,
            len(rows),
            "payments",
            lambda db: bulk.create_payments(
                db,
                ctx.tenant_id,
                [payment_data(r) for r in rows],
                row_keys(rows, "createPayment"),
                all_or_nothing=_policy(input.error_policy),
            ),
            dry_run=input.dry_run,
        )
        return BulkPaymentPayload(
            count=outcome.count,
            results=[
                BulkPaymentResult(payment=obj, errors=errs)
                for obj, errs in results(
                    outcome,
                    lambda r: convert.payment(r, r["account_number"]),
                    documents=document_selected(info, "payment"),
                )
            ],
        )

    @strawberry.mutation(
        description="Many credit memos in one call; one result per input row, in order."
    )
    async def create_credit_memos(
        self, info: strawberry.Info, input: CreateCreditMemosInput
    ) -> BulkCreditMemoPayload:
        ctx = info.context
        rows = input.credit_memos
        outcome = await run_bulk(
            ctx,
            len(rows),
            "creditMemos",
            lambda db: bulk.create_memos(
                db,
                ctx.tenant_id,
                MemoKind.CREDIT_MEMO,
                [memo_data(r) for r in rows],
                row_keys(rows, "createCreditMemo"),
                all_or_nothing=_policy(input.error_policy),
            ),
            dry_run=input.dry_run,
        )
        return BulkCreditMemoPayload(
            count=outcome.count,
            results=[
                BulkCreditMemoResult(credit_memo=obj, errors=errs)
                for obj, errs in results(
                    outcome,
                    lambda r: memo_convert.credit_memo(r, r["account_number"], r["invoice_number"]),
                    documents=document_selected(info, "creditMemo"),
                )
            ],
        )

    @strawberry.mutation(
        description="Many debit memos in one call; one result per input row, in order."
    )
    async def create_debit_memos(
        self, info: strawberry.Info, input: CreateDebitMemosInput
    ) -> BulkDebitMemoPayload:
        ctx = info.context
        rows = input.debit_memos
        outcome = await run_bulk(
            ctx,
            len(rows),
            "debitMemos",
            lambda db: bulk.create_memos(
                db,
                ctx.tenant_id,
                MemoKind.DEBIT_MEMO,
                [memo_data(r) for r in rows],
                row_keys(rows, "createDebitMemo"),
                all_or_nothing=_policy(input.error_policy),
            ),
            dry_run=input.dry_run,
        )
        return BulkDebitMemoPayload(
            count=outcome.count,
            results=[
                BulkDebitMemoResult(debit_memo=obj, errors=errs)
                for obj, errs in results(
                    outcome,
                    lambda r: memo_convert.debit_memo(r, r["account_number"], r["invoice_number"]),
                    documents=document_selected(info, "debitMemo"),
                )
            ],
        )

"""Root fields for credit memos, debit memos, refunds and payment cancellation."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import invoices as inv
from billing import memos, refunds
from billing import payments as pay
from billing.accounts import account_currency_of, account_number_of
from resolvers import memo_convert
from resolvers.accounts import input_payload
from resolvers.base import idempotent, keyed_payload, mutation_payload, read
from resolvers.documents import keyed_payment, targets
from schema.documents import PaymentPayload
from schema.memos import (
    CreateCreditMemoInput,
    CreateDebitMemoInput,
    CreateMemoInput,
    CreditMemo,
    CreditMemoApplicationInput,
    CreditMemoPayload,
    DebitMemo,
    DebitMemoPayload,
    MemoNumberInput,
    PaymentNumberInput,
    Refund,
    RefundCreditMemoInput,
    RefundPayload,
    RefundPaymentInput,
)


async def memo_out(s: AsyncSession, kind: str, row: Any) -> Any:
    account_number = await account_number_of(s, row["account_id"])
    invoice_number = await inv.invoice_number_of(s, row["invoice_id"])
    return memo_convert.MEMO[kind](row, account_number, invoice_number)


async def refund_out(s: AsyncSession, row: Any) -> Refund:
    return memo_convert.refund(
        row,
        await account_number_of(s, row["account_id"]),
        await account_currency_of(s, row["account_id"]),
        await pay.payment_number_of(s, row["payment_id"]),
        await memos.credit_memo_number_of(s, row["credit_memo_id"]),
    )


def memo_data(i: CreateMemoInput) -> memos.MemoData:
    return memos.MemoData(
        account_number=i.account_number,
        invoice_number=i.invoice_number,
        items=[
            inv.ItemData(
                charge_name=it.charge_name,
                quantity=it.quantity,
                unit_price=it.unit_price,
                amount=it.amount,
                service_start_date=it.service_start_date,
                service_end_date=it.service_end_date,
            )
            for it in (i.items or [])
        ],
        amount=i.amount,
        reason_code=i.reason_code,
        memo_date=i.memo_date,
        auto_post=i.auto_post,
    )


async def _create(ctx: Any, kind: str, operation: str, i: CreateMemoInput) -> tuple[Any, list[Any]]:
    payload = input_payload(i)
    payload.pop("idempotency_key", None)
    create = memos.create_credit_memo if kind == "credit_memo" else memos.create_debit_memo

    async def work(s: AsyncSession) -> Any:
        return await memo_out(s, kind, await create(s, ctx.tenant_id, memo_data(i)))

    async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
        return await memo_out(s, kind, await memos.get_memo_by_id(s, kind, stored["id"]))

    return await idempotent(
        ctx, i.idempotency_key, operation, payload, work, lambda r: {"id": r.db_id}, replay
    )


async def _credit(ctx: Any, work: Any) -> CreditMemoPayload:
    return await mutation_payload(
        ctx, work, lambda s, row: memo_out(s, "credit_memo", row), CreditMemoPayload, "credit_memo"
    )


async def _debit(ctx: Any, work: Any) -> DebitMemoPayload:
    return await mutation_payload(
        ctx, work, lambda s, row: memo_out(s, "debit_memo", row), DebitMemoPayload, "debit_memo"
    )


async def _keyed_credit(ctx: Any, input: Any, operation: str, work: Any) -> CreditMemoPayload:
    """A credit memo mutation that takes an optional idempotency key."""
    return await keyed_payload(
        ctx, input, operation, work,
        lambda s, row: memo_out(s, "credit_memo", row),
        lambda s, memo_id: memos.get_memo_by_id(s, "credit_memo", memo_id),
        CreditMemoPayload, "credit_memo",
    )  # fmt: skip


async def _refund(ctx: Any, input: Any, operation: str, work: Any) -> RefundPayload:
    """A refund, under the input's optional idempotency key."""
    return await keyed_payload(
        ctx, input, operation, work, refund_out, refunds.get_refund_by_id, RefundPayload, "refund"
    )


@strawberry.type
class MemoQueries:
    @strawberry.field(description="One credit memo by its number.")
    async def credit_memo(self, info: strawberry.Info, memo_number: str) -> CreditMemo | None:
        async def go(s: AsyncSession) -> CreditMemo | None:
            row = await memos.find_memo(s, info.context.tenant_id, "credit_memo", memo_number)
            return await memo_out(s, "credit_memo", row) if row else None

        return await read(info.context, go)

    @strawberry.field(description="One debit memo by its number.")
    async def debit_memo(self, info: strawberry.Info, memo_number: str) -> DebitMemo | None:
        async def go(s: AsyncSession) -> DebitMemo | None:
            row = await memos.find_memo(s, info.context.tenant_id, "debit_memo", memo_number)
            return await memo_out(s, "debit_memo", row) if row else None

        return await read(info.context, go)

    @strawberry.field(description="One refund by its number.")
    async def refund(self, info: strawberry.Info, refund_number: str) -> Refund | None:
        async def go(s: AsyncSession) -> Refund | None:
            row = await refunds.find_refund(s, info.context.tenant_id, refund_number)
            return await refund_out(s, row) if row else None

        return await read(info.context, go)


@strawberry.type
class MemoMutations:
    @strawberry.mutation(description="Create a credit memo from a posted invoice or on an account.")
    async def create_credit_memo(
        self, info: strawberry.Info, input: CreateCreditMemoInput
    ) -> CreditMemoPayload:
        out, errors = await _create(info.context, "credit_memo", "createCreditMemo", input)
        return CreditMemoPayload(credit_memo=out, errors=errors)

    @strawberry.mutation(description="Create a debit memo from a posted invoice or on an account.")
    async def create_debit_memo(
        self, info: strawberry.Info, input: CreateDebitMemoInput
    ) -> DebitMemoPayload:
        out, errors = await _create(info.context, "debit_memo", "createDebitMemo", input)
        return DebitMemoPayload(debit_memo=out, errors=errors)

    @strawberry.mutation(description="Post a draft credit memo; its credit reaches the metrics.")
    async def post_credit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> CreditMemoPayload:
        ctx = info.context
        return await _credit(
            ctx, lambda s: memos.post_memo(s, ctx.tenant_id, "credit_memo", input.memo_number)
        )

    @strawberry.mutation(
        description="Return a posted credit memo to draft (nothing applied or refunded)."
    )
    async def unpost_credit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> CreditMemoPayload:
        ctx = info.context
        return await _credit(
            ctx, lambda s: memos.unpost_memo(s, ctx.tenant_id, "credit_memo", input.memo_number)
        )

    @strawberry.mutation(description="Cancel a draft credit memo.")
    async def cancel_credit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> CreditMemoPayload:
        ctx = info.context
        return await _credit(
            ctx, lambda s: memos.cancel_memo(s, ctx.tenant_id, "credit_memo", input.memo_number)
        )

    @strawberry.mutation(description="Post a draft debit memo; its balance reaches the metrics.")
    async def post_debit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> DebitMemoPayload:
        ctx = info.context
        return await _debit(
            ctx, lambda s: memos.post_memo(s, ctx.tenant_id, "debit_memo", input.memo_number)
        )

    @strawberry.mutation(description="Return a posted debit memo to draft (nothing applied to it).")
    async def unpost_debit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> DebitMemoPayload:
        ctx = info.context
        return await _debit(
            ctx, lambda s: memos.unpost_memo(s, ctx.tenant_id, "debit_memo", input.memo_number)
        )

    @strawberry.mutation(description="Cancel a draft debit memo.")
    async def cancel_debit_memo(
        self, info: strawberry.Info, input: MemoNumberInput
    ) -> DebitMemoPayload:
        ctx = info.context
        return await _debit(
            ctx, lambda s: memos.cancel_memo(s, ctx.tenant_id, "debit_memo", input.memo_number)
        )

    @strawberry.mutation(
        description="Apply part of a posted credit memo to posted invoices and debit memos."
    )
    async def apply_credit_memo(
        self, info: strawberry.Info, input: CreditMemoApplicationInput
    ) -> CreditMemoPayload:
        ctx = info.context
        return await _keyed_credit(
            ctx, input, "applyCreditMemo",
            lambda s: memos.apply_credit_memo(
                s, ctx.tenant_id, input.memo_number,
                targets(input.invoices, "invoice_number"),
                targets(input.debit_memos, "memo_number"),
            ),
        )  # fmt: skip

    @strawberry.mutation(description="Take applied credit back to the memo's unapplied amount.")
    async def unapply_credit_memo(
        self, info: strawberry.Info, input: CreditMemoApplicationInput
    ) -> CreditMemoPayload:
        ctx = info.context
        return await _keyed_credit(
            ctx, input, "unapplyCreditMemo",
            lambda s: memos.unapply_credit_memo(
                s, ctx.tenant_id, input.memo_number,
                targets(input.invoices, "invoice_number"),
                targets(input.debit_memos, "memo_number"),
            ),
        )  # fmt: skip

    @strawberry.mutation(description="Refund part of a posted credit memo's unapplied amount.")
    async def refund_credit_memo(
        self, info: strawberry.Info, input: RefundCreditMemoInput
    ) -> RefundPayload:
        ctx = info.context
        return await _refund(
            ctx, input, "refundCreditMemo",
            lambda s: refunds.refund_credit_memo(
                s, ctx.tenant_id, input.memo_number, input.amount,
                refund_date=input.refund_date, method=input.method.value,
            ),
        )  # fmt: skip

    @strawberry.mutation(description="Refund part of a payment's unapplied amount.")
    async def refund_payment(
        self, info: strawberry.Info, input: RefundPaymentInput
    ) -> RefundPayload:
        ctx = info.context
        return await _refund(
            ctx, input, "refundPayment",
            lambda s: refunds.refund_payment(
                s, ctx.tenant_id, input.payment_number, input.amount,
                refund_date=input.refund_date, method=input.method.value,
            ),
        )  # fmt: skip

    @strawberry.mutation(description="Cancel a payment with nothing applied or refunded.")
    async def cancel_payment(
        self, info: strawberry.Info, input: PaymentNumberInput
    ) -> PaymentPayload:
        ctx = info.context
        return await keyed_payment(
            ctx, input, "cancelPayment",
            lambda s: pay.cancel_payment(s, ctx.tenant_id, input.payment_number),
        )  # fmt: skip

"""Root fields for invoices and payments."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import invoices as inv
from billing import payments as pay
from billing.accounts import account_number_of
from billing.applications import TargetAmount
from resolvers import convert
from resolvers.accounts import input_payload
from resolvers.base import idempotent, keyed_payload, mutation_payload, one_statement, read
from schema.documents import (
    CreatePaymentInput,
    CreateStandaloneInvoiceInput,
    Invoice,
    InvoiceNumberInput,
    InvoicePayload,
    Payment,
    PaymentApplicationInput,
    PaymentPayload,
)


async def invoice_out(s: AsyncSession, row: Any) -> Invoice:
    return convert.invoice(row, await account_number_of(s, row["account_id"]))


async def payment_out(s: AsyncSession, row: Any) -> Payment:
    return convert.payment(row, await account_number_of(s, row["account_id"]))


def targets(items: list[Any], number_attr: str) -> list[TargetAmount]:
    return [TargetAmount(getattr(i, number_attr), i.amount) for i in items]


def standalone_data(i: CreateStandaloneInvoiceInput) -> inv.StandaloneInvoiceData:
    return inv.StandaloneInvoiceData(
        account_number=i.account_number,
        invoice_date=i.invoice_date,
        items=[
            inv.ItemData(
                charge_name=it.charge_name,
                quantity=it.quantity,
                unit_price=it.unit_price,
                amount=it.amount,
                service_start_date=it.service_start_date,
                service_end_date=it.service_end_date,
            )
            for it in i.items
        ],
        invoice_number=i.invoice_number,
        due_date=i.due_date,
        status=i.status.value,
        currency=i.currency,
    )


def payment_data(i: CreatePaymentInput) -> pay.PaymentData:
    return pay.PaymentData(
        account_number=i.account_number,
        amount=i.amount,
        effective_date=i.effective_date,
        method=i.method.value,
        currency=i.currency,
        reference=i.reference,
        invoices=targets(i.invoices, "invoice_number"),
        debit_memos=targets(i.debit_memos, "memo_number"),
    )


@strawberry.type
class DocumentQueries:
    @strawberry.field(description="One invoice by its number.")
    async def invoice(self, info: strawberry.Info, invoice_number: str) -> Invoice | None:
        async def go(s: AsyncSession) -> Invoice | None:
            row = await inv.find_invoice(s, info.context.tenant_id, invoice_number)
            return await invoice_out(s, row) if row else None

        return await read(info.context, go)

    @strawberry.field(description="One payment by its number.")
    async def payment(self, info: strawberry.Info, payment_number: str) -> Payment | None:
        async def go(s: AsyncSession) -> Payment | None:
            row = await pay.find_payment(s, info.context.tenant_id, payment_number)
            return await payment_out(s, row) if row else None

        return await read(info.context, go)


async def _invoice_result(ctx: Any, work: Any) -> InvoicePayload:
    return await mutation_payload(ctx, work, invoice_out, InvoicePayload, "invoice")


async def keyed_payment(ctx: Any, input: Any, operation: str, work: Any) -> PaymentPayload:
    """A payment mutation that takes an optional idempotency key."""
    return await keyed_payload(
        ctx, input, operation, work, payment_out, pay.get_payment_by_id, PaymentPayload, "payment"
    )


@strawberry.type
class DocumentMutations:
    @strawberry.mutation(description="Create a standalone invoice, DRAFT or POSTED.")
    async def create_standalone_invoice(
        self, info: strawberry.Info, input: CreateStandaloneInvoiceInput
    ) -> InvoicePayload:
        data = standalone_data(input)
        ctx = info.context
        if not input.idempotency_key:
            done, errors = await one_statement(
                ctx, lambda db: inv.create_standalone_invoice(db, ctx.tenant_id, data)
            )
            invoice = convert.invoice(done.row, input.account_number) if done else None
            return InvoicePayload(invoice=invoice, errors=errors)
        payload = input_payload(input)
        payload.pop("idempotency_key", None)

        async def work(s: AsyncSession) -> Invoice:
            done = await inv.create_standalone_invoice(s, ctx.tenant_id, data)
            return await invoice_out(s, done.row)

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> Invoice:
            return await invoice_out(s, await inv.get_invoice_by_id(s, stored["id"]))

        # Taken whole, not unpacked at the call: unpacking makes mypy solve R as the tuple's
        # optional first item and type the lambda's argument as optional.
        result = await idempotent(
            ctx, input.idempotency_key, "createStandaloneInvoice", payload, work,
            lambda r: {"id": r.db_id}, replay,
        )  # fmt: skip
        out, errors = result
        return InvoicePayload(invoice=out, errors=errors)

    @strawberry.mutation(
        description="Post a draft invoice; its balance reaches the account's metrics."
    )
    async def post_invoice(
        self, info: strawberry.Info, input: InvoiceNumberInput
    ) -> InvoicePayload:
        ctx = info.context
        return await _invoice_result(
            ctx, lambda s: inv.post_invoice(s, ctx.tenant_id, input.invoice_number)
        )

    @strawberry.mutation(
        description="Return a posted invoice to draft (nothing may be applied to it)."
    )
    async def unpost_invoice(
        self, info: strawberry.Info, input: InvoiceNumberInput
    ) -> InvoicePayload:
        ctx = info.context
        return await _invoice_result(
            ctx, lambda s: inv.unpost_invoice(s, ctx.tenant_id, input.invoice_number)
        )

    @strawberry.mutation(description="Cancel a draft invoice.")
    async def cancel_invoice(
        self, info: strawberry.Info, input: InvoiceNumberInput
    ) -> InvoicePayload:
        ctx = info.context
        return await _invoice_result(
            ctx, lambda s: inv.cancel_invoice(s, ctx.tenant_id, input.invoice_number)
        )

    @strawberry.mutation(
        description="Record a payment: applied to invoices/debit memos, unapplied, or both."
    )
    async def create_payment(
        self, info: strawberry.Info, input: CreatePaymentInput
    ) -> PaymentPayload:
        ctx = info.context
        data = payment_data(input)
        if not input.idempotency_key and not data.invoices and not data.debit_memos:
            done, errors = await one_statement(
                ctx, lambda db: pay.create_unapplied_payment(db, ctx.tenant_id, data)
            )
            payment = convert.payment(done.row, input.account_number) if done else None
            return PaymentPayload(payment=payment, errors=errors)
        payload = input_payload(input)
        payload.pop("idempotency_key", None)

        async def work(s: AsyncSession) -> Payment:
            return await payment_out(s, await pay.create_payment(s, ctx.tenant_id, data))

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> Payment:
            return await payment_out(s, await pay.get_payment_by_id(s, stored["id"]))

        # Taken whole, not unpacked at the call: unpacking makes mypy solve R as the tuple's
        # optional first item and type the lambda's argument as optional.
        result = await idempotent(
            ctx, input.idempotency_key, "createPayment", payload, work,
            lambda r: {"id": r.db_id}, replay,
        )  # fmt: skip
        out, errors = result
        return PaymentPayload(payment=out, errors=errors)

    @strawberry.mutation(description="Apply part of a payment's unapplied amount.")
    async def apply_payment(
        self, info: strawberry.Info, input: PaymentApplicationInput
    ) -> PaymentPayload:
        ctx = info.context
        return await keyed_payment(
            ctx, input, "applyPayment",
            lambda s: pay.apply_payment(
                s, ctx.tenant_id, input.payment_number,
                targets(input.invoices, "invoice_number"),
                targets(input.debit_memos, "memo_number"),
            ),
        )  # fmt: skip

    @strawberry.mutation(description="Take applied money back to the payment's unapplied amount.")
    async def unapply_payment(
        self, info: strawberry.Info, input: PaymentApplicationInput
    ) -> PaymentPayload:
        ctx = info.context
        return await keyed_payment(
            ctx, input, "unapplyPayment",
            lambda s: pay.unapply_payment(
                s, ctx.tenant_id, input.payment_number,
                targets(input.invoices, "invoice_number"),
                targets(input.debit_memos, "memo_number"),
            ),
        )  # fmt: skip

"""Per-request DataLoaders and nested-field fetchers (each batch has its own session)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from graphql import FieldNode, SelectionSetNode
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from billing import accounts as acc
from billing import applications as apps
from billing import invoices as inv
from billing import payments as pay
from billing import subscriptions as subscr
from billing.accounts import account_number_of
from billing.metrics import AccountState, account_states, refresh_errors
from resolvers import convert, memo_convert
from schema.accounts import Account, AccountMetrics
from schema.common import Connection
from schema.documents import Application, InvoiceItem

K = TypeVar("K")
V = TypeVar("V")

# The Account fields whose values need the pending ledger read (pb_live_metrics).
PENDING_FIELDS = frozenset({"liveMetrics", "pendingMetricChanges"})


def asks_for_pending(info: Any) -> bool:
    """Whether the operation (its fragments included) selects a field that needs the
    pending ledger: then every account state of the request is read with it, so the
    fields of one account still come from one statement."""
    raw = info._raw_info
    stack: list[SelectionSetNode] = [
        n.selection_set for n in (raw.operation, *raw.fragments.values()) if n.selection_set
    ]
    while stack:
        for sel in stack.pop().selections:
            if isinstance(sel, FieldNode) and sel.name.value in PENDING_FIELDS:
                return True
            sub = getattr(sel, "selection_set", None)
            if sub is not None:
                stack.append(sub)
    return False


class Reads:
    """The batch reads behind a request's DataLoaders: each batch in its own session.

    Apart from the Fetcher on purpose: the Fetcher holds its DataLoaders, and a loader
    whose function held the Fetcher (a bound method, a closure) would close a reference
    cycle, which only the garbage collector frees, on every request that reads."""

    def __init__(self, sessionmaker: Any, tenant_id: int) -> None:
        self.sessionmaker = sessionmaker
        self.tenant_id = tenant_id
        # Whether account states are read with the pending ledger: decided once per request,
        # from the whole operation (Fetcher.with_pending); None until then.
        self.with_pending: bool | None = None

    async def session(self, work: Callable[[AsyncSession], Awaitable[V]]) -> V:
        async with self.sessionmaker() as session:
            return await work(session)

    async def accounts(self, ids: Sequence[int]) -> list[Account]:
        rows = await self.session(lambda s: acc.accounts_by_ids(s, self.tenant_id, list(ids)))
        return [convert.account(rows[i]) for i in ids]

    async def states(self, ids: Sequence[int]) -> list[AccountState]:
        # One statement for every account of the batch: one snapshot.
        found = await self.session(
            lambda s: account_states(
                s, self.tenant_id, list(ids), with_pending=bool(self.with_pending)
            )
        )
        return [found[i] for i in ids]

    async def account_ids(self, numbers: Sequence[str]) -> list[int]:
        return await self.session(
            lambda s: acc.account_ids_by_numbers(s, self.tenant_id, list(numbers))
        )

    async def refresh_errors(self, ids: Sequence[int]) -> list[str | None]:
        found = await self.session(lambda s: refresh_errors(s, self.tenant_id, list(ids)))
        return [found.get(i) for i in ids]

    async def items(self, keys: Sequence[tuple[int, str]]) -> list[list[InvoiceItem]]:
        async def go(s: AsyncSession) -> list[list[InvoiceItem]]:
            items = await inv.invoice_items(s, [i for i, _ in keys])
            sub_ids = {
                r["subscription_id"]
                for rows in items.values()
                for r in rows
                if r["subscription_id"]
            }
            chg_ids = {
                r["subscription_charge_id"]
                for rows in items.values()
                for r in rows
                if r["subscription_charge_id"]
            }
            subs: dict[int, str] = {}
            chgs: dict[int, str] = {}
            if sub_ids:
                subs = await subscr.subscription_numbers(s, list(sub_ids))
            if chg_ids:
                chgs = await subscr.charge_numbers(s, list(chg_ids))
            return [
                [
                    convert.invoice_item(
                        r,
                        currency,
                        subs.get(r["subscription_id"]),
                        chgs.get(r["subscription_charge_id"]),
                    )
                    for r in items[i]
                ]
                for i, currency in keys
            ]

        return await self.session(go)


class Fetcher:
    """What nested GraphQL fields call through ``info.context.fetch``."""

    def __init__(self, ctx: Any) -> None:
        self.reads = reads = Reads(ctx.sessionmaker, ctx.tenant_id)
        self._account = DataLoader(reads.accounts)
        self._states = DataLoader(reads.states)
        self._by_number = DataLoader(reads.account_ids)
        self._refresh_errors = DataLoader(reads.refresh_errors)
        self._items = DataLoader(reads.items)
        self._more: dict[str, DataLoader[Any, Any]] = {}

    def with_pending(self, info: Any) -> bool:
        """Whether this request reads account states with the pending ledger (decided
        once, from the whole operation)."""
        if self.reads.with_pending is None:
            self.reads.with_pending = asks_for_pending(info)
        return self.reads.with_pending

    def prime_state(self, state: AccountState) -> None:
        """A state already read with its account: account { metrics } reads nothing more."""
        self._states.prime(state.account_id, state)

    # ------------------------------------------------------------------ used by schema types

    async def account(self, account_id: int) -> Account:
        return await self._account.load(account_id)

    async def account_by_number(self, number: str) -> Account:
        return await self._account.load(await self._by_number.load(number))

    async def account_state(self, account_id: int, info: Any) -> AccountState:
        self.with_pending(info)
        return await self._states.load(account_id)

    async def account_metrics(self, account_id: int, info: Any) -> AccountMetrics:
        state = await self.account_state(account_id, info)
        return convert.metrics(state.stored, state.currency)

    async def live_metrics(self, account_id: int, info: Any) -> AccountMetrics:
        state = await self.account_state(account_id, info)
        if state.live is None:
            raise RuntimeError("liveMetrics read without the pending ledger")
        return convert.metrics(state.live, state.currency)

    async def pending_metric_changes(self, account_id: int, info: Any) -> int:
        state = await self.account_state(account_id, info)
        if state.pending is None:
            raise RuntimeError("pendingMetricChanges read without the pending ledger")
        return state.pending

    async def last_metrics_update(self, account_id: int, info: Any) -> datetime | None:
        return (await self.account_state(account_id, info)).stored.last_metrics_update

    async def metrics_current_as_of(self, account_id: int, info: Any) -> datetime | None:
        return (await self.account_state(account_id, info)).current_as_of

    async def metrics_refresh_error(self, account_id: int) -> str | None:
        return await self._refresh_errors.load(account_id)

    async def invoice_items(self, invoice_id: int, currency: str) -> list[InvoiceItem]:
        """The invoice's lines; ``currency`` is the invoice's, for their amounts."""
        return await self._items.load((invoice_id, currency))

    async def applications(self, column: str, ident: int, currency: str) -> list[Application]:
        """Applications of one document; ``currency`` is the document's, for their amounts."""
        loader = self._loader(f"applications:{column}", partial(_applications, self.reads, column))
        found: list[Application] = await loader.load((ident, currency))
        return found

    async def account_invoices(
        self, account_id: int, status: str | None, first: int | None, after: str | None
    ) -> Connection[Any]:
        async def go(s: AsyncSession) -> Connection[Any]:
            number = await account_number_of(s, account_id)
            page = await inv.invoices_of_account(s, account_id, status, first, after)
            return convert.connection(page, lambda r: convert.invoice(r, number))

        return await self.reads.session(go)

    async def account_payments(
        self, account_id: int, status: str | None, first: int | None, after: str | None
    ) -> Connection[Any]:
        async def go(s: AsyncSession) -> Connection[Any]:
            number = await account_number_of(s, account_id)
            page = await pay.payments_of_account(s, account_id, status, first, after)
            return convert.connection(page, lambda r: convert.payment(r, number))

        return await self.reads.session(go)

    async def account_subscriptions(
        self, account_id: int, role: str, first: int | None, after: str | None
    ) -> Connection[Any]:
        from billing import subscriptions as subs
        from resolvers import convert_orders as co

        async def go(s: AsyncSession) -> Connection[Any]:
            page = await subs.subscriptions_of_account(s, account_id, role, first, after)
            trees = {t.subscription["id"]: t for t in await subs.subscription_trees(s, page.rows)}
            return convert.connection(page, lambda r: co.subscription(trees[r["id"]]))

        return await self.reads.session(go)

    async def order_invoice_numbers(self, order_id: int) -> list[str]:
        return await self.reads.session(lambda s: inv.invoice_numbers_of_order(s, order_id))

    async def account_orders(
        self, account_id: int, first: int | None, after: str | None
    ) -> Connection[Any]:
        from billing import orders as ords
        from resolvers import convert_orders as co

        async def go(s: AsyncSession) -> Connection[Any]:
            page = await ords.orders_of_account(s, account_id, first, after)
            actions = await ords.order_actions(s, [r["id"] for r in page.rows])
            return convert.connection(page, lambda r: co.order(r, actions[r["id"]]))

        return await self.reads.session(go)

    # ------------------------------------------------------------------ memos, last payment

    async def memo_items(self, kind: str, memo_id: int, currency: str) -> list[Any]:
        """The memo's lines; ``currency`` is the memo's, for their amounts."""
        loader = self._loader(f"items:{kind}", partial(_memo_items, self.reads, kind))
        return await loader.load((memo_id, currency))  # type: ignore[no-any-return]

    async def invoice_memos(self, kind: str, invoice_id: int) -> list[Any]:
        loader = self._loader(f"from:{kind}", partial(_invoice_memos, self.reads, kind))
        return await loader.load(invoice_id)  # type: ignore[no-any-return]

    async def last_payment(self, account_id: int) -> convert.LastPayment | None:
        loader = self._loader("last_payment", partial(_last_payments, self.reads))
        found: convert.LastPayment | None = await loader.load(account_id)
        return found

    async def account_memos(
        self, kind: str, account_id: int, status: str | None, first: int | None, after: str | None
    ) -> Connection[Any]:
        from billing import memos

        async def go(s: AsyncSession) -> Connection[Any]:
            number = await account_number_of(s, account_id)
            page = await memos.memos_of_account(s, kind, account_id, status, first, after)
            invoices = await inv.invoice_numbers(s, [r["invoice_id"] for r in page.rows])
            return convert.connection(
                page, lambda r: memo_convert.MEMO[kind](r, number, invoices.get(r["invoice_id"]))
            )

        return await self.reads.session(go)

    def _loader(self, name: str, batch: Any) -> DataLoader[Any, Any]:
        loader = self._more.get(name)
        if loader is None:
            loader = self._more[name] = DataLoader(batch)
        return loader


async def _memo_items(reads: Reads, kind: str, keys: Sequence[tuple[int, str]]) -> list[list[Any]]:
    from billing import memos

    async def go(s: AsyncSession) -> list[list[Any]]:
        items = await memos.memo_items(s, kind, [i for i, _ in keys])
        return [[memo_convert.memo_item(r, currency) for r in items[i]] for i, currency in keys]

    return await reads.session(go)


async def _invoice_memos(reads: Reads, kind: str, ids: Sequence[int]) -> list[list[Any]]:
    from billing import memos

    async def go(s: AsyncSession) -> list[list[Any]]:
        grouped = await memos.memos_of_invoices(s, kind, list(ids))
        invoices = await inv.invoice_numbers(s, list(ids))
        accounts = {r["account_id"] for rows in grouped.values() for r in rows}
        numbers = {a: await account_number_of(s, a) for a in accounts}
        return [
            [
                memo_convert.MEMO[kind](r, numbers[r["account_id"]], invoices.get(i))
                for r in grouped[i]
            ]
            for i in ids
        ]

    return await reads.session(go)


async def _last_payments(reads: Reads, ids: Sequence[int]) -> list[convert.LastPayment | None]:
    async def go(s: AsyncSession) -> list[convert.LastPayment | None]:
        found = await pay.last_payments(s, list(ids))
        return [convert.last_payment(found[i]) if i in found else None for i in ids]

    return await reads.session(go)


async def _applications(
    reads: Reads, column: str, keys: Sequence[tuple[int, str]]
) -> list[list[Application]]:
    async def go(s: AsyncSession) -> list[list[Application]]:
        grouped = await apps.applications_of(s, column, [i for i, _ in keys])
        numbers = await apps.document_numbers(s, [r for rows in grouped.values() for r in rows])
        return [
            [convert.application(r, numbers, currency) for r in grouped[i]] for i, currency in keys
        ]

    return await reads.session(go)

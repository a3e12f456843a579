"""Bulk writes: many standalone invoices, payments, credit or debit memos in one call
(migrations; the API's create*s mutations).

A call is one transaction, written set-based: the accounts are read in one statement, the
rows checked in Python, the idempotency keys claimed in one statement (sorted), the
accounts locked once each (ordinary accounts' metrics locks, then every account's row FOR
SHARE, both in ascending id order, so two calls never deadlock), the numbers drawn in one
statement, and then ONE statement per table writes every row: documents, their items or
applications, the targets' balances, and the metrics (a partner account gets one ledger row
with the call's summed deltas, an ordinary account's metrics row moves once).

Errors are per row and carry their path from the call's input (``["invoices", "3", "items",
"0", "amount"]``). With ``all_or_nothing`` (REJECT_EVERYTHING) one failing row rejects the
call: the outcome says ``rejected`` and the caller rolls the transaction back. Otherwise the
rows that fail are left out and the others written (REJECT_FAILED_ROWS).

A row's idempotency key holds as a single write's does (billing.idempotency): a row sent
again with the same key and input answers the document written the first time and writes
nothing; the keys are the same as the single mutations', so a row may be retried through
either. Two rows of one call with the same key and input are one document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

from billing import idempotency, numbering
from billing.accounts import WRITE_ATTEMPTS, AccountForWrite
from billing.errors import (
    AmountExceedsOpenBalance,
    AmountExceedsUnapplied,
    BillingError,
    CurrencyMismatch,
    Duplicate,
    IdempotencyKeyReused,
    InvalidState,
    LimitExceeded,
    LockCompetition,
    NotFound,
    ValidationFailed,
)
from billing.invoices import StandaloneInvoiceData, check_standalone_invoice, due_date_for
from billing.memos import MemoData, memo_lines
from billing.metrics import CallDelta, move_metrics_of_call
from billing.money import ZERO, check_amount
from billing.payments import METHODS, PaymentData
from db.locks import NS_ACCOUNT_METRICS, key_sql, lock_timeout_sql
from db.pg import Db
from db.statuses import InvoiceStatus, MemoKind, MemoStatus

#: Rows one call may carry unless configured otherwise (PARTNERBILL_MAX_BULK_ROWS).
MAX_BULK_ROWS = 1000


def check_cap(count: int, cap: int, plural: str) -> None:
    """A bulk call carries at most ``cap`` rows; over it nothing is written."""
    if count > cap:
        raise LimitExceeded(f"At most {cap} {plural} per call, got {count}", [plural])


@dataclass(frozen=True)
class RowKey:
    """A row's idempotency key and the hash of its input (idempotency.request_hash)."""

    key: str
    request_hash: str


@dataclass
class BulkOutcome:
    """Per input row, in input order: the document written or replayed (a mapping of its
    columns) or None, and the error that refused the row or None. ``rejected``: a row
    failed under all_or_nothing, so nothing may be committed."""

    rows: list[Any]
    errors: list[BillingError | None]
    synced_account_ids: list[int] = field(default_factory=list)
    rejected: bool = False

    @property
    def count(self) -> int:
        return sum(1 for r in self.rows if r is not None)

    @classmethod
    def failed(cls, n: int, exc: BillingError) -> BulkOutcome:
        """Every row refused with the same error (the call as a whole failed)."""
        return cls([None] * n, [exc] * n, rejected=True)


# --------------------------------------------------------------------------- the call

ACCOUNTS_FOR_WRITE = f"""
SELECT a.id, a.account_number, a.currency, a.payment_term, a.partner_account,
       {lock_timeout_sql("t.lock_wait_ms")} AS lock_timeout
FROM account a JOIN tenant t ON t.id = a.tenant_id
WHERE a.tenant_id = $1 AND a.account_number = ANY($2::text[])
"""

# The aggregate calls the lock function once per row of the sorted subquery, in its order.
LOCK_METRICS = f"""
SELECT count(pg_advisory_xact_lock({NS_ACCOUNT_METRICS}, {key_sql("s.a")}))
FROM (SELECT u.a FROM unnest($1::bigint[]) AS u(a) ORDER BY u.a) s
"""

SHARE_ACCOUNTS = """
SELECT a.id, a.currency, a.payment_term, a.partner_account
FROM account a
WHERE a.tenant_id = $1 AND a.id = ANY($2::bigint[])
ORDER BY a.id
FOR SHARE OF a
"""

D = TypeVar("D", bound="_Doc")


@dataclass(eq=False)
class _Doc:
    """A row that passed its checks, on its way to the database."""

    index: int
    account: AccountForWrite
    number: str = ""
    given: str | None = None


class _Call:
    """The state of one bulk call: the rows' errors, keys, replays."""

    def __init__(
        self,
        db: Db,
        tenant_id: int,
        plural: str,
        operation: str,
        n: int,
        all_or_nothing: bool,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.plural = plural
        self.operation = operation
        self.all_or_nothing = all_or_nothing
        self.errors: list[BillingError | None] = [None] * n
        self.rows: list[Any] = [None] * n
        self.claimed: dict[int, str] = {}  # row -> the key it claimed
        self.replays: dict[int, int] = {}  # row -> the id its key answered first
        self.aliases: dict[int, int] = {}  # row -> the earlier row with its key and input

    def fail(self, i: int, exc: BillingError) -> None:
        if self.errors[i] is None:
            self.errors[i] = exc

    def ok(self, i: int) -> bool:
        return self.errors[i] is None

    @property
    def any_failed(self) -> bool:
        return any(e is not None for e in self.errors)

    async def accounts(self, numbers: set[str]) -> dict[str, AccountForWrite]:
        """The named accounts, read without a lock (lock_accounts locks and checks them)."""
        rows = await self.db.fetch(ACCOUNTS_FOR_WRITE, self.tenant_id, sorted(numbers))
        return {
            r["account_number"]: AccountForWrite(
                id=r["id"],
                account_number=r["account_number"],
                currency=r["currency"],
                payment_term=r["payment_term"],
                partner_account=r["partner_account"],
                lock_timeout=r["lock_timeout"],
            )
            for r in rows
        }

    async def claim(self, live: list[int], keys: Sequence[RowKey | None]) -> list[int]:
        """Claim the keys of the live rows; returns the rows still to write (a replayed
        row, a row repeating an earlier row's key, a row whose key was used with another
        input are not)."""
        owner: dict[str, int] = {}
        hashes: dict[str, str] = {}
        for i in live:
            k = keys[i]
            if k is None:
                continue
            try:
                idempotency.check_key(k.key, ["idempotencyKey"])
            except BillingError as exc:
                self.fail(i, exc)
                continue
            first = owner.get(k.key)
            if first is None:
                owner[k.key] = i
                hashes[k.key] = k.request_hash
            elif hashes[k.key] == k.request_hash:
                self.aliases[i] = first
            else:
                self.fail(i, _reused(k.key))
        claims = await idempotency.claim_many(self.db, self.tenant_id, self.operation, hashes)
        for key, i in owner.items():
            if key in claims.reused:
                self.fail(i, _reused(key))
            elif key in claims.replayed:
                self.replays[i] = int(claims.replayed[key]["id"])
            else:
                self.claimed[i] = key
        return [i for i in live if self.ok(i) and i not in self.aliases and i not in self.replays]

    async def lock_accounts(self, accounts: list[AccountForWrite]) -> dict[int, bool]:
        """Lock the call's accounts once each: the ordinary ones' metrics locks (which
        every write on them takes, db.locks), then every account row FOR SHARE, both in
        ascending id order, the waits bounded by the tenant's lock wait. Returns the
        partner flag each account is written under."""
        if not accounts:
            return {}
        by_id = {a.id: a for a in accounts}
        ids = sorted(by_id)
        ordinary = [a for a in ids if not by_id[a].partner_account]
        await self.db.fetch("SELECT set_config('lock_timeout', $1, true)", accounts[0].lock_timeout)
        if ordinary:
            await self.db.fetch(LOCK_METRICS, ordinary)
        locked = await self.db.fetch(SHARE_ACCOUNTS, self.tenant_id, ids)
        # The tenant's lock wait bounds taking the contended locks, not the short waits of
        # the writes after them (db.locks.unbound_lock_waits).
        await self.db.fetch("SET LOCAL lock_timeout TO DEFAULT")
        partner: dict[int, bool] = {}
        for r in locked:
            a = by_id[r["id"]]
            if r["currency"] != a.currency or r["payment_term"] != a.payment_term:
                raise LockCompetition("An account changed while the call was written, please retry")
            partner[r["id"]] = bool(r["partner_account"])
        if len(partner) != len(ids):
            raise LockCompetition("An account changed while the call was written, please retry")
        return partner

    async def insert_numbered(
        self,
        kind: str,
        docs: list[D],
        insert: Callable[[list[D]], Awaitable[list[Any]]],
        number_field: str,
        label: str,
    ) -> list[tuple[D, Any]]:
        """Draw the generated numbers of ``docs`` at once and insert them (``insert``:
        one statement, ON CONFLICT DO NOTHING, returning rows with ``number_field``). A
        caller-given number already used fails its row (DUPLICATE); a generated one
        already used (a caller gave it earlier) is drawn again."""
        given: set[str] = set()
        for d in docs:
            if d.given is not None:
                d.number = d.given
                given.add(d.given)
        pending = docs
        done: list[tuple[D, Any]] = []
        for _ in range(WRITE_ATTEMPTS):
            fresh = [d for d in pending if d.given is None]
            drawn = await numbering.draw_numbers(self.db, self.tenant_id, kind, len(fresh))
            for d, number in zip(fresh, drawn, strict=True):
                d.number = number
            # A drawn number a row of this call gives is drawn again, never sent twice.
            sendable = [d for d in pending if d.given is not None or d.number not in given]
            sent = {d.index for d in sendable}
            got = {r[number_field]: r for r in await insert(sendable)} if sendable else {}
            retry: list[D] = []
            for d in pending:
                row = got.get(d.number) if d.index in sent else None
                if row is not None:
                    done.append((d, row))
                elif d.given is not None:
                    self.fail(
                        d.index,
                        Duplicate(
                            f"{label} number {d.given} is already used", [_camel(number_field)]
                        ),
                    )
                else:
                    retry.append(d)
            if not retry:
                done.sort(key=lambda pair: pair[0].index)
                return done
            pending = retry
        raise LockCompetition("Numbers kept colliding while the call was written, please retry")

    async def finish(
        self,
        written: dict[int, Any],
        fetch_replays: Callable[[list[int]], Awaitable[dict[int, Any]]],
    ) -> BulkOutcome:
        """Keys stored for the rows written, released for the claimed rows that failed;
        replays read; errors given their path from the call's input."""
        if self.all_or_nothing and self.any_failed:
            return self.rejected()
        await idempotency.store_ids(
            self.db,
            self.tenant_id,
            {key: int(written[i]["id"]) for i, key in self.claimed.items() if i in written},
        )
        await idempotency.release(
            self.db, self.tenant_id, [key for i, key in self.claimed.items() if i not in written]
        )
        for i, row in written.items():
            self.rows[i] = row
        if self.replays:
            found = await fetch_replays(sorted(set(self.replays.values())))
            for i, ident in self.replays.items():
                self.rows[i] = found.get(ident)
        for i, first in self.aliases.items():
            self.rows[i] = self.rows[first]
            if self.errors[first] is not None:
                self.errors[i] = self.errors[first]
        return BulkOutcome(self.rows, self.located_errors())

    def rejected(self) -> BulkOutcome:
        """Nothing is written: no row answers a document, the failed rows say why."""
        return BulkOutcome([None] * len(self.rows), self.located_errors(), rejected=True)

    def located_errors(self) -> list[BillingError | None]:
        return [
            None if e is None else located(e, [self.plural, str(i)])
            for i, e in enumerate(self.errors)
        ]


def located(exc: BillingError, path: list[str]) -> BillingError:
    """The same error, its field given as a path from the bulk call's input (``path`` is
    the row's: ``["invoices", "3"]``)."""
    return type(exc)(exc.message, [*path, *(exc.field or [])])


def _reused(key: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"idempotencyKey {key!r} was used with a different input", ["idempotencyKey"]
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _account_of(accounts: dict[str, AccountForWrite], number: str | None) -> AccountForWrite:
    account = accounts.get(number or "")
    if account is None:
        raise NotFound(f"Account {number} not found", ["accountNumber"])
    return account


async def _rows_by_id(db: Db, table: str, tenant_id: int, ids: list[int]) -> dict[int, Any]:
    """Documents by id (replays), each with its account's number and, for memos, the
    number of the invoice it was made from."""
    invoice_number = (
        "(SELECT i.invoice_number FROM invoice i WHERE i.id = d.invoice_id) AS invoice_number,"
        if table in ("credit_memo", "debit_memo")
        else ""
    )
    rows = await db.fetch(
        f"SELECT d.*, {invoice_number} a.account_number FROM {table} d "
        "JOIN account a ON a.id = d.account_id "
        "WHERE d.tenant_id = $1 AND d.id = ANY($2::bigint[])",
        tenant_id,
        ids,
    )
    return {r["id"]: dict(r) for r in rows}


# --------------------------------------------------------------------------- invoices


@dataclass(eq=False)
class _Invoice(_Doc):
    invoice_date: date = date.min
    due_date: date = date.min
    status: str = InvoiceStatus.DRAFT
    amount: Decimal = ZERO
    items: list[dict[str, Any]] = field(default_factory=list)


INSERT_INVOICES = """
INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, invoice_date, due_date,
                     status, amount, balance, source, posted_at)
SELECT $1::bigint, u.num, u.acc, u.cur, u.idate, u.ddate, u.st, u.amt, u.amt, 'STANDALONE',
       CASE WHEN u.st = 'POSTED' THEN now() END
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::date[], $6::date[], $7::text[],
            $8::numeric[]) WITH ORDINALITY AS u(num, acc, cur, idate, ddate, st, amt, n)
ORDER BY u.n
ON CONFLICT (tenant_id, invoice_number) DO NOTHING
RETURNING id, invoice_number, created_at
"""

INSERT_INVOICE_ITEMS = """
INSERT INTO invoice_item (tenant_id, invoice_id, charge_name, quantity, unit_price, amount,
                          service_start_date, service_end_date)
SELECT $1::bigint, u.inv, u.name, u.q, u.p, u.amt, u.ss, u.se
FROM unnest($2::bigint[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[], $7::date[],
            $8::date[]) WITH ORDINALITY AS u(inv, name, q, p, amt, ss, se, n)
ORDER BY u.n
"""


def _check_invoice(i: int, data: StandaloneInvoiceData, account: AccountForWrite) -> _Invoice:
    """One row, by the rules of a single standalone invoice."""
    inv = check_standalone_invoice(data, account)
    return _Invoice(
        index=i,
        account=account,
        given=inv.given_number,
        invoice_date=data.invoice_date,
        due_date=inv.due_date,
        status=data.status,
        amount=inv.amount,
        items=inv.items,
    )


async def create_standalone_invoices(
    db: Db,
    tenant_id: int,
    rows: Sequence[StandaloneInvoiceData],
    keys: Sequence[RowKey | None],
    *,
    all_or_nothing: bool,
) -> BulkOutcome:
    """Many standalone invoices, DRAFT or POSTED, in one transaction (the caller's): each
    as createStandaloneInvoice would write it, written set-based."""
    call = _Call(db, tenant_id, "invoices", "createStandaloneInvoice", len(rows), all_or_nothing)
    accounts = await call.accounts({r.account_number for r in rows})
    docs: dict[int, _Invoice] = {}
    given_at: dict[str, int] = {}
    for i, data in enumerate(rows):
        try:
            doc = _check_invoice(i, data, _account_of(accounts, data.account_number))
        except BillingError as exc:
            call.fail(i, exc)
            continue
        if doc.given is not None:
            if doc.given in given_at:
                call.fail(
                    i,
                    Duplicate(
                        f"Invoice number {doc.given} is given twice in this call "
                        f"(also in row {given_at[doc.given]})",
                        ["invoiceNumber"],
                    ),
                )
                continue
            given_at[doc.given] = i
        docs[i] = doc
    if all_or_nothing and call.any_failed:
        return call.rejected()
    live = await call.claim(sorted(docs), keys)
    todo = [docs[i] for i in live]
    partner = await call.lock_accounts(list({d.account.id: d.account for d in todo}.values()))

    async def insert(batch: list[_Invoice]) -> list[Any]:
        return await db.fetch(
            INSERT_INVOICES,
            tenant_id,
            [d.number for d in batch],
            [d.account.id for d in batch],
            [d.account.currency for d in batch],
            [d.invoice_date for d in batch],
            [d.due_date for d in batch],
            [d.status for d in batch],
            [d.amount for d in batch],
        )

    done = await call.insert_numbered("invoice", todo, insert, "invoice_number", "Invoice")
    if all_or_nothing and call.any_failed:
        return call.rejected()
    item_invoice: list[int] = []
    names: list[str] = []
    quantities: list[Decimal] = []
    prices: list[Decimal] = []
    amounts: list[Decimal] = []
    starts: list[date | None] = []
    ends: list[date | None] = []
    deltas: dict[int, CallDelta] = {}
    written: dict[int, Any] = {}
    for d, r in done:
        for it in d.items:
            item_invoice.append(r["id"])
            names.append(it["charge_name"])
            quantities.append(it["quantity"])
            prices.append(it["unit_price"])
            amounts.append(it["amount"])
            starts.append(it["service_start_date"])
            ends.append(it["service_end_date"])
        if d.status == InvoiceStatus.POSTED:
            deltas.setdefault(d.account.id, CallDelta()).post_invoice(d.amount, d.invoice_date)
        written[d.index] = {
            "id": r["id"],
            "invoice_number": r["invoice_number"],
            "account_id": d.account.id,
            "account_number": d.account.account_number,
            "currency": d.account.currency,
            "invoice_date": d.invoice_date,
            "due_date": d.due_date,
            "target_date": None,
            "status": d.status,
            "amount": d.amount,
            "balance": d.amount,
            "source": "STANDALONE",
            "created_at": r["created_at"],
        }
    if item_invoice:
        await db.fetch(
            INSERT_INVOICE_ITEMS,
            tenant_id,
            item_invoice,
            names,
            quantities,
            prices,
            amounts,
            starts,
            ends,
        )
    synced = await move_metrics_of_call(db, tenant_id, partner, deltas)
    outcome = await call.finish(written, lambda ids: _rows_by_id(db, "invoice", tenant_id, ids))
    outcome.synced_account_ids = synced
    return outcome


# --------------------------------------------------------------------------- payments


@dataclass(eq=False)
class _Payment(_Doc):
    amount: Decimal = ZERO
    effective_date: date = date.min
    method: str = ""
    reference: str | None = None
    # (kind, number, amount, field): what the row applies, in input order
    targets: list[tuple[str, str, Decimal, list[str]]] = field(default_factory=list)
    applied: Decimal = ZERO
    # (kind, target id, amount) once the targets are checked
    applications: list[tuple[str, int, Decimal]] = field(default_factory=list)


INSERT_PAYMENTS = """
INSERT INTO payment (tenant_id, payment_number, account_id, currency, amount, applied_amount,
                     effective_date, method, reference)
SELECT $1::bigint, u.num, u.acc, u.cur, u.amt, u.applied, u.eff, u.method, u.ref
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::numeric[], $6::numeric[], $7::date[],
            $8::text[], $9::text[]) WITH ORDINALITY
  AS u(num, acc, cur, amt, applied, eff, method, ref, n)
ORDER BY u.n
ON CONFLICT (tenant_id, payment_number) DO NOTHING
RETURNING *
"""

INSERT_APPLICATIONS = """
INSERT INTO application (tenant_id, payment_id, invoice_id, debit_memo_id, amount)
SELECT $1::bigint, u.p, u.i, u.d, u.amt
FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::numeric[]) WITH ORDINALITY
  AS u(p, i, d, amt, n)
ORDER BY u.n
"""

TARGET_SQL = {
    "invoice": (
        "SELECT id, invoice_number AS number, account_id, currency, status, balance "
        "FROM invoice WHERE tenant_id = $1 AND invoice_number = ANY($2::text[]) "
        "ORDER BY id FOR UPDATE"
    ),
    "debit_memo": (
        "SELECT id, memo_number AS number, account_id, currency, status, balance "
        "FROM debit_memo WHERE tenant_id = $1 AND memo_number = ANY($2::text[]) "
        "ORDER BY id FOR UPDATE"
    ),
}
LOWER_BALANCES = {
    kind: f"""
UPDATE {kind} t SET balance = t.balance - u.amt
FROM unnest($1::bigint[], $2::numeric[]) AS u(id, amt)
WHERE t.id = u.id
RETURNING t.id
"""
    for kind in ("invoice", "debit_memo")
}
TARGET_LABEL = {"invoice": "Invoice", "debit_memo": "Debit memo"}


def _check_payment(i: int, data: PaymentData, account: AccountForWrite) -> _Payment:
    """The checks of billing.payments.create_payment that need no target read."""
    currency = account.currency
    if data.currency is not None and data.currency.upper() != currency:
        raise CurrencyMismatch(
            f"Account {account.account_number} uses {currency}, not {data.currency}", ["currency"]
        )
    if data.method not in METHODS:
        raise ValidationFailed(f"Unknown payment method {data.method!r}", ["method"])
    doc = _Payment(
        index=i,
        account=account,
        amount=check_amount(data.amount, currency, ["amount"]),
        effective_date=data.effective_date,
        method=data.method,
        reference=data.reference,
    )
    for kind, plural, items in (
        ("invoice", "invoices", data.invoices),
        ("debit_memo", "debitMemos", data.debit_memos),
    ):
        for n, item in enumerate(items):
            where = [plural, str(n)]
            amount = check_amount(item.amount, currency, [*where, "amount"])
            doc.targets.append((kind, item.number, amount, where))
    return doc


def _apply_targets(
    doc: _Payment, found: dict[tuple[str, str], Any], open_: dict[tuple[str, int], Decimal]
) -> None:
    """Check one payment's applications against the locked targets, whose open balances
    ``open_`` already lowered by the rows before it; lower them by this one's."""
    wanted: dict[tuple[str, str], Decimal] = {}
    where: dict[tuple[str, str], list[str]] = {}
    for kind, number, amount, f in doc.targets:
        wanted[(kind, number)] = wanted.get((kind, number), ZERO) + amount
        where.setdefault((kind, number), f)
    applications: list[tuple[str, int, Decimal]] = []
    for (kind, number), amount in wanted.items():
        f = where[(kind, number)]
        label = TARGET_LABEL[kind]
        row = found.get((kind, number))
        if row is None:
            raise NotFound(f"{label} {number} not found", f)
        if row["account_id"] != doc.account.id:
            raise ValidationFailed(f"{label} {number} belongs to another account", f)
        if row["currency"] != doc.account.currency:
            raise CurrencyMismatch(f"{label} {number} is in {row['currency']}", f)
        if row["status"] != InvoiceStatus.POSTED:
            raise InvalidState(
                f"{label} {number} is {row['status']}; only POSTED documents take applications", f
            )
        balance = open_[(kind, row["id"])]
        if amount > balance:
            raise AmountExceedsOpenBalance(
                f"{amount} exceeds the open balance {balance} of {label.lower()} {number}",
                [*f, "amount"],
            )
        applications.append((kind, row["id"], amount))
    applied = sum((a for _, _, a in applications), ZERO)
    if applied > doc.amount:
        raise AmountExceedsUnapplied(
            f"Applications total {applied}, more than the payment's {doc.amount}", ["amount"]
        )
    for kind, ident, amount in applications:
        open_[(kind, ident)] -= amount
    doc.applications = applications
    doc.applied = applied


async def create_payments(
    db: Db,
    tenant_id: int,
    rows: Sequence[PaymentData],
    keys: Sequence[RowKey | None],
    *,
    all_or_nothing: bool,
) -> BulkOutcome:
    """Many processed payments, each applied to invoices and debit memos, unapplied, or
    both, as createPayment would write it, in one transaction (the caller's), set-based:
    the targets of the whole call are locked at once (ascending id, after the accounts)
    and checked in input order, so two rows paying one invoice never take it below zero."""
    call = _Call(db, tenant_id, "payments", "createPayment", len(rows), all_or_nothing)
    accounts = await call.accounts({r.account_number for r in rows})
    docs: dict[int, _Payment] = {}
    for i, data in enumerate(rows):
        try:
            docs[i] = _check_payment(i, data, _account_of(accounts, data.account_number))
        except BillingError as exc:
            call.fail(i, exc)
    if all_or_nothing and call.any_failed:
        return call.rejected()
    live = await call.claim(sorted(docs), keys)
    todo = [docs[i] for i in live]
    partner = await call.lock_accounts(list({d.account.id: d.account for d in todo}.values()))
    found: dict[tuple[str, str], Any] = {}
    open_: dict[tuple[str, int], Decimal] = {}
    for kind in ("invoice", "debit_memo"):
        numbers = sorted({t[1] for d in todo for t in d.targets if t[0] == kind})
        if numbers:
            for r in await db.fetch(TARGET_SQL[kind], tenant_id, numbers):
                found[(kind, r["number"])] = r
                open_[(kind, r["id"])] = r["balance"]
    ready: list[_Payment] = []
    for d in todo:
        try:
            _apply_targets(d, found, open_)
        except BillingError as exc:
            call.fail(d.index, exc)
            continue
        ready.append(d)
    if all_or_nothing and call.any_failed:
        return call.rejected()

    async def insert(batch: list[_Payment]) -> list[Any]:
        return await db.fetch(
            INSERT_PAYMENTS,
            tenant_id,
            [d.number for d in batch],
            [d.account.id for d in batch],
            [d.account.currency for d in batch],
            [d.amount for d in batch],
            [d.applied for d in batch],
            [d.effective_date for d in batch],
            [d.method for d in batch],
            [d.reference for d in batch],
        )

    done = await call.insert_numbered("payment", ready, insert, "payment_number", "Payment")
    deltas: dict[int, CallDelta] = {}
    written: dict[int, Any] = {}
    app_payment: list[int] = []
    app_invoice: list[int | None] = []
    app_debit: list[int | None] = []
    app_amount: list[Decimal] = []
    lowered: dict[str, dict[int, Decimal]] = {"invoice": {}, "debit_memo": {}}
    for d, r in done:
        delta = deltas.setdefault(d.account.id, CallDelta())
        delta.unapplied_payment += d.amount - d.applied
        for kind, ident, amount in d.applications:
            app_payment.append(r["id"])
            app_invoice.append(ident if kind == "invoice" else None)
            app_debit.append(ident if kind == "debit_memo" else None)
            app_amount.append(amount)
            lowered[kind][ident] = lowered[kind].get(ident, ZERO) + amount
            if kind == "invoice":
                delta.invoice_balance -= amount
            else:
                delta.debit_memo_balance -= amount
        written[d.index] = {**r, "account_number": d.account.account_number}
    if app_payment:
        await db.fetch(
            INSERT_APPLICATIONS, tenant_id, app_payment, app_invoice, app_debit, app_amount
        )
    for kind, by_id in lowered.items():
        if by_id:
            ids = sorted(by_id)
            await db.fetch(LOWER_BALANCES[kind], ids, [by_id[t] for t in ids])
    synced = await move_metrics_of_call(db, tenant_id, partner, deltas)
    outcome = await call.finish(written, lambda ids: _rows_by_id(db, "payment", tenant_id, ids))
    outcome.synced_account_ids = synced
    return outcome


# --------------------------------------------------------------------------- memos


@dataclass(eq=False)
class _Memo(_Doc):
    invoice_id: int | None = None
    invoice_number: str | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    total: Decimal = ZERO
    memo_date: date = date.min
    status: str = MemoStatus.DRAFT
    reason_code: str | None = None


SOURCE_INVOICES = """
SELECT i.id, i.invoice_number, i.status, a.account_number
FROM invoice i JOIN account a ON a.id = i.account_id
WHERE i.tenant_id = $1 AND i.invoice_number = ANY($2::text[])
"""

LOCK_SOURCE_INVOICES = """
SELECT i.id, i.invoice_number, i.status, i.amount,
       (SELECT coalesce(sum(c.amount), 0) FROM credit_memo c
        WHERE c.invoice_id = i.id AND c.status <> 'CANCELED') AS credited
FROM invoice i
WHERE i.tenant_id = $1 AND i.id = ANY($2::bigint[])
ORDER BY i.id
FOR UPDATE OF i
"""

INSERT_MEMOS = {
    MemoKind.CREDIT_MEMO: """
INSERT INTO credit_memo (tenant_id, memo_number, account_id, currency, invoice_id, memo_date,
                         status, amount, reason_code)
SELECT $1::bigint, u.num, u.acc, u.cur, u.inv, u.mdate, u.st, u.amt, u.reason
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::date[], $7::date[],
            $8::text[], $9::numeric[], $10::text[]) WITH ORDINALITY
  AS u(num, acc, cur, inv, mdate, due, st, amt, reason, n)
ORDER BY u.n
ON CONFLICT (tenant_id, memo_number) DO NOTHING
RETURNING *
""",
    MemoKind.DEBIT_MEMO: """
INSERT INTO debit_memo (tenant_id, memo_number, account_id, currency, invoice_id, memo_date,
                        due_date, status, amount, balance, reason_code)
SELECT $1::bigint, u.num, u.acc, u.cur, u.inv, u.mdate, u.due, u.st, u.amt, u.amt, u.reason
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::date[], $7::date[],
            $8::text[], $9::numeric[], $10::text[]) WITH ORDINALITY
  AS u(num, acc, cur, inv, mdate, due, st, amt, reason, n)
ORDER BY u.n
ON CONFLICT (tenant_id, memo_number) DO NOTHING
RETURNING *
""",
}

INSERT_MEMO_ITEMS = """
INSERT INTO memo_item (tenant_id, memo_type, memo_id, charge_name, quantity, unit_price, amount)
SELECT $1::bigint, $2::text, u.memo, u.name, u.q, u.p, u.amt
FROM unnest($3::bigint[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[])
  WITH ORDINALITY AS u(memo, name, q, p, amt, n)
ORDER BY u.n
"""

MEMO_LABEL = {MemoKind.CREDIT_MEMO: "Credit memo", MemoKind.DEBIT_MEMO: "Debit memo"}
MEMO_OPERATION = {MemoKind.CREDIT_MEMO: "createCreditMemo", MemoKind.DEBIT_MEMO: "createDebitMemo"}
MEMO_PLURAL = {MemoKind.CREDIT_MEMO: "creditMemos", MemoKind.DEBIT_MEMO: "debitMemos"}
DEFAULT_LINE = {MemoKind.CREDIT_MEMO: "Credit", MemoKind.DEBIT_MEMO: "Charge"}


def _not_posted(number: str, status: str) -> InvalidState:
    return InvalidState(
        f"Invoice {number} is {status}; memos are made from POSTED invoices", ["invoiceNumber"]
    )


async def create_memos(
    db: Db,
    tenant_id: int,
    kind: MemoKind,
    rows: Sequence[MemoData],
    keys: Sequence[RowKey | None],
    *,
    all_or_nothing: bool,
) -> BulkOutcome:
    """Many credit or debit memos (``kind``), each from a posted invoice or on an account,
    DRAFT or (autoPost) POSTED, as createCreditMemo / createDebitMemo would write it, in
    one transaction (the caller's), set-based. A credit memo from an invoice never takes
    more than the invoice's amount less what earlier credit memos took, this call's rows
    before it included."""
    call = _Call(db, tenant_id, MEMO_PLURAL[kind], MEMO_OPERATION[kind], len(rows), all_or_nothing)
    wanted_invoices = sorted({r.invoice_number for r in rows if r.invoice_number is not None})
    sources = (
        {
            r["invoice_number"]: r
            for r in await db.fetch(SOURCE_INVOICES, tenant_id, wanted_invoices)
        }
        if wanted_invoices
        else {}
    )
    numbers = {r.account_number for r in rows if r.account_number is not None}
    numbers |= {s["account_number"] for s in sources.values()}
    accounts = await call.accounts(numbers)
    docs: dict[int, _Memo] = {}
    today = date.today()
    for i, data in enumerate(rows):
        try:
            if (data.account_number is None) == (data.invoice_number is None):
                raise ValidationFailed(
                    "Give exactly one of accountNumber and invoiceNumber", ["accountNumber"]
                )
            invoice_id = None
            if data.invoice_number is not None:
                source = sources.get(data.invoice_number)
                if source is None:
                    raise NotFound(f"Invoice {data.invoice_number} not found", ["invoiceNumber"])
                if source["status"] != InvoiceStatus.POSTED:
                    raise _not_posted(data.invoice_number, source["status"])
                invoice_id = source["id"]
                account = _account_of(accounts, source["account_number"])
            else:
                account = _account_of(accounts, data.account_number)
            lines = memo_lines(data, account.currency, data.reason_code or DEFAULT_LINE[kind])
        except BillingError as exc:
            call.fail(i, exc)
            continue
        docs[i] = _Memo(
            index=i,
            account=account,
            invoice_id=invoice_id,
            invoice_number=data.invoice_number,
            lines=lines,
            total=sum((ln["amount"] for ln in lines), ZERO),
            memo_date=data.memo_date or today,
            status=MemoStatus.POSTED if data.auto_post else MemoStatus.DRAFT,
            reason_code=data.reason_code,
        )
    if all_or_nothing and call.any_failed:
        return call.rejected()
    live = await call.claim(sorted(docs), keys)
    todo = [docs[i] for i in live]
    partner = await call.lock_accounts(list({d.account.id: d.account for d in todo}.values()))
    source_ids = sorted({d.invoice_id for d in todo if d.invoice_id is not None})
    locked = (
        {r["id"]: r for r in await db.fetch(LOCK_SOURCE_INVOICES, tenant_id, source_ids)}
        if source_ids
        else {}
    )
    credited = {ident: r["credited"] for ident, r in locked.items()}
    ready: list[_Memo] = []
    for d in todo:
        if d.invoice_id is not None:
            src = locked[d.invoice_id]
            if src["status"] != InvoiceStatus.POSTED:
                call.fail(d.index, _not_posted(src["invoice_number"], src["status"]))
                continue
            if kind == MemoKind.CREDIT_MEMO:
                room = src["amount"] - credited[d.invoice_id]
                if d.total > room:
                    call.fail(
                        d.index,
                        AmountExceedsOpenBalance(
                            f"{d.total} exceeds what invoice {src['invoice_number']} "
                            f"has left to credit ({room})",
                            ["amount"],
                        ),
                    )
                    continue
                credited[d.invoice_id] += d.total
        ready.append(d)
    if all_or_nothing and call.any_failed:
        return call.rejected()

    async def insert(batch: list[_Memo]) -> list[Any]:
        return await db.fetch(
            INSERT_MEMOS[kind],
            tenant_id,
            [d.number for d in batch],
            [d.account.id for d in batch],
            [d.account.currency for d in batch],
            [d.invoice_id for d in batch],
            [d.memo_date for d in batch],
            [due_date_for(d.memo_date, d.account.payment_term) for d in batch],
            [d.status for d in batch],
            [d.total for d in batch],
            [d.reason_code for d in batch],
        )

    done = await call.insert_numbered(str(kind), ready, insert, "memo_number", MEMO_LABEL[kind])
    deltas: dict[int, CallDelta] = {}
    written: dict[int, Any] = {}
    item_memo: list[int] = []
    names: list[str] = []
    quantities: list[Decimal] = []
    prices: list[Decimal] = []
    amounts: list[Decimal] = []
    for d, r in done:
        for ln in d.lines:
            item_memo.append(r["id"])
            names.append(ln["charge_name"])
            quantities.append(ln["quantity"])
            prices.append(ln["unit_price"])
            amounts.append(ln["amount"])
        if d.status == MemoStatus.POSTED:
            delta = deltas.setdefault(d.account.id, CallDelta())
            if kind == MemoKind.CREDIT_MEMO:
                delta.unapplied_credit_memo += d.total
            else:
                delta.debit_memo_balance += d.total
        written[d.index] = {
            **r,
            "account_number": d.account.account_number,
            "invoice_number": d.invoice_number,
        }
    if item_memo:
        await db.fetch(
            INSERT_MEMO_ITEMS, tenant_id, str(kind), item_memo, names, quantities, prices, amounts
        )
    synced = await move_metrics_of_call(db, tenant_id, partner, deltas)
    outcome = await call.finish(written, lambda ids: _rows_by_id(db, str(kind), tenant_id, ids))
    outcome.synced_account_ids = synced
    return outcome

"""Account metrics: synchronous for ordinary accounts, deferred for partner accounts.

Every metric-moving operation hands its deltas to a :class:`MetricsWriter`:

* ordinary account: the writer takes the account's advisory lock with the tenant's
  bounded wait (``lock_timeout``), and the deltas land in ``account_metrics`` in the
  operation's own transaction;
* partner account: no account lock and no metrics row is touched; the deltas are
  appended to ``metrics_change``, which concurrent writers never contend on.

The refresh folds ``metrics_change`` into ``account_metrics`` in short transactions of up
to 500 accounts, each claimed by locking its metrics row (FOR UPDATE SKIP LOCKED), with
DELETE ... RETURNING, so a change that commits while a refresh runs stays in the ledger for
the next one. The fold itself has one home, the SQL function ``pb_fold_metrics`` (migration
0008): the tenant refresh (``pb_refresh_accounts``), refreshAccountMetrics and the switch
back to an ordinary account (``pb_fold_account_metrics``) all call it; this module only
calls them.
:func:`recompute` is the from-scratch definition every path must equal.

Every change of stored metrics is noted on the session (:func:`note_metrics_updated`), so
that whoever commits can announce it afterwards (:func:`take_metrics_updates`); this
module never announces anything itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from billing.dbutil import db_errors, is_transient
from billing.errors import NotFound
from db.locks import (
    NS_ACCOUNT_METRICS,
    NS_ACCOUNT_MODE,
    bound_lock_waits,
    key_of,
    unbound_lock_waits,
)
from db.models import MetricsChange, table_of
from db.statuses import MetricsUpdateReason

ZERO = Decimal(0)
metrics_change_t = table_of(MetricsChange)

SYNC = MetricsUpdateReason.SYNC
REFRESH = MetricsUpdateReason.REFRESH
_UPDATED = "partnerbill.metrics_updated"

DELTA_FIELDS = (
    "invoice_balance",
    "debit_memo_balance",
    "unapplied_payment",
    "unapplied_credit_memo",
    "contracted_mrr",
)


#: What an ordinary account's metrics UPDATE returns for its event (``m`` is the row).
SYNCED_RETURNING = "m.account_id, m.tenant_id, pb_metrics_json(m) AS metrics"


def metrics_changed_event(synced: str) -> str:
    """The one rule for ACCOUNT_METRICS_CHANGED: an INSERT appending one event per ordinary
    account whose metrics an UPDATE (returning SYNCED_RETURNING as ``synced``) moved, with the
    new values, in the writing statement itself (an append-only insert: no lock any other
    writer waits for). The refresh's events are written by the fold (pb_fold_metrics)."""
    return (
        "INSERT INTO event (tenant_id, type, account_id, data) "
        f"SELECT s.tenant_id, 'ACCOUNT_METRICS_CHANGED', s.account_id, s.metrics FROM {synced} s "
        "WHERE pb_events_on()"
    )


@dataclass
class Metrics:
    """The metric values of one account (balance and creditBalance are derived)."""

    total_invoice_balance: Decimal = ZERO
    total_debit_memo_balance: Decimal = ZERO
    unapplied_payment_amount: Decimal = ZERO
    unapplied_credit_memo_amount: Decimal = ZERO
    contracted_mrr: Decimal = ZERO
    last_invoice_date: date | None = None
    last_metrics_update: datetime | None = None

    @property
    def balance(self) -> Decimal:
        return (
            self.total_invoice_balance
            + self.total_debit_memo_balance
            - self.unapplied_payment_amount
            - self.unapplied_credit_memo_amount
        )

    @property
    def credit_balance(self) -> Decimal:
        return ZERO

    def values(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal, date | None]:
        """Everything but the timestamp, normalised for comparison."""
        return (
            self.total_invoice_balance.normalize() + 0,
            self.total_debit_memo_balance.normalize() + 0,
            self.unapplied_payment_amount.normalize() + 0,
            self.unapplied_credit_memo_amount.normalize() + 0,
            self.contracted_mrr.normalize() + 0,
            self.last_invoice_date,
        )


@dataclass
class Delta:
    invoice_balance: Decimal = ZERO
    debit_memo_balance: Decimal = ZERO
    unapplied_payment: Decimal = ZERO
    unapplied_credit_memo: Decimal = ZERO
    contracted_mrr: Decimal = ZERO
    invoice_dates: bool = False  # lastInvoiceDate must be re-derived

    def is_zero(self) -> bool:
        return not self.invoice_dates and all(getattr(self, f) == 0 for f in DELTA_FIELDS)


@dataclass
class MetricsWriter:
    """Collects the metric deltas of one operation and writes them the account's way."""

    session: AsyncSession
    tenant_id: int
    partner: dict[int, bool] = field(default_factory=dict)
    deltas: dict[int, Delta] = field(default_factory=dict)

    async def lock(self, *account_ids: int) -> None:
        """Take what each account needs before the operation writes anything.

        Ordinary: the exclusive account lock, waiting at most the tenant's lock wait
        (then LOCK_COMPETITION). Partner: only a shared mode lock, which no other
        writer contends on and which keeps partnerAccount from flipping mid-write.
        Ids are locked in ascending order so two operations never deadlock.
        """
        todo = sorted({a for a in account_ids if a not in self.partner})
        if not todo:
            return
        async with db_errors():
            await bound_lock_waits(self.session, self.tenant_id)
            for account_id in todo:
                await self.session.execute(
                    text("SELECT pg_advisory_xact_lock_shared(:ns, :k)"),
                    {"ns": NS_ACCOUNT_MODE, "k": key_of(account_id)},
                )
                is_partner = (
                    await self.session.execute(
                        text(
                            "SELECT partner_account FROM account WHERE id = :a AND tenant_id = :t"
                        ),
                        {"a": account_id, "t": self.tenant_id},
                    )
                ).scalar_one_or_none()
                if is_partner is None:
                    raise NotFound(f"Account {account_id} not found")
                if not is_partner:
                    await self.session.execute(
                        text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                        {"ns": NS_ACCOUNT_METRICS, "k": key_of(account_id)},
                    )
                    # One-statement writes (metrics_ctes) take only this row's lock: hold
                    # it too, so what this operation reads next includes their commits.
                    await self.session.execute(
                        text("SELECT 1 FROM account_metrics WHERE account_id = :a FOR UPDATE"),
                        {"a": account_id},
                    )
                self.partner[account_id] = bool(is_partner)
            await unbound_lock_waits(self.session)

    def add(
        self,
        account_id: int,
        *,
        invoice_balance: Decimal = ZERO,
        debit_memo_balance: Decimal = ZERO,
        unapplied_payment: Decimal = ZERO,
        unapplied_credit_memo: Decimal = ZERO,
        contracted_mrr: Decimal = ZERO,
        invoice_dates: bool = False,
    ) -> None:
        """Accumulate a change of the account's metrics (lock the account first)."""
        if account_id not in self.partner:
            raise RuntimeError("MetricsWriter.add before lock: the account lock comes first")
        d = self.deltas.setdefault(account_id, Delta())
        d.invoice_balance += invoice_balance
        d.debit_memo_balance += debit_memo_balance
        d.unapplied_payment += unapplied_payment
        d.unapplied_credit_memo += unapplied_credit_memo
        d.contracted_mrr += contracted_mrr
        d.invoice_dates = d.invoice_dates or invoice_dates

    async def flush(self) -> None:
        """Write the collected deltas: metrics rows for ordinary accounts, the ledger for
        partners."""
        ledger = []
        for account_id, d in sorted(self.deltas.items()):
            if d.is_zero():
                continue
            if self.partner[account_id]:
                ledger.append(
                    {
                        "tenant_id": self.tenant_id,
                        "account_id": account_id,
                        "d_invoice_balance": d.invoice_balance,
                        "d_debit_memo_balance": d.debit_memo_balance,
                        "d_unapplied_payment": d.unapplied_payment,
                        "d_unapplied_credit_memo": d.unapplied_credit_memo,
                        "d_contracted_mrr": d.contracted_mrr,
                    }
                )
            else:
                await self.session.execute(
                    text(
                        """
                        WITH synced AS (
                        UPDATE account_metrics m SET
                          total_invoice_balance = total_invoice_balance + :ib,
                          total_debit_memo_balance = total_debit_memo_balance + :dm,
                          unapplied_payment_amount = unapplied_payment_amount + :up,
                          unapplied_credit_memo_amount = unapplied_credit_memo_amount + :cm,
                          contracted_mrr = contracted_mrr + :mrr,
                          last_invoice_date = CASE WHEN :dates THEN (
                              SELECT max(invoice_date) FROM invoice
                              WHERE account_id = :a AND status = 'POSTED')
                            ELSE last_invoice_date END,
                          -- Taken under the row lock, never earlier than the last stamp: a
                          -- transaction that started earlier but got the lock later must
                          -- not move the stamp backwards (now() is the transaction start).
                          last_metrics_update = GREATEST(last_metrics_update, clock_timestamp())
                        WHERE account_id = :a
                        RETURNING """
                        + SYNCED_RETURNING
                        + ") "
                        + metrics_changed_event("synced")
                    ),
                    {
                        "a": account_id,
                        "ib": d.invoice_balance,
                        "dm": d.debit_memo_balance,
                        "up": d.unapplied_payment,
                        "cm": d.unapplied_credit_memo,
                        "mrr": d.contracted_mrr,
                        "dates": d.invoice_dates,
                    },
                )
                note_metrics_updated(self.session, self.tenant_id, [account_id], SYNC)
        if ledger:
            # Refused up front: a change that would take a partner account's stored totals
            # past their columns raises numeric_value_out_of_range here, as it does in the
            # ordinary account's UPDATE above (the API answers VALIDATION).
            await self.session.execute(
                text(
                    "SELECT pb_check_totals(a, ib, dm, up, cm, mrr) FROM unnest("
                    "CAST(:a AS bigint[]), CAST(:ib AS numeric[]), CAST(:dm AS numeric[]), "
                    "CAST(:up AS numeric[]), CAST(:cm AS numeric[]), CAST(:mrr AS numeric[])"
                    ") AS d(a, ib, dm, up, cm, mrr)"
                ),
                {
                    k: [r[col] for r in ledger]
                    for k, col in (
                        ("a", "account_id"),
                        ("ib", "d_invoice_balance"),
                        ("dm", "d_debit_memo_balance"),
                        ("up", "d_unapplied_payment"),
                        ("cm", "d_unapplied_credit_memo"),
                        ("mrr", "d_contracted_mrr"),
                    )
                },
            )
            await self.session.execute(insert(metrics_change_t), ledger)
        self.deltas.clear()


def note_metrics_updated(
    session: AsyncSession, tenant_id: int, account_ids: list[int], reason: str
) -> None:
    """Remember that this transaction changed these accounts' stored metrics, so the
    committer can announce it once the transaction is committed (never before)."""
    noted: dict[tuple[int, int], str] = session.info.setdefault(_UPDATED, {})
    for account_id in account_ids:
        noted[(tenant_id, int(account_id))] = reason


def take_metrics_updates(session: AsyncSession) -> dict[tuple[int, str], list[int]]:
    """The accounts noted on the session, as {(tenant, reason): account ids}, forgotten
    once taken. Call it after the commit; a rolled-back session's notes are dropped with it."""
    noted: dict[tuple[int, int], str] = session.info.pop(_UPDATED, None) or {}
    out: dict[tuple[int, str], list[int]] = {}
    for (tenant_id, account_id), reason in noted.items():
        out.setdefault((tenant_id, reason), []).append(account_id)
    return out


# --------------------------------------------------------------------------- one-statement writes


def metrics_ctes(
    *,
    account: str = "acc",
    document: str,
    when: str = "TRUE",
    invoice_balance: str = "0",
    unapplied_payment: str = "0",
    contracted_mrr: str = "0",
    posted_invoice_date: str | None = None,
) -> str:
    """The metric rule of a one-statement write (the MetricsWriter of the hot paths), as two
    CTEs, ``metrics_ledger`` and ``metrics_sync``, to follow the write's own CTEs.

    ``account`` names a CTE of (id, tenant_id, partner_account) that locked the account rows
    FOR SHARE (billing.accounts.locked_accounts_cte), so partner_account is the flag the write
    commits under. ``document`` names the CTE of the written rows: nothing moves when the write
    wrote nothing. The deltas are SQL expressions over parameters and the account CTE's
    columns (as ``m_a``); ``when`` is a condition for moving anything at all.

    Partner account: one ledger row, and no lock on anything another writer needs. Ordinary
    account: the metrics row moves in the same statement; its row lock orders concurrent
    writers (a wait ends after the statement's lock_timeout: LOCK_COMPETITION). A posted
    invoice can only raise lastInvoiceDate, so GREATEST keeps it exact without reading
    invoices (which a statement that waited for the lock could not see anyway). The stamp is
    the clock once the account's lock is held, never earlier than the one it replaces, so it
    never moves backwards under a burst of writes. An ordinary account's move appends its
    ACCOUNT_METRICS_CHANGED event (``metrics_event``) in the same statement.

    The move is an INSERT ... ON CONFLICT DO UPDATE on the metrics row every account has
    (its insert never happens), not an UPDATE. Both add the deltas to the newest committed
    row, but an UPDATE that finds the row changed since its statement began (always, for the
    writers queued on one account) re-checks it with EvalPlanQual, which starts a second
    executor for every CTE of the statement; ON CONFLICT locks the newest row and updates it
    directly (READ COMMITTED; tests/test_one_statement_writes.py races the writers).
    """
    last_invoice = (
        "last_invoice_date = GREATEST(m.last_invoice_date, EXCLUDED.last_invoice_date),"
        if posted_invoice_date
        else ""
    )
    return f"""
metrics_ledger AS (
  INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance, d_unapplied_payment,
                              d_contracted_mrr)
  SELECT m_a.tenant_id, m_a.id, {invoice_balance}, {unapplied_payment}, {contracted_mrr}
  FROM {account} m_a
  WHERE m_a.partner_account AND ({when}) AND EXISTS (SELECT 1 FROM {document})
    AND ({invoice_balance} <> 0 OR {unapplied_payment} <> 0 OR {contracted_mrr} <> 0)
    AND pb_check_totals(m_a.id, {invoice_balance}, 0, {unapplied_payment}, 0, {contracted_mrr})
  RETURNING account_id
),
metrics_sync AS (
  INSERT INTO account_metrics AS m (account_id, tenant_id, total_invoice_balance,
                                    unapplied_payment_amount, contracted_mrr, last_invoice_date,
                                    last_metrics_update)
  SELECT m_a.id, m_a.tenant_id, {invoice_balance}, {unapplied_payment}, {contracted_mrr},
         {posted_invoice_date or "NULL"}, clock_timestamp()
  FROM {account} m_a
  WHERE NOT m_a.partner_account AND ({when}) AND EXISTS (SELECT 1 FROM {document})
    AND ({invoice_balance} <> 0 OR {unapplied_payment} <> 0 OR {contracted_mrr} <> 0
         OR {posted_invoice_date or "NULL"} IS NOT NULL)
  ON CONFLICT (account_id) DO UPDATE SET
    total_invoice_balance = m.total_invoice_balance + EXCLUDED.total_invoice_balance,
    unapplied_payment_amount = m.unapplied_payment_amount + EXCLUDED.unapplied_payment_amount,
    contracted_mrr = m.contracted_mrr + EXCLUDED.contracted_mrr,
    {last_invoice}
    last_metrics_update = GREATEST(m.last_metrics_update, EXCLUDED.last_metrics_update)
  RETURNING {SYNCED_RETURNING}
),
metrics_event AS ({metrics_changed_event("metrics_sync")})"""


@dataclass(frozen=True)
class Written:
    """What a one-statement write wrote: its row, and the ordinary accounts whose metrics
    moved with it (the committer announces those after the commit)."""

    row: Any
    synced_account_ids: list[int]


def written(db: object, tenant_id: int, row: Any, synced: list[int]) -> Written:
    """The result of a one-statement write; when it ran inside a session's transaction, the
    ordinary accounts whose metrics it moved are noted on the session for its committer."""
    if synced and isinstance(db, AsyncSession):
        note_metrics_updated(db, tenant_id, synced, SYNC)
    return Written(row, synced)


@dataclass
class CallDelta:
    """What a bulk call moves on one account: the summed deltas of its documents and the
    latest invoice date it posted (None when it posted no invoice)."""

    invoice_balance: Decimal = ZERO
    debit_memo_balance: Decimal = ZERO
    unapplied_payment: Decimal = ZERO
    unapplied_credit_memo: Decimal = ZERO
    last_invoice_date: date | None = None

    def post_invoice(self, amount: Decimal, invoice_date: date) -> None:
        """A posted invoice: its balance joins, its date may be the latest."""
        self.invoice_balance += amount
        if self.last_invoice_date is None or invoice_date > self.last_invoice_date:
            self.last_invoice_date = invoice_date

    def moves(self) -> bool:
        return self.last_invoice_date is not None or any(
            v != 0
            for v in (
                self.invoice_balance,
                self.debit_memo_balance,
                self.unapplied_payment,
                self.unapplied_credit_memo,
            )
        )


SYNC_MANY = f"""
WITH synced AS (
UPDATE account_metrics m SET
  total_invoice_balance = m.total_invoice_balance + d.ib,
  total_debit_memo_balance = m.total_debit_memo_balance + d.dm,
  unapplied_payment_amount = m.unapplied_payment_amount + d.up,
  unapplied_credit_memo_amount = m.unapplied_credit_memo_amount + d.cm,
  last_invoice_date = GREATEST(m.last_invoice_date, d.lid),
  last_metrics_update = GREATEST(m.last_metrics_update, clock_timestamp())
FROM unnest($1::bigint[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],
            $6::date[]) AS d(a, ib, dm, up, cm, lid)
WHERE m.account_id = d.a
RETURNING {SYNCED_RETURNING}
),
metrics_event AS ({metrics_changed_event("synced")})
SELECT account_id FROM synced
"""

LEDGER_MANY = """
INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance, d_debit_memo_balance,
                            d_unapplied_payment, d_unapplied_credit_memo)
SELECT $1::bigint, d.a, d.ib, d.dm, d.up, d.cm
FROM unnest($2::bigint[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[])
  AS d(a, ib, dm, up, cm)
WHERE pb_check_totals(d.a, d.ib, d.dm, d.up, d.cm, 0)
RETURNING account_id
"""


async def move_metrics_of_call(
    db: Any, tenant_id: int, partner: dict[int, bool], deltas: dict[int, CallDelta]
) -> list[int]:
    """The metric rule of a bulk call (the MetricsWriter of many documents): each partner
    account gets ONE ledger row with the call's summed deltas; each ordinary account's
    metrics row moves once, in one statement for all of them (the caller holds their
    metrics locks, db.locks). Returns the ordinary accounts whose metrics moved."""
    moving = sorted(a for a, d in deltas.items() if d.moves())
    ledger = [a for a in moving if partner[a]]
    synced = [a for a in moving if not partner[a]]
    if ledger:
        await db.fetch(
            LEDGER_MANY,
            tenant_id,
            ledger,
            [deltas[a].invoice_balance for a in ledger],
            [deltas[a].debit_memo_balance for a in ledger],
            [deltas[a].unapplied_payment for a in ledger],
            [deltas[a].unapplied_credit_memo for a in ledger],
        )
    if synced:
        await db.fetch(
            SYNC_MANY,
            synced,
            [deltas[a].invoice_balance for a in synced],
            [deltas[a].debit_memo_balance for a in synced],
            [deltas[a].unapplied_payment for a in synced],
            [deltas[a].unapplied_credit_memo for a in synced],
            [deltas[a].last_invoice_date for a in synced],
        )
    return synced


# --------------------------------------------------------------------------- reading


async def stored_metrics(session: AsyncSession, account_id: int) -> Metrics:
    """The metrics as stored (for partner accounts: as of lastMetricsUpdate)."""
    row = (
        (
            await session.execute(
                text("SELECT * FROM account_metrics WHERE account_id = :a"), {"a": account_id}
            )
        )
        .mappings()
        .one()
    )
    return metrics_of(row)


async def stored_metrics_by_account(
    session: AsyncSession, tenant_id: int, account_ids: list[int]
) -> dict[int, Metrics]:
    """The stored metrics of the tenant's accounts among ``account_ids`` (others are left out)."""
    if not account_ids:
        return {}
    res = await session.execute(
        text("SELECT * FROM account_metrics WHERE account_id = ANY(:ids) AND tenant_id = :t"),
        {"ids": list(account_ids), "t": tenant_id},
    )
    return {int(r["account_id"]): metrics_of(r) for r in res.mappings()}


async def stored_metrics_with_currency(
    session: AsyncSession, tenant_id: int, account_ids: list[int]
) -> dict[int, tuple[Metrics, str]]:
    """The stored metrics of the tenant's accounts among ``account_ids``, each with its
    account's currency (others are left out)."""
    res = await session.execute(
        text(
            "SELECT m.*, a.currency FROM account_metrics m "
            "JOIN account a ON a.id = m.account_id "
            "WHERE m.account_id = ANY(:ids) AND m.tenant_id = :t"
        ),
        {"ids": account_ids, "t": tenant_id},
    )
    return {r["account_id"]: (metrics_of(r), r["currency"]) for r in res.mappings()}


def metrics_of(row: object) -> Metrics:
    """The metrics of a row that carries the account_metrics columns."""
    r = dict(row)  # type: ignore[call-overload]
    return Metrics(
        total_invoice_balance=r["total_invoice_balance"],
        total_debit_memo_balance=r["total_debit_memo_balance"],
        unapplied_payment_amount=r["unapplied_payment_amount"],
        unapplied_credit_memo_amount=r["unapplied_credit_memo_amount"],
        contracted_mrr=r["contracted_mrr"],
        last_invoice_date=r["last_invoice_date"],
        last_metrics_update=r["last_metrics_update"],
    )


@dataclass(frozen=True)
class AccountState:
    """One account's metrics as ONE statement saw them: the stored values with their stamp,
    the instant they are current as of, and (when asked for) the pending ledger folded on
    read. Never assembled from two reads, so its parts always belong together."""

    account_id: int
    currency: str
    stored: Metrics
    current_as_of: datetime | None
    live: Metrics | None = None  # None: the read did not ask for the pending ledger
    pending: int | None = None


# The instant an account's stored metrics are current as of: every change committed before
# it is in them.
# * Ordinary account: the reading statement's start. Its writes move the metrics row in
#   their own transaction, and the statement's snapshot is taken after its start, so every
#   write committed before that instant is in the row it reads.
# * Partner account: the later of its own stamp and the tenant's watermark. Its stamp
#   (pb_fold_metrics) is the start of the statement that folded it, taken before the
#   snapshot that fold consumed the ledger with. The watermark is the start of the last
#   complete refresh pass (refresh_tenant), which folded, for every partner account, every
#   change committed before it; it does not count for an account the refresh set aside
#   (metrics_refresh_failure): that one is as of its own stamp only.
CURRENT_AS_OF_SQL = """
CASE WHEN a.partner_account
     THEN GREATEST(m.last_metrics_update,
                   CASE WHEN f.account_id IS NULL THEN t.metrics_current_as_of END)
     ELSE statement_timestamp() END"""

_STATE_COLUMNS = f"""
m.account_id AS state_account_id, a.currency AS state_currency,
m.total_invoice_balance, m.total_debit_memo_balance, m.unapplied_payment_amount,
m.unapplied_credit_memo_amount, m.contracted_mrr, m.last_invoice_date, m.last_metrics_update,
{CURRENT_AS_OF_SQL} AS current_as_of"""

_LIVE_COLUMNS = """,
lv.total_invoice_balance AS live_total_invoice_balance,
lv.total_debit_memo_balance AS live_total_debit_memo_balance,
lv.unapplied_payment_amount AS live_unapplied_payment_amount,
lv.unapplied_credit_memo_amount AS live_unapplied_credit_memo_amount,
lv.contracted_mrr AS live_contracted_mrr, lv.last_invoice_date AS live_last_invoice_date,
lv.pending AS pending, statement_timestamp() AS read_at"""


def state_sql(*, with_pending: bool, account_columns: str = "") -> str:
    """SELECT ... FROM an account (``a``) and its metrics (``m``) with the columns
    :func:`state_of` reads; the caller adds the WHERE. ``with_pending`` folds the account's
    pending ledger on read (pb_live_metrics, migration 0010): it costs a scan of those rows,
    so only a read that shows them asks for it. ``account_columns`` selects more of ``a``."""
    columns = _STATE_COLUMNS + (_LIVE_COLUMNS if with_pending else "")
    live = (
        "LEFT JOIN LATERAL pb_live_metrics(m.tenant_id, m.account_id) lv ON true"
        if with_pending
        else ""
    )
    extra = f"{account_columns}," if account_columns else ""
    return f"""
SELECT {extra} {columns}
FROM account a
JOIN account_metrics m ON m.account_id = a.id
JOIN tenant t ON t.id = a.tenant_id
LEFT JOIN metrics_refresh_failure f ON f.account_id = a.id
{live}
"""


def state_of(row: Any) -> AccountState:
    """The AccountState of a row selected with :func:`state_sql`."""
    r = dict(row)
    live = None
    if "pending" in r:
        live = Metrics(
            total_invoice_balance=r["live_total_invoice_balance"],
            total_debit_memo_balance=r["live_total_debit_memo_balance"],
            unapplied_payment_amount=r["live_unapplied_payment_amount"],
            unapplied_credit_memo_amount=r["live_unapplied_credit_memo_amount"],
            contracted_mrr=r["live_contracted_mrr"],
            last_invoice_date=r["live_last_invoice_date"],
            last_metrics_update=r["read_at"],
        )
    return AccountState(
        account_id=int(r["state_account_id"]),
        currency=r["state_currency"],
        stored=metrics_of(r),
        current_as_of=r["current_as_of"],
        live=live,
        pending=int(r["pending"]) if live is not None else None,
    )


async def account_states(
    conn: AsyncSession | AsyncConnection, tenant_id: int, account_ids: list[int], *,
    with_pending: bool,
) -> dict[int, AccountState]:  # fmt: skip
    """The states of the tenant's accounts among ``account_ids``, all read by one statement
    (one snapshot; others are left out). Takes no lock and writes nothing."""
    if not account_ids:
        return {}
    res = await conn.execute(
        text(state_sql(with_pending=with_pending) + "WHERE a.tenant_id = :t AND a.id = ANY(:ids)"),
        {"t": tenant_id, "ids": list(account_ids)},
    )
    return {s.account_id: s for s in map(state_of, res.mappings())}


async def recompute(session: AsyncSession, account_id: int) -> Metrics:
    """The metrics from the documents alone: the definition of truth (domain.md, 6)."""
    row = (
        (
            await session.execute(
                text(
                    """
                    SELECT
                      (SELECT coalesce(sum(balance), 0) FROM invoice
                        WHERE account_id = :a AND status = 'POSTED') AS total_invoice_balance,
                      (SELECT max(invoice_date) FROM invoice
                        WHERE account_id = :a AND status = 'POSTED') AS last_invoice_date,
                      (SELECT coalesce(sum(balance), 0) FROM debit_memo
                        WHERE account_id = :a AND status = 'POSTED') AS total_debit_memo_balance,
                      (SELECT coalesce(sum(amount - applied_amount - refund_amount), 0) FROM payment
                        WHERE account_id = :a AND status = 'PROCESSED') AS unapplied_payment_amount,
                      (SELECT coalesce(sum(amount - applied_amount - refund_amount), 0)
                        FROM credit_memo WHERE account_id = :a AND status = 'POSTED')
                        AS unapplied_credit_memo_amount,
                      (SELECT coalesce(sum(mrr), 0) FROM subscription
                        WHERE owner_account_id = :a AND status IN ('ACTIVE', 'SUSPENDED')
                          AND cancelled_date IS NULL) AS contracted_mrr,
                      NULL::timestamptz AS last_metrics_update
                    """
                ),
                {"a": account_id},
            )
        )
        .mappings()
        .one()
    )
    return metrics_of(row)


# --------------------------------------------------------------------------- refresh


async def fold_changes(session: AsyncSession, tenant_id: int, account_id: int) -> int:
    """Fold the account's pending ledger rows into its metrics and stamp lastMetricsUpdate.

    The caller holds the account's metrics lock. Returns how many rows were folded."""
    res = await session.execute(
        text("SELECT pb_fold_account_metrics(:t, :a)"), {"t": tenant_id, "a": account_id}
    )
    note_metrics_updated(session, tenant_id, [account_id], REFRESH)
    return int(res.scalar_one())


async def refresh_account(session: AsyncSession, tenant_id: int, account_id: int) -> int | None:
    """Refresh one account now: take its metrics lock (waiting at most the tenant's lock wait),
    fold its changes and stamp lastMetricsUpdate. Returns the rows folded."""
    async with db_errors():
        await bound_lock_waits(session, tenant_id)
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :k)"),
            {"ns": NS_ACCOUNT_METRICS, "k": key_of(account_id)},
        )
        # The claim the tenant refresher takes (pb_refresh_accounts): the metrics row.
        await session.execute(
            text("SELECT 1 FROM account_metrics WHERE account_id = :a FOR UPDATE"),
            {"a": account_id},
        )
        await unbound_lock_waits(session)
        return await fold_changes(session, tenant_id, account_id)


async def changed_accounts(conn: AsyncSession | AsyncConnection, tenant_id: int) -> list[int]:
    """Ids of the tenant's accounts with pending ledger rows (a loose index scan)."""
    res = await conn.execute(
        text(
            """
            WITH RECURSIVE r(account_id) AS (
              (SELECT account_id FROM metrics_change WHERE tenant_id = :t
                ORDER BY account_id LIMIT 1)
              UNION ALL
              SELECT (SELECT m.account_id FROM metrics_change m
                       WHERE m.tenant_id = :t AND m.account_id > r.account_id
                       ORDER BY m.account_id LIMIT 1)
              FROM r WHERE r.account_id IS NOT NULL
            )
            SELECT account_id FROM r WHERE account_id IS NOT NULL
            """
        ),
        {"t": tenant_id},
    )
    return [int(a) for a in res.scalars()]


@dataclass
class RefreshReport:
    tenant_id: int
    accounts_refreshed: int = 0
    accounts_skipped: int = 0  # held by someone else (left for the next run) or already folded
    changes_folded: int = 0
    refreshed_ids: list[int] = field(default_factory=list)
    set_aside_ids: list[int] = field(default_factory=list)  # failed now: retried later
    waiting: int = 0  # set aside earlier and not due again yet
    # The pass's watermark when it was complete (tenant.metrics_current_as_of moved to it),
    # None when it was not (an account it could not claim may still hold older changes).
    current_as_of: datetime | None = None


REFRESH_BATCH = 500
RETRY_FIRST = 1.0  # seconds before a set-aside account is tried again; doubles per failure
RETRY_MOST = 3600.0  # the longest wait between two tries of a set-aside account

OnRefreshed = Callable[[list[int]], Awaitable[None]]


async def set_aside_accounts(
    conn: AsyncSession | AsyncConnection, tenant_id: int
) -> dict[int, bool]:
    """The tenant's set-aside accounts: {account id: due for another try now}."""
    res = await conn.execute(
        text(
            "SELECT account_id, retry_at <= now() FROM metrics_refresh_failure WHERE tenant_id = :t"
        ),
        {"t": tenant_id},
    )
    return {int(a): bool(due) for a, due in res.all()}


async def refresh_errors(
    conn: AsyncSession | AsyncConnection, tenant_id: int, account_ids: list[int]
) -> dict[int, str]:
    """Why the refresh set these accounts aside (accounts it did not set aside are left out)."""
    res = await conn.execute(
        text(
            "SELECT account_id, error FROM metrics_refresh_failure "
            "WHERE tenant_id = :t AND account_id = ANY(:ids)"
        ),
        {"t": tenant_id, "ids": account_ids},
    )
    return {int(a): str(e) for a, e in res.all()}


def _error_text(exc: BaseException) -> str:
    """The error a set-aside account is reported with: the database's message, first line."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return message[:500]


async def refresh_tenant(
    engine: AsyncEngine,
    tenant_id: int,
    *,
    parallelism: int = 2,
    batch: int = REFRESH_BATCH,
    on_refreshed: OnRefreshed | None = None,
) -> RefreshReport:
    """Refresh every changed partner account of a tenant.

    The changed accounts are found with a loose index scan over the ledger, then folded
    ``batch`` accounts per autocommit statement (``pb_refresh_accounts``): one short
    transaction that claims the accounts' metrics rows with FOR UPDATE SKIP LOCKED and
    folds their ledger rows set-based. An account another refresher holds is skipped and
    stays in the ledger for the next run. Cost grows with the changed accounts only.

    A batch whose statement fails for a reason that is not transient (an account's totals
    would overflow their columns, say) is split in halves and each half folded again, down
    to the single account that fails: every other account is folded, and that one is set
    aside (``metrics_refresh_failure``, migration 0009) with its error, its ledger rows kept.
    A set-aside account is tried again after RETRY_FIRST seconds, doubling per failure up to
    RETRY_MOST; its next successful fold clears it. A transient failure (lost connection,
    restart) is raised: nothing is set aside for it, the next run folds everything.

    ``on_refreshed`` is awaited with the ids of each batch once its statement committed.

    A complete pass moves the tenant's watermark (``tenant.metrics_current_as_of``, read as
    Account.metricsCurrentAsOf) to the instant it started, ``started``: the clock read by a
    statement that returned before the statement that finds the changed accounts began, so
    that statement's snapshot shows every change committed before ``started`` (a change's
    ledger row commits with the write's own transaction). Each of those accounts is then
    folded (its fold's later snapshot consumes those rows), set aside (which the watermark
    does not speak for), or was held by another folder: then no ledger row of it may remain
    with ``created_at < started`` (a row's created_at is its transaction's start, never
    later than its commit, so every row committed before ``started`` has one), or the pass
    is not complete and the watermark stays. Writing the watermark costs one row per pass,
    whatever the number of quiet accounts."""
    report = RefreshReport(tenant_id)
    async with engine.connect() as conn:
        started = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        ids = await changed_accounts(conn, tenant_id)
        aside = await set_aside_accounts(conn, tenant_id)
        changed = set(ids)
        gone = [a for a in aside if a not in changed]
        if gone:  # nothing left to fold (the rows were folded or removed): nothing failing
            await conn.execute(
                text("DELETE FROM metrics_refresh_failure WHERE account_id = ANY(:ids)"),
                {"ids": gone},
            )
            await conn.commit()
    if aside:
        report.waiting = sum(1 for a in ids if a in aside and not aside[a])
        ids = [a for a in ids if aside.get(a, True)]
    if not ids:
        await _advance_watermark(engine, report, started, [])
        return report
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for i in range(0, len(ids), batch):
        queue.put_nowait(ids[i : i + batch])

    async def fold(conn: AsyncConnection, chunk: list[int]) -> None:
        try:
            rows = (
                await conn.execute(
                    text("SELECT r_account, r_folded FROM pb_refresh_accounts(:t, :ids)"),
                    {"t": tenant_id, "ids": chunk},
                )
            ).all()
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            if len(chunk) > 1:
                half = len(chunk) // 2
                await fold(conn, chunk[:half])
                await fold(conn, chunk[half:])
                return
            await _set_aside(conn, tenant_id, chunk[0], _error_text(exc))
            report.set_aside_ids.append(chunk[0])
            return
        report.accounts_refreshed += len(rows)
        report.accounts_skipped += len(chunk) - len(rows)
        done = []
        for account_id, folded in rows:
            report.changes_folded += int(folded)
            done.append(int(account_id))
        cleared = [a for a in done if a in aside]
        if cleared:
            await conn.execute(
                text("DELETE FROM metrics_refresh_failure WHERE account_id = ANY(:ids)"),
                {"ids": cleared},
            )
        report.refreshed_ids.extend(done)
        if done and on_refreshed is not None:
            await on_refreshed(done)

    async def drain() -> None:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while True:
                try:
                    chunk = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await fold(conn, chunk)

    await asyncio.gather(*(drain() for _ in range(min(parallelism, queue.qsize()))))
    handled = set(report.refreshed_ids) | set(report.set_aside_ids)
    await _advance_watermark(engine, report, started, [a for a in ids if a not in handled])
    return report


async def _advance_watermark(
    engine: AsyncEngine, report: RefreshReport, started: datetime, unclaimed: list[int]
) -> None:
    """Move the tenant's watermark to ``started`` (never backwards) unless an account the
    pass did not fold itself still holds a ledger row that may have committed before it."""
    async with engine.begin() as conn:
        if unclaimed:
            older = await conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM metrics_change WHERE tenant_id = :t "
                    "AND account_id = ANY(:ids) AND created_at < :started)"
                ),
                {"t": report.tenant_id, "ids": unclaimed, "started": started},
            )
            if older.scalar_one():
                return
        await conn.execute(
            text(
                "UPDATE tenant SET metrics_current_as_of = "
                "GREATEST(metrics_current_as_of, :started) WHERE id = :t"
            ),
            {"t": report.tenant_id, "started": started},
        )
    report.current_as_of = started


async def _set_aside(conn: AsyncConnection, tenant_id: int, account_id: int, error: str) -> None:
    """Record (or record again) that folding the account failed, and when to try it next."""
    await conn.execute(
        text(
            """
            INSERT INTO metrics_refresh_failure AS f
              (account_id, tenant_id, error, failures, retry_at)
            VALUES (:a, :t, :e, 1, now() + make_interval(secs => :first))
            ON CONFLICT (account_id) DO UPDATE SET
              error = EXCLUDED.error,
              failures = f.failures + 1,
              last_failed_at = now(),
              retry_at = now() + make_interval(
                secs => least(:most, :first * power(2, least(f.failures, 30))))
            """
        ),
        {"a": account_id, "t": tenant_id, "e": error, "first": RETRY_FIRST, "most": RETRY_MOST},
    )


async def claim_due_tenants(engine: AsyncEngine) -> list[int]:
    """Tenants whose refresh interval has passed, claimed atomically (two workers never
    claim the same tenant for the same tick). The claim is stamped to the whole second, so
    with the worker's one-second tick a tenant is refreshed every ``interval`` seconds,
    not every ``interval`` + 1 when a tick runs a few milliseconds late."""
    async with engine.begin() as conn:
        res = await conn.execute(
            text(
                """
                UPDATE tenant SET metrics_refreshed_at = date_trunc('second', now())
                WHERE metrics_refreshed_at + make_interval(secs => metrics_refresh_interval)
                      <= now()
                RETURNING id
                """
            )
        )
        return [int(t) for t in res.scalars()]

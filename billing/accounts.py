"""Customer accounts: creation, updates, lookups, and the partnerAccount switch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.dbutil import db_errors
from billing.errors import Duplicate, NotFound, ValidationFailed
from billing.metrics import AccountState, fold_changes, state_of, state_sql
from billing.money import check_currency
from billing.pages import Page, paginate
from db.locks import (
    NS_ACCOUNT_METRICS,
    NS_ACCOUNT_MODE,
    bound_lock_waits,
    key_of,
    lock_timeout_sql,
    lock_waits_end_cte,
    unbound_lock_waits,
    write_locks_sql,
)
from db.models import Account, AccountMetrics, MetricsChange, table_of
from db.pg import Db
from db.statuses import AccountStatus

account_t = table_of(Account)
account_metrics_t = table_of(AccountMetrics)
metrics_change_t = table_of(MetricsChange)

PAYMENT_TERMS: dict[str, int] = {
    "DUE_UPON_RECEIPT": 0,
    "NET_15": 15,
    "NET_30": 30,
    "NET_45": 45,
    "NET_60": 60,
    "NET_90": 90,
}
STATUSES = tuple(AccountStatus)
CONTACT_FIELDS = (
    "firstName", "lastName", "workEmail", "workPhone", "address1", "address2",
    "city", "state", "postalCode", "country",
)  # fmt: skip


@dataclass
class AccountData:
    name: str
    currency: str
    bill_to: dict[str, Any]
    account_number: str | None = None
    sold_to: dict[str, Any] | None = None
    bill_cycle_day: int = 1
    payment_term: str = "DUE_UPON_RECEIPT"
    batch: str = "Batch1"
    partner_account: bool = False


@dataclass
class AccountChanges:
    name: str | None = None
    bill_cycle_day: int | None = None
    payment_term: str | None = None
    batch: str | None = None
    status: str | None = None
    partner_account: bool | None = None
    bill_to: dict[str, Any] | None = None
    sold_to: dict[str, Any] | None = None
    currency: str | None = None


@dataclass
class AccountFilter:
    partner_account: bool | None = None
    status: str | None = None
    batch: str | None = None
    name_contains: str | None = None
    metrics_stale_since: datetime | None = None
    account_numbers: list[str] = field(default_factory=list)
    has_pending_metric_changes: bool | None = None
    last_metrics_update_before: datetime | None = None
    last_metrics_update_after: datetime | None = None


def account_select() -> Any:
    """Accounts with the stamp of their stored metrics."""
    return select(account_t, account_metrics_t.c.last_metrics_update).join(
        account_metrics_t, account_metrics_t.c.account_id == account_t.c.id
    )


def _contact(raw: dict[str, Any] | None, path: str) -> dict[str, Any]:
    raw = {k: v for k, v in (raw or {}).items() if v is not None}
    for required in ("firstName", "lastName"):
        if not str(raw.get(required) or "").strip():
            raise ValidationFailed(f"{path}.{required} is required", [path, required])
    unknown = set(raw) - set(CONTACT_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown contact fields {sorted(unknown)}", [path])
    return {k: str(v).strip() for k, v in raw.items()}


def _check_bcd(bcd: int) -> int:
    if not 1 <= bcd <= 31:
        raise ValidationFailed("billCycleDay must be between 1 and 31", ["billCycleDay"])
    return bcd


def _check_term(term: str) -> str:
    if term not in PAYMENT_TERMS:
        raise ValidationFailed(f"Unknown paymentTerm {term!r}", ["paymentTerm"])
    return term


async def create_account(session: AsyncSession, tenant_id: int, data: AccountData) -> RowMapping:
    """Create an account and its metrics row; numbers given by the caller stay unique."""
    name = data.name.strip()
    if not name:
        raise ValidationFailed("name is required", ["name"])
    currency = check_currency(data.currency)
    bill_to = _contact(data.bill_to, "billToContact")
    sold_to = _contact(data.sold_to, "soldToContact") if data.sold_to else dict(bill_to)
    values = {
        "tenant_id": tenant_id,
        "name": name,
        "currency": currency,
        "bill_cycle_day": _check_bcd(data.bill_cycle_day),
        "payment_term": _check_term(data.payment_term),
        "batch": (data.batch or "Batch1").strip(),
        "partner_account": data.partner_account,
        "bill_to": bill_to,
        "sold_to": sold_to,
        "status": AccountStatus.ACTIVE,
    }
    given = numbering.caller_number(data.account_number, ["accountNumber"])
    if given is not None:
        number = given
        if await find_account(session, tenant_id, number) is not None:
            raise Duplicate(f"Account number {number} is already used", ["accountNumber"])
    else:
        number = await numbering.next_number(session, tenant_id, "account")
        while await find_account(session, tenant_id, number) is not None:
            number = await numbering.next_number(session, tenant_id, "account")
    async with db_errors():
        account_id = (
            await session.execute(
                insert(account_t).values(account_number=number, **values).returning(account_t.c.id)
            )
        ).scalar_one()
    await session.execute(
        insert(account_metrics_t).values(
            account_id=account_id, tenant_id=tenant_id, last_metrics_update=text("now()")
        )
    )
    return await get_account_by_id(session, tenant_id, account_id)


async def find_account(session: AsyncSession, tenant_id: int, number: str) -> RowMapping | None:
    """The account with that number in the tenant, or None."""
    res = await session.execute(
        account_select().where(
            account_t.c.tenant_id == tenant_id, account_t.c.account_number == number
        )
    )
    return res.mappings().one_or_none()


_ACCOUNT_COLUMNS = """
a.id, a.tenant_id, a.account_number, a.name, a.currency, a.status, a.bill_cycle_day,
a.payment_term, a.batch, a.partner_account, a.bill_to::text AS bill_to,
a.sold_to::text AS sold_to, a.created_at, a.updated_at"""
_BY_NUMBER = "WHERE a.tenant_id = $1 AND a.account_number = $2"
ACCOUNT_WITH_STATE = {
    pending: state_sql(with_pending=pending, account_columns=_ACCOUNT_COLUMNS) + _BY_NUMBER
    for pending in (False, True)
}


async def find_account_with_state(
    db: Db, tenant_id: int, number: str, *, with_pending: bool = False
) -> tuple[dict[str, Any], AccountState] | None:
    """The account with that number and its metrics state, read in one statement (so in
    one snapshot: lastMetricsUpdate and the values always belong together), or None.
    ``with_pending`` folds its pending ledger on read too (billing.metrics.state_sql)."""
    row = await db.fetchrow(ACCOUNT_WITH_STATE[with_pending], tenant_id, number)
    if row is None:
        return None
    account = dict(row)
    account["bill_to"] = json.loads(account["bill_to"])
    account["sold_to"] = json.loads(account["sold_to"])
    return account, state_of(row)


async def get_account(
    session: AsyncSession, tenant_id: int, number: str, *, field: str = "accountNumber"
) -> RowMapping:
    """The account with that number, or NOT_FOUND."""
    row = await find_account(session, tenant_id, number)
    if row is None:
        raise NotFound(f"Account {number} not found", [field])
    return row


async def get_account_by_id(session: AsyncSession, tenant_id: int, account_id: int) -> RowMapping:
    """The account with that id (within the tenant)."""
    res = await session.execute(
        account_select().where(account_t.c.tenant_id == tenant_id, account_t.c.id == account_id)
    )
    row = res.mappings().one_or_none()
    if row is None:
        raise NotFound(f"Account {account_id} not found")
    return row


async def accounts_by_ids(
    session: AsyncSession, tenant_id: int, ids: list[int]
) -> dict[int, RowMapping]:
    """Accounts by id, for DataLoaders."""
    if not ids:
        return {}
    res = await session.execute(
        account_select().where(account_t.c.tenant_id == tenant_id, account_t.c.id.in_(ids))
    )
    return {r["id"]: r for r in res.mappings()}


MAX_ACCOUNT_NUMBERS = 10_000


async def account_ids_by_numbers(
    session: AsyncSession, tenant_id: int, numbers: list[str], *, field: str = "accountNumbers"
) -> list[int]:
    """The ids of these account numbers in the tenant, in the given order; an empty list is
    VALIDATION, more than MAX_ACCOUNT_NUMBERS is LIMIT_EXCEEDED, and the first number not
    in the tenant is NOT_FOUND (with its index in ``field``)."""
    from billing.errors import LimitExceeded

    if not numbers:
        raise ValidationFailed(f"{field} must not be empty", [field])
    if len(numbers) > MAX_ACCOUNT_NUMBERS:
        raise LimitExceeded(f"At most {MAX_ACCOUNT_NUMBERS} account numbers", [field])
    res = await session.execute(
        select(account_t.c.account_number, account_t.c.id).where(
            account_t.c.tenant_id == tenant_id, account_t.c.account_number.in_(set(numbers))
        )
    )
    found = {number: int(ident) for number, ident in res}
    for n, number in enumerate(numbers):
        if number not in found:
            raise NotFound(f"Account {number} not found", [field, str(n)])
    return [found[number] for number in numbers]


async def update_account(
    session: AsyncSession, tenant_id: int, number: str, changes: AccountChanges
) -> RowMapping:
    """Change an account. The currency is immutable. Switching partnerAccount waits for
    in-flight writers and brings the metrics current first (domain.md, 7)."""

    account = await get_account(session, tenant_id, number)
    values: dict[str, Any] = {}
    if changes.currency is not None and check_currency(changes.currency) != account["currency"]:
        raise ValidationFailed("An account's currency cannot change", ["currency"])
    if changes.name is not None:
        if not changes.name.strip():
            raise ValidationFailed("name must not be empty", ["name"])
        values["name"] = changes.name.strip()
    if changes.bill_cycle_day is not None:
        values["bill_cycle_day"] = _check_bcd(changes.bill_cycle_day)
    if changes.payment_term is not None:
        values["payment_term"] = _check_term(changes.payment_term)
    if changes.batch is not None:
        values["batch"] = changes.batch.strip()
    if changes.status is not None:
        if changes.status not in STATUSES:
            raise ValidationFailed(f"Unknown status {changes.status!r}", ["status"])
        values["status"] = changes.status
    if changes.bill_to is not None:
        values["bill_to"] = _contact(changes.bill_to, "billToContact")
    if changes.sold_to is not None:
        values["sold_to"] = _contact(changes.sold_to, "soldToContact")
    flip = (
        changes.partner_account is not None
        and changes.partner_account != account["partner_account"]
    )
    if flip:
        async with db_errors():
            await bound_lock_waits(session, tenant_id)
            # Exclusive mode lock: waits for in-flight writers that read the old flag.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                {"ns": NS_ACCOUNT_MODE, "k": key_of(account["id"])},
            )
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                {"ns": NS_ACCOUNT_METRICS, "k": key_of(account["id"])},
            )
            # One-statement writes hold the account row FOR SHARE instead of the mode lock:
            # wait for those in flight, and hold new ones, before the ledger is folded.
            await session.execute(
                text("SELECT 1 FROM account WHERE id = :a FOR UPDATE"), {"a": account["id"]}
            )
            await unbound_lock_waits(session)
        await fold_changes(session, tenant_id, account["id"])
        values["partner_account"] = changes.partner_account
    if values:
        values["updated_at"] = text("now()")
        await session.execute(
            update(account_t).where(account_t.c.id == account["id"]).values(**values)
        )
    return await get_account_by_id(session, tenant_id, account["id"])


async def list_accounts(
    session: AsyncSession,
    tenant_id: int,
    flt: AccountFilter | None,
    first: int | None,
    after: str | None,
) -> Page:
    """Accounts of the tenant matching the filter, in creation order."""
    stmt = account_select().where(account_t.c.tenant_id == tenant_id)
    if flt is not None:
        if flt.partner_account is not None:
            stmt = stmt.where(account_t.c.partner_account == flt.partner_account)
        if flt.status is not None:
            stmt = stmt.where(account_t.c.status == flt.status)
        if flt.batch is not None:
            stmt = stmt.where(account_t.c.batch == flt.batch)
        if flt.name_contains:
            stmt = stmt.where(
                account_t.c.name.ilike(f"%{_escape_like(flt.name_contains)}%", escape="\\")
            )
        if flt.account_numbers:
            stmt = stmt.where(account_t.c.account_number.in_(flt.account_numbers))
        if flt.metrics_stale_since is not None:
            stale = select(account_metrics_t.c.account_id).where(
                (account_metrics_t.c.last_metrics_update < flt.metrics_stale_since)
                | account_metrics_t.c.last_metrics_update.is_(None)
            )
            stmt = stmt.where(account_t.c.id.in_(stale))
        if flt.last_metrics_update_before is not None:
            stmt = stmt.where(
                account_metrics_t.c.last_metrics_update < flt.last_metrics_update_before
            )
        if flt.last_metrics_update_after is not None:
            stmt = stmt.where(
                account_metrics_t.c.last_metrics_update > flt.last_metrics_update_after
            )
        if flt.has_pending_metric_changes is not None:
            pending = exists(
                select(metrics_change_t.c.id).where(
                    metrics_change_t.c.tenant_id == tenant_id,
                    metrics_change_t.c.account_id == account_t.c.id,
                )
            )
            stmt = stmt.where(pending if flt.has_pending_metric_changes else ~pending)
    return await paginate(session, stmt, account_t.c.id, first, after)


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --------------------------------------------------------------------------- one-statement writes


@dataclass(frozen=True)
class AccountForWrite:
    """What a one-statement write needs to know of its account before it writes."""

    id: int
    account_number: str
    currency: str
    payment_term: str
    partner_account: bool
    lock_timeout: str  # the tenant's lock wait as a lock_timeout setting (db.locks), "5000ms"


# A one-statement write re-reads its account and writes again when the account changed
# between the two (a rare race) or a generated number was already taken; after this many
# tries it answers LOCK_COMPETITION (retryable).
WRITE_ATTEMPTS = 5

ACCOUNT_FOR_WRITE = f"""
SELECT a.id, a.account_number, a.currency, a.payment_term, a.partner_account,
       {lock_timeout_sql("t.lock_wait_ms")} AS lock_timeout
FROM account a JOIN tenant t ON t.id = a.tenant_id
WHERE a.tenant_id = $1 AND a.account_number = $2
"""


async def account_for_write(
    db: Db, tenant_id: int, account_number: str, field: list[str] | None = None
) -> AccountForWrite:
    """The account a write names, read without a lock (the write's statement locks it and
    checks that what was read still holds), or NOT_FOUND."""
    row = await db.fetchrow(ACCOUNT_FOR_WRITE, tenant_id, account_number)
    if row is None:
        raise NotFound(f"Account {account_number} not found", field or ["accountNumber"])
    return AccountForWrite(
        id=row["id"],
        account_number=row["account_number"],
        currency=row["currency"],
        payment_term=row["payment_term"],
        partner_account=row["partner_account"],
        lock_timeout=row["lock_timeout"],
    )


def locked_account_cte(*, id_param: str, tenant_param: str, lock_timeout_param: str,
                       extra: str = "") -> str:  # fmt: skip
    """A CTE ``acc`` that locks the written account's row FOR SHARE and yields (id,
    tenant_id, partner_account) as they stand once it is locked.

    FOR SHARE is a write's hold on its account: writers share it, while updateAccount and
    the partnerAccount switch (which locks the row FOR UPDATE before it folds the ledger)
    wait for the writers in flight and make new ones wait. Under READ COMMITTED a row locked
    after a concurrent update is re-read at its newest version, so the partner flag seen
    here is the one the write commits under.

    The tenant's lock wait bounds the waits for these locks, and an ordinary account's
    metrics lock is taken first (db.locks.write_locks_sql), in the scan's filter, below the
    row lock. (The flag read there may be a moment old: the worst is an unneeded lock, or a
    write that orders on the metrics row alone; the flag the write commits under is the
    locked one.) Once they are held, the statement's other waits (a relation extension,
    under a burst of inserts) are the server's again (db.locks.lock_waits_end_cte): a tight
    lock wait fails contention on the account, never a partner account's write. ``extra``
    adds conditions on ``a``: the facts the caller computed with must still hold, or the CTE
    is empty and the statement writes nothing."""
    return f"""
acc_locked AS (
  SELECT a.id, a.tenant_id, a.partner_account
  FROM account a
  WHERE a.id = {id_param} AND a.tenant_id = {tenant_param} {extra}
    AND {write_locks_sql(lock_timeout_param, "a.id", "NOT a.partner_account")}
  FOR SHARE OF a
),
{lock_waits_end_cte("acc_locked", "acc")}"""


async def account_number_of(session: AsyncSession, account_id: int) -> str:
    """The business number of an account, by id: the account exists (a document points at it)."""
    res = await session.execute(
        text("SELECT account_number FROM account WHERE id = :a"), {"a": account_id}
    )
    return str(res.scalar_one())


async def account_currency_of(session: AsyncSession, account_id: int) -> str:
    """The currency of an account, by id: the account exists (a document points at it)."""
    res = await session.execute(
        text("SELECT currency FROM account WHERE id = :a"), {"a": account_id}
    )
    return str(res.scalar_one())

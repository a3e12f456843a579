"""The ceiling of one order write: a bare Starlette endpoint that writes the rows a
1-subscription createOrder writes (sales_order, subscription, subscription_rate_plan, its
subscription_charge rows, order_action, and the contractedMrr delta: a metrics_change row
for a partner account, an UPDATE of account_metrics under the account lock for an ordinary
one) with raw asyncpg prepared statements in one transaction:

    BEGIN; auth + account; account locks; one statement writing every row; COMMIT

    uvicorn --factory bench.bare_writes:app_from_env   (DATABASE_URL set)

POST /order {"accountNumber": ..., "productRatePlanNumber": ..., "orderDate": "YYYY-MM-DD"}
with ``Authorization: Bearer <api key>``; answers {"orderNumber": ..., "errors": []}.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.settings import Settings

NS_ACCOUNT_METRICS = 7101  # db.locks: the same advisory lock keys as the application
NS_ACCOUNT_MODE = 7102

ACCOUNT = """
SELECT k.tenant_id, a.id, a.currency, a.partner_account, t.lock_wait_ms
FROM api_key k JOIN tenant t ON t.id = k.tenant_id
JOIN account a ON a.tenant_id = k.tenant_id AND a.account_number = $2
WHERE k.key_hash = $1"""

LOCKS = f"""
SELECT set_config('lock_timeout', $1::text || 'ms', true),
       pg_advisory_xact_lock_shared({NS_ACCOUNT_MODE}, $2::int),
       CASE WHEN NOT $3::bool THEN pg_advisory_xact_lock({NS_ACCOUNT_METRICS}, $2::int) END"""


def _number(prefix: str, seq: str) -> str:
    """numbering.format_number in SQL: prefix and at least eight digits."""
    n = f"nextval('{seq}')::text"
    return f"'{prefix}' || lpad({n}, 8, '0')"  # eight digits suffice for a benchmark run


def write_sql(tenant_id: int) -> str:
    """Every row of the order in one statement ($1 tenant, $2 account, $3 rate plan number,
    $4 order date, $5 partner account, $6 currency, $7 the action's payload as JSON)."""
    seq = f"pb_seq_t{int(tenant_id)}_"
    return f"""
WITH plan AS (
  SELECT id, name FROM product_rate_plan
  WHERE tenant_id = $1::bigint AND rate_plan_number = $3::text
), ch AS (
  SELECT c.*, CASE WHEN c.charge_type <> 'RECURRING' THEN 0::numeric ELSE round(
      (CASE WHEN c.charge_model = 'PER_UNIT' THEN c.list_price * c.default_quantity
            ELSE c.list_price END)
      / CASE c.billing_period WHEN 'MONTH' THEN 1 WHEN 'QUARTER' THEN 3
                              WHEN 'SEMI_ANNUAL' THEN 6 ELSE 12 END, 6) END AS mrr
  FROM product_rate_plan_charge c JOIN plan ON c.rate_plan_id = plan.id
), so AS (
  INSERT INTO sales_order (tenant_id, order_number, account_id, order_date, status)
  VALUES ($1::bigint, {_number("O", seq + "order")}, $2::bigint, $4::date, 'COMPLETED')
  RETURNING id, order_number
), s AS (
  INSERT INTO subscription (tenant_id, subscription_number, owner_account_id,
    invoice_owner_account_id, currency, status, term_type, initial_term, renewal_term,
    auto_renew, contract_effective_date, term_start_date, term_end_date, invoice_separately,
    mrr, version)
  SELECT $1::bigint, {_number("S", seq + "subscription")}, $2::bigint, $2::bigint, $6::text,
    'ACTIVE', 'TERMED', 12, 12, false, $4::date, $4::date,
    ($4::date + interval '12 months')::date, false,
    (SELECT coalesce(sum(mrr), 0) FROM ch WHERE charge_type = 'RECURRING'), 1
  FROM plan
  RETURNING id, mrr
), srp AS (
  INSERT INTO subscription_rate_plan (tenant_id, subscription_id, product_rate_plan_id, name,
    effective_start_date)
  SELECT $1::bigint, s.id, plan.id, plan.name, $4::date FROM s, plan
  RETURNING id
), sc AS (
  INSERT INTO subscription_charge (tenant_id, subscription_id, subscription_rate_plan_id,
    product_rate_plan_charge_id, charge_number, segment, is_last_segment, name, charge_type,
    charge_model, price, quantity, billing_period, billing_timing, effective_start_date, mrr)
  SELECT $1::bigint, s.id, srp.id, ch.id, {_number("C", seq + "charge")}, 1, true, ch.name,
    ch.charge_type, ch.charge_model, ch.list_price, ch.default_quantity, ch.billing_period,
    ch.billing_timing, $4::date, ch.mrr
  FROM s, srp, ch
), oa AS (
  INSERT INTO order_action (tenant_id, order_id, subscription_id, sequence, action_type,
    effective_date, payload)
  SELECT $1::bigint, so.id, s.id, 0, 'CreateSubscription', $4::date, $7::json FROM so, s
), mc AS (
  INSERT INTO metrics_change (tenant_id, account_id, d_contracted_mrr)
  SELECT $1::bigint, $2::bigint, s.mrr FROM s WHERE $5::bool AND s.mrr <> 0
), am AS (
  UPDATE account_metrics SET contracted_mrr = contracted_mrr + s.mrr, last_metrics_update = now()
  FROM s WHERE account_metrics.account_id = $2::bigint AND NOT $5::bool AND s.mrr <> 0
)
SELECT so.order_number, (SELECT count(*) FROM s) AS subscriptions FROM so"""


def _key(ident: int) -> int:
    """db.locks.key_of: a bigint id folded into int4."""
    return ((ident + 2**31) % 2**32) - 2**31


def app_from_env() -> Starlette:
    url = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    state: dict[str, Any] = {}
    sql_of: dict[int, str] = {}

    async def keep(conn: asyncpg.Connection) -> None:
        """No reset on release (asyncpg's default is a 4-statement round trip): every
        setting and lock here is transaction-scoped."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # As many connections as the API's pool of the same writes, read the way the API
        # reads it, so that the two compare like for like.
        size = Settings.from_env().pg_pool_size
        state["pool"] = await asyncpg.create_pool(
            dsn,
            min_size=min(2, size),
            max_size=size,
            reset=keep,
            server_settings={"jit": "off", "application_name": "partnerbill-bare"},
        )
        yield
        await state["pool"].close()

    async def order(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        body = await request.json()
        plan_number = body["productRatePlanNumber"]
        order_date = date.fromisoformat(body["orderDate"])
        number = body["accountNumber"]
        payload = json.dumps(
            {
                "subscription_owner_account_number": number,
                "invoice_owner_account_number": number,
                "rate_plans": [{"product_rate_plan_number": plan_number}],
            }
        )
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        conn: asyncpg.Connection
        async with state["pool"].acquire() as conn, conn.transaction():
            acct = await conn.fetchrow(ACCOUNT, key_hash, number)
            if acct is None:
                return JSONResponse({"errors": [{"code": "NOT_FOUND"}]}, status_code=404)
            tenant_id = acct["tenant_id"]
            partner = acct["partner_account"]
            await conn.execute(LOCKS, str(acct["lock_wait_ms"]), _key(acct["id"]), partner)
            sql = sql_of.get(tenant_id)
            if sql is None:
                sql = sql_of[tenant_id] = write_sql(tenant_id)
            row = await conn.fetchrow(
                sql, tenant_id, acct["id"], plan_number, order_date, partner, acct["currency"],
                payload,
            )  # fmt: skip
            if row is None or row["subscriptions"] != 1:
                raise RuntimeError(f"rate plan {plan_number} not found")
        return JSONResponse({"orderNumber": row["order_number"], "errors": []})

    return Starlette(routes=[Route("/order", order, methods=["POST"])], lifespan=lifespan)

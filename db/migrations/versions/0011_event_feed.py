"""a durable event feed written in the same transaction as each change, and webhook endpoints
with their delivery attempts

* ``event``: one row per change a client may care about, appended by the statement that made
  the change (so an event exists if and only if its change committed). ``xid`` is the writing
  transaction's id: the feed is read in (xid, id) order and only below the reader's
  ``pg_snapshot_xmin`` (every transaction below it has ended), so an event that commits later
  never lands behind a cursor already handed out (billing.events).
* Document, account, order and bill-run events come from statement-level AFTER triggers with
  transition tables: one set-based INSERT per statement, whichever path wrote (one-statement
  hot writes, bulk calls, session writes, the worker), in the writing statement itself. No
  write path can forget its event, and the API process spends nothing on it.
* Metric events are written where metrics move: the synchronous writes (billing.metrics) and
  the fold (``pb_fold_metrics``, redefined here to append ACCOUNT_METRICS_REFRESHED per
  account it folded).
* ``pb_events_on()``: false when the connection set ``partnerbill.events`` to ``off``
  (PARTNERBILL_EVENTS=0, for the bench's comparison only).
* ``webhook_endpoint`` / ``webhook_delivery``: where the worker delivers the feed, its cursor
  per endpoint, and every attempt.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-15
"""

from typing import Sequence, Union

from alembic import context, op

revision: str = "0011"
down_revision: Union[str, None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = """
CREATE TABLE event (
  id bigserial PRIMARY KEY,
  tenant_id bigint NOT NULL,
  -- The writing transaction: the feed's order and its visibility bound.
  xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  type text NOT NULL,
  -- No foreign key: an append-only insert must take no lock on the account row.
  account_id bigint,
  occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  data jsonb NOT NULL
);
CREATE INDEX ix_event_feed ON event (tenant_id, xid, id);
-- Pruning by age: the table is appended in time order, so a block range index is enough.
CREATE INDEX ix_event_occurred ON event USING brin (occurred_at);

CREATE TABLE webhook_endpoint (
  id bigserial PRIMARY KEY,
  tenant_id bigint NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
  url text NOT NULL,
  event_types text[] NOT NULL DEFAULT '{}',
  description text,
  secret text NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  disabled_reason text,
  cursor_xid xid8 NOT NULL,
  cursor_id bigint NOT NULL DEFAULT 0,
  failing_since timestamptz,
  failures integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  lease_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_webhook_endpoint_tenant ON webhook_endpoint (tenant_id, id);

CREATE TABLE webhook_delivery (
  id bigserial PRIMARY KEY,
  tenant_id bigint NOT NULL,
  endpoint_id bigint NOT NULL REFERENCES webhook_endpoint (id) ON DELETE CASCADE,
  event_id bigint NOT NULL,
  event_type text NOT NULL,
  attempt integer NOT NULL,
  succeeded boolean NOT NULL,
  status_code integer,
  duration_ms double precision NOT NULL,
  error text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_webhook_delivery_endpoint ON webhook_delivery (endpoint_id, id);
"""

EVENTS_ON = """
CREATE OR REPLACE FUNCTION pb_events_on() RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('partnerbill.events', true), '') <> 'off';
$$;
"""

METRICS_JSON = """
CREATE OR REPLACE FUNCTION pb_metrics_json(m account_metrics) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  -- The metrics of an event, in the API's names; amounts as strings (never floats).
  SELECT jsonb_build_object(
    'balance', (m.total_invoice_balance + m.total_debit_memo_balance
                - m.unapplied_payment_amount - m.unapplied_credit_memo_amount)::text,
    'creditBalance', m.credit_balance::text,
    'totalInvoiceBalance', m.total_invoice_balance::text,
    'totalDebitMemoBalance', m.total_debit_memo_balance::text,
    'unappliedPaymentAmount', m.unapplied_payment_amount::text,
    'unappliedCreditMemoAmount', m.unapplied_credit_memo_amount::text,
    'contractedMrr', m.contracted_mrr::text,
    'lastInvoiceDate', m.last_invoice_date,
    'lastMetricsUpdate', m.last_metrics_update);
$$;
"""

# One trigger function per table: TG_OP tells an insert from an update; the UPDATE trigger
# joins the old and new transition tables by id to see what moved.
ROW_JSON = """
CREATE OR REPLACE FUNCTION pb_event_data(r jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  -- A written row as an event's data: the API's camelCase names, numbers as strings (money
  -- is never a float), without the tenant and the internal ids.
  SELECT coalesce(jsonb_object_agg(
           lower(left(k, 1)) || substr(replace(initcap(replace(k, '_', ' ')), ' ', ''), 2),
           CASE WHEN jsonb_typeof(v) = 'number' THEN to_jsonb(v::text) ELSE v END), '{}')
  FROM jsonb_each(r - 'tenant_id' - 'id' - 'account_id') AS e(k, v);
$$;
"""

# One trigger function per table (or kind of table): TG_OP tells an insert from an update;
# the UPDATE trigger joins the old and new transition tables by id to see what moved.
TRIGGERS = """
CREATE OR REPLACE FUNCTION pb_account_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, 'ACCOUNT_CREATED', n.id, pb_event_data(to_jsonb(n))
    FROM new_rows n ORDER BY n.id;
  ELSE
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, 'ACCOUNT_UPDATED', n.id, pb_event_data(to_jsonb(n))
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (to_jsonb(n) - 'updated_at') IS DISTINCT FROM (to_jsonb(o) - 'updated_at')
    ORDER BY n.id;
  END IF;
  RETURN NULL;
END $$;

-- The status moves of invoices and memos: created POSTED is POSTED; DRAFT -> POSTED is
-- POSTED, POSTED -> DRAFT is UNPOSTED, anything -> CANCELED is CANCELED.
CREATE OR REPLACE FUNCTION pb_document_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  prefix text := TG_ARGV[0];
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, prefix || '_POSTED', n.account_id,
           pb_event_data(to_jsonb(n))
    FROM new_rows n WHERE n.status = 'POSTED' ORDER BY n.id;
  ELSE
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id,
           prefix || CASE WHEN n.status = 'POSTED' THEN '_POSTED'
                          WHEN n.status = 'CANCELED' THEN '_CANCELED'
                          ELSE '_UNPOSTED' END,
           n.account_id, pb_event_data(to_jsonb(n))
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status <> o.status
      AND (n.status IN ('POSTED', 'CANCELED') OR o.status = 'POSTED')
    ORDER BY n.id;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pb_payment_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, t.type, n.account_id, pb_event_data(to_jsonb(n))
    FROM new_rows n
    CROSS JOIN LATERAL (VALUES (1, 'PAYMENT_CREATED'),
                               (2, CASE WHEN n.applied_amount <> 0 THEN 'PAYMENT_APPLIED' END))
      AS t(k, type)
    WHERE t.type IS NOT NULL
    ORDER BY n.id, t.k;
  ELSE
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, t.type, n.account_id, pb_event_data(to_jsonb(n))
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (VALUES
      (1, CASE WHEN n.applied_amount > o.applied_amount THEN 'PAYMENT_APPLIED'
               WHEN n.applied_amount < o.applied_amount THEN 'PAYMENT_UNAPPLIED' END),
      (2, CASE WHEN n.refund_amount <> o.refund_amount THEN 'PAYMENT_REFUNDED' END),
      (3, CASE WHEN n.status <> o.status AND n.status = 'CANCELED' THEN 'PAYMENT_CANCELED' END)
    ) AS t(k, type)
    WHERE t.type IS NOT NULL
    ORDER BY n.id, t.k;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pb_order_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, 'ORDER_' || n.status, n.account_id, jsonb_build_object(
      'orderNumber', n.order_number, 'orderDate', n.order_date, 'status', n.status)
    FROM new_rows n WHERE n.status IN ('COMPLETED', 'FAILED') ORDER BY n.id;
  ELSE
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT n.tenant_id, 'ORDER_' || n.status, n.account_id, jsonb_build_object(
      'orderNumber', n.order_number, 'orderDate', n.order_date, 'status', n.status)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status <> o.status AND n.status IN ('COMPLETED', 'FAILED') ORDER BY n.id;
  END IF;
  RETURN NULL;
END $$;

-- An asynchronous order that fails leaves no order row (its transaction rolled back): its
-- job, marked FAILED, is what committed.
CREATE OR REPLACE FUNCTION pb_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  INSERT INTO event (tenant_id, type, account_id, data)
  SELECT n.tenant_id, 'ORDER_FAILED', NULL, jsonb_build_object(
    'jobId', n.id, 'orderNumber', n.input ->> 'orderNumber', 'errors', n.errors)
  FROM new_rows n JOIN old_rows o ON o.id = n.id
  WHERE n.kind = 'create_order' AND n.status = 'FAILED' AND o.status <> 'FAILED'
  ORDER BY n.id;
  RETURN NULL;
END $$;

-- SETTLED mirrors billing.billruns.is_settled: nothing moves the run on by itself any more.
CREATE OR REPLACE FUNCTION pb_bill_run_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  INSERT INTO event (tenant_id, type, account_id, data)
  SELECT n.tenant_id,
         CASE WHEN n.status IN ('POSTED', 'CANCELED')
                OR (n.posting IS NULL AND (n.status = 'ERROR'
                                           OR (n.status = 'COMPLETED' AND NOT n.auto_post)))
              THEN 'BILL_RUN_SETTLED' ELSE 'BILL_RUN_PROGRESSED' END,
         NULL, jsonb_build_object(
    'billRunNumber', n.bill_run_number, 'status', n.status, 'posting', n.posting,
    'accountsTotal', n.accounts_total, 'accountsProcessed', n.accounts_processed,
    'invoicesGenerated', n.invoices_generated)
  FROM new_rows n JOIN old_rows o ON o.id = n.id
  WHERE (n.status, n.posting, n.accounts_total, n.accounts_processed, n.invoices_generated)
        IS DISTINCT FROM
        (o.status, o.posting, o.accounts_total, o.accounts_processed, o.invoices_generated)
  ORDER BY n.id;
  RETURN NULL;
END $$;

-- One account of a run billed (or failed): the run progressed, for that account.
CREATE OR REPLACE FUNCTION pb_bill_run_account_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pb_events_on() THEN RETURN NULL; END IF;
  INSERT INTO event (tenant_id, type, account_id, data)
  SELECT r.tenant_id, 'BILL_RUN_PROGRESSED', n.account_id, jsonb_build_object(
    'billRunNumber', r.bill_run_number, 'status', r.status,
    'accountStatus', n.status, 'invoices', n.invoices)
  FROM new_rows n JOIN old_rows o ON o.bill_run_id = n.bill_run_id AND o.account_id = n.account_id
  JOIN bill_run r ON r.id = n.bill_run_id
  WHERE n.status <> o.status AND o.status = 'PENDING'
  ORDER BY n.account_id;
  RETURN NULL;
END $$;
"""

ATTACH = [
    ("account", "pb_account_events()", ("INSERT", "UPDATE")),
    ("invoice", "pb_document_events('INVOICE')", ("INSERT", "UPDATE")),
    ("credit_memo", "pb_document_events('CREDIT_MEMO')", ("INSERT", "UPDATE")),
    ("debit_memo", "pb_document_events('DEBIT_MEMO')", ("INSERT", "UPDATE")),
    ("payment", "pb_payment_events()", ("INSERT", "UPDATE")),
    ("sales_order", "pb_order_events()", ("INSERT", "UPDATE")),
    ("job", "pb_job_events()", ("UPDATE",)),
    ("bill_run", "pb_bill_run_events()", ("UPDATE",)),
    ("bill_run_account", "pb_bill_run_account_events()", ("UPDATE",)),
]

FOLD_METRICS = """
CREATE OR REPLACE FUNCTION pb_fold_metrics(p_tenant bigint, p_accounts bigint[],
                                           p_stamp_unchanged boolean)
RETURNS TABLE (r_account bigint, r_folded integer) LANGUAGE sql AS $$
  -- 0010's fold, and one ACCOUNT_METRICS_REFRESHED event per account whose metrics row
  -- moved, with its new values, appended in the same statement.
  WITH d AS (
    DELETE FROM metrics_change c
    WHERE c.tenant_id = p_tenant AND c.account_id = ANY (p_accounts)
    RETURNING c.account_id, c.d_invoice_balance, c.d_debit_memo_balance,
              c.d_unapplied_payment, c.d_unapplied_credit_memo, c.d_contracted_mrr
  ), s AS (
    SELECT a.account_id,
           coalesce(sum(d.d_invoice_balance), 0) AS ib,
           coalesce(sum(d.d_debit_memo_balance), 0) AS dm,
           coalesce(sum(d.d_unapplied_payment), 0) AS up,
           coalesce(sum(d.d_unapplied_credit_memo), 0) AS cm,
           coalesce(sum(d.d_contracted_mrr), 0) AS mrr,
           count(d.account_id)::integer AS n
    FROM (SELECT DISTINCT unnest(p_accounts) AS account_id) a
    LEFT JOIN d ON d.account_id = a.account_id
    GROUP BY a.account_id
  ), u AS (
    UPDATE account_metrics m SET
      total_invoice_balance = m.total_invoice_balance + s.ib,
      total_debit_memo_balance = m.total_debit_memo_balance + s.dm,
      unapplied_payment_amount = m.unapplied_payment_amount + s.up,
      unapplied_credit_memo_amount = m.unapplied_credit_memo_amount + s.cm,
      contracted_mrr = m.contracted_mrr + s.mrr,
      last_invoice_date = pb_last_invoice_date(m.account_id),
      last_metrics_update = GREATEST(m.last_metrics_update, statement_timestamp())
    FROM s
    WHERE m.account_id = s.account_id AND m.tenant_id = p_tenant
      AND (s.n > 0 OR p_stamp_unchanged)
    RETURNING m.account_id, s.n, pb_metrics_json(m) AS metrics
  ), e AS (
    INSERT INTO event (tenant_id, type, account_id, data)
    SELECT p_tenant, 'ACCOUNT_METRICS_REFRESHED', u.account_id, u.metrics
    FROM u WHERE pb_events_on()
    ORDER BY u.account_id
  )
  SELECT u.account_id, u.n FROM u;
$$;
"""


def _earlier(revision: str, name: str) -> str:
    """A function text of an earlier revision, put back as it was on downgrade."""
    return str(getattr(context.script.get_revision(revision).module, name))


def _statements(script: str, starts: str) -> list[str]:
    """The statements of a script, one per execute (asyncpg runs one statement at a time)."""
    parts = script.split(starts)
    return [p if i == 0 else starts + p for i, p in enumerate(parts) if p.strip()]


def upgrade() -> None:
    for statement in _statements(TABLES, "CREATE "):
        op.execute(statement)
    op.execute(EVENTS_ON)
    op.execute(METRICS_JSON)
    op.execute(ROW_JSON)
    for statement in _statements(TRIGGERS, "CREATE OR REPLACE FUNCTION"):
        op.execute(statement)
    for table, call, ops in ATTACH:
        for tg_op in ops:
            refs = "NEW TABLE AS new_rows" + (" OLD TABLE AS old_rows" if tg_op == "UPDATE" else "")
            op.execute(
                f"CREATE TRIGGER {table}_events_{tg_op.lower()} AFTER {tg_op} ON {table} "
                f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {call}"
            )
    op.execute(FOLD_METRICS)


def downgrade() -> None:
    op.execute(_earlier("0010", "FOLD_METRICS"))
    for table, _call, ops in ATTACH:
        for tg_op in ops:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_events_{tg_op.lower()} ON {table}")
    for fn in (
        "pb_account_events()", "pb_document_events()", "pb_payment_events()",
        "pb_order_events()", "pb_job_events()", "pb_bill_run_events()",
        "pb_bill_run_account_events()", "pb_metrics_json(account_metrics)",
        "pb_event_data(jsonb)", "pb_events_on()",
    ):  # fmt: skip
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    op.execute("DROP TABLE IF EXISTS webhook_delivery, webhook_endpoint, event")

"""freshness you can prove: a per-tenant watermark of the last complete refresh pass, live
metrics read without a lock, and a lastMetricsUpdate that never moves backwards

* ``tenant.metrics_current_as_of``: the instant a complete refresh pass over the tenant
  started (billing.metrics.refresh_tenant). Every change committed before it was folded,
  for every partner account the refresh did not set aside; it only moves forward. A quiet
  account is seen to be current without a row written for it.
* ``pb_live_metrics``: an account's stored metrics plus its pending ledger rows, read in
  the caller's snapshot (STABLE), with the number of rows pending: what the fold would
  store now. It writes nothing and takes no lock.
* ``pb_last_invoice_date``: the one rule for lastInvoiceDate (the latest posted invoice),
  used by the fold and by the live read alike.
* ``pb_fold_metrics`` stamps ``GREATEST(old stamp, statement_timestamp())``: the statement's
  start precedes the snapshot the fold reads the ledger with, so every change committed
  before the stamp is folded (the stamp is a bound), and GREATEST keeps it from moving
  backwards when a fold whose statement started earlier gets the account later. Before,
  the stamp was ``now()``, the transaction's start, which a later claim could commit after
  a newer stamp.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import context, op

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

LAST_INVOICE_DATE = """
CREATE OR REPLACE FUNCTION pb_last_invoice_date(p_account bigint)
RETURNS date LANGUAGE sql STABLE AS $$
  SELECT max(i.invoice_date) FROM invoice i
  WHERE i.account_id = p_account AND i.status = 'POSTED';
$$;
"""

LIVE_METRICS = """
CREATE OR REPLACE FUNCTION pb_live_metrics(p_tenant bigint, p_account bigint)
RETURNS TABLE (total_invoice_balance numeric, total_debit_memo_balance numeric,
               unapplied_payment_amount numeric, unapplied_credit_memo_amount numeric,
               contracted_mrr numeric, last_invoice_date date, pending integer)
LANGUAGE sql STABLE AS $$
  -- STABLE: read in the calling statement's snapshot, so the stored row and the pending
  -- rows belong to one moment. The sums are pb_fold_metrics' sums over the same rows; a
  -- test compares the two (tests/test_metrics_freshness.py).
  SELECT m.total_invoice_balance + p.ib, m.total_debit_memo_balance + p.dm,
         m.unapplied_payment_amount + p.up, m.unapplied_credit_memo_amount + p.cm,
         m.contracted_mrr + p.mrr, pb_last_invoice_date(m.account_id), p.n
  FROM account_metrics m,
       LATERAL (SELECT coalesce(sum(c.d_invoice_balance), 0) AS ib,
                       coalesce(sum(c.d_debit_memo_balance), 0) AS dm,
                       coalesce(sum(c.d_unapplied_payment), 0) AS up,
                       coalesce(sum(c.d_unapplied_credit_memo), 0) AS cm,
                       coalesce(sum(c.d_contracted_mrr), 0) AS mrr,
                       count(*)::integer AS n
                FROM metrics_change c
                WHERE c.tenant_id = p_tenant AND c.account_id = p_account) p
  WHERE m.account_id = p_account AND m.tenant_id = p_tenant;
$$;
"""

FOLD_METRICS = """
CREATE OR REPLACE FUNCTION pb_fold_metrics(p_tenant bigint, p_accounts bigint[],
                                           p_stamp_unchanged boolean)
RETURNS TABLE (r_account bigint, r_folded integer) LANGUAGE sql AS $$
  -- Consume the accounts' ledger rows (DELETE ... RETURNING: rows committed after this
  -- statement's snapshot stay for the next fold), add them up per account and add the sums
  -- to the stored metrics; re-derive lastInvoiceDate and stamp lastMetricsUpdate with the
  -- statement's start (before its snapshot: everything committed before the stamp is
  -- folded), never earlier than the stamp it replaces. The caller holds the accounts'
  -- metrics rows (or their lock). Returns the accounts whose metrics row moved, with the
  -- ledger rows folded into each.
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
    RETURNING m.account_id, s.n
  )
  SELECT u.account_id, u.n FROM u;
$$;
"""


def _earlier(revision: str, name: str) -> str:
    """A function text of an earlier revision, put back as it was on downgrade."""
    return str(getattr(context.script.get_revision(revision).module, name))


def upgrade() -> None:
    op.add_column(
        "tenant", sa.Column("metrics_current_as_of", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(LAST_INVOICE_DATE)
    op.execute(LIVE_METRICS)
    op.execute(FOLD_METRICS)


def downgrade() -> None:
    op.execute(_earlier("0008", "FOLD_METRICS"))
    op.execute("DROP FUNCTION IF EXISTS pb_live_metrics(bigint, bigint)")
    op.execute("DROP FUNCTION IF EXISTS pb_last_invoice_date(bigint)")
    op.drop_column("tenant", "metrics_current_as_of")

"""metrics fold and refresh functions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FOLD = """
CREATE OR REPLACE FUNCTION pb_fold_account_metrics(p_tenant bigint, p_account bigint)
RETURNS integer LANGUAGE sql AS $$
  -- Consume the account's ledger rows (DELETE ... RETURNING: rows committed after this
  -- statement's snapshot stay for the next fold) and add them to the stored metrics.
  WITH d AS (
    DELETE FROM metrics_change WHERE tenant_id = p_tenant AND account_id = p_account
    RETURNING d_invoice_balance, d_debit_memo_balance, d_unapplied_payment,
              d_unapplied_credit_memo, d_contracted_mrr
  ), s AS (
    SELECT coalesce(sum(d_invoice_balance), 0) AS ib,
           coalesce(sum(d_debit_memo_balance), 0) AS dm,
           coalesce(sum(d_unapplied_payment), 0) AS up,
           coalesce(sum(d_unapplied_credit_memo), 0) AS cm,
           coalesce(sum(d_contracted_mrr), 0) AS mrr,
           count(*)::integer AS n
    FROM d
  ), u AS (
    UPDATE account_metrics m SET
      total_invoice_balance = m.total_invoice_balance + s.ib,
      total_debit_memo_balance = m.total_debit_memo_balance + s.dm,
      unapplied_payment_amount = m.unapplied_payment_amount + s.up,
      unapplied_credit_memo_amount = m.unapplied_credit_memo_amount + s.cm,
      contracted_mrr = m.contracted_mrr + s.mrr,
      last_invoice_date = (SELECT max(i.invoice_date) FROM invoice i
                           WHERE i.account_id = p_account AND i.status = 'POSTED'),
      last_metrics_update = now()
    FROM s
    WHERE m.account_id = p_account AND m.tenant_id = p_tenant
    RETURNING s.n
  )
  SELECT coalesce((SELECT n FROM u), 0);
$$;
"""

REFRESH = """
CREATE OR REPLACE FUNCTION pb_refresh_account(p_tenant bigint, p_account bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  -- One account per (implicit) transaction; -1 when another refresher holds it.
  IF NOT pg_try_advisory_xact_lock(7101, ((p_account + 2147483648) % 4294967296 - 2147483648)::integer) THEN
    RETURN -1;
  END IF;
  RETURN pb_fold_account_metrics(p_tenant, p_account);
END;
$$;
"""


def upgrade() -> None:
    op.execute(FOLD)
    op.execute(REFRESH)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pb_refresh_account(bigint, bigint)")
    op.execute("DROP FUNCTION IF EXISTS pb_fold_account_metrics(bigint, bigint)")

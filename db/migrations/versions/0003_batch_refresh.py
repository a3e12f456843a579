"""set-based refresh of a batch of partner accounts

The refresher claims accounts by locking their ``account_metrics`` rows with
FOR UPDATE SKIP LOCKED. Row locks live in the tuples, not in the shared lock table, so
a batch of hundreds of accounts per transaction cannot exhaust it (thousands of
advisory locks in one transaction do). Every other writer of the metrics row (the
ordinary write path, the partnerAccount switch, refreshAccountMetrics) takes the same
row lock by updating the row, so a claimed account is never folded twice at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

REFRESH_BATCH = """
CREATE OR REPLACE FUNCTION pb_refresh_accounts(p_tenant bigint, p_accounts bigint[])
RETURNS TABLE (r_account bigint, r_folded integer) LANGUAGE plpgsql AS $$
DECLARE
  claimed bigint[];
BEGIN
  -- 1. Claim: lock the metrics rows nobody else holds; held ones stay for the next run.
  SELECT array_agg(c.account_id) INTO claimed FROM (
    SELECT m.account_id FROM account_metrics m
    WHERE m.tenant_id = p_tenant AND m.account_id = ANY (p_accounts)
    ORDER BY m.account_id
    FOR UPDATE SKIP LOCKED
  ) c;
  IF claimed IS NULL THEN
    RETURN;
  END IF;
  -- 2. Fold, in a new statement (a new snapshot, taken after the claim): consume the
  -- claimed accounts' ledger rows with DELETE ... RETURNING and add them up per account.
  -- Rows committed after this snapshot stay for the next fold.
  RETURN QUERY
  WITH d AS (
    DELETE FROM metrics_change c
    WHERE c.tenant_id = p_tenant AND c.account_id = ANY (claimed)
    RETURNING c.account_id, c.d_invoice_balance, c.d_debit_memo_balance,
              c.d_unapplied_payment, c.d_unapplied_credit_memo, c.d_contracted_mrr
  ), s AS (
    SELECT d.account_id,
           sum(d.d_invoice_balance) AS ib, sum(d.d_debit_memo_balance) AS dm,
           sum(d.d_unapplied_payment) AS up, sum(d.d_unapplied_credit_memo) AS cm,
           sum(d.d_contracted_mrr) AS mrr, count(*)::integer AS n
    FROM d GROUP BY d.account_id
  ), u AS (
    UPDATE account_metrics m SET
      total_invoice_balance = m.total_invoice_balance + s.ib,
      total_debit_memo_balance = m.total_debit_memo_balance + s.dm,
      unapplied_payment_amount = m.unapplied_payment_amount + s.up,
      unapplied_credit_memo_amount = m.unapplied_credit_memo_amount + s.cm,
      contracted_mrr = m.contracted_mrr + s.mrr,
      last_invoice_date = (SELECT max(i.invoice_date) FROM invoice i
                           WHERE i.account_id = m.account_id AND i.status = 'POSTED'),
      last_metrics_update = now()
    FROM s
    WHERE m.account_id = s.account_id AND m.tenant_id = p_tenant
    RETURNING m.account_id, s.n
  )
  SELECT u.account_id, u.n FROM u;
END;
$$;
"""

# One account, same claim: -1 when another refresher holds the row.
REFRESH_ONE = """
CREATE OR REPLACE FUNCTION pb_refresh_account(p_tenant bigint, p_account bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM account_metrics
  WHERE tenant_id = p_tenant AND account_id = p_account
  FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN -1;
  END IF;
  RETURN pb_fold_account_metrics(p_tenant, p_account);
END;
$$;
"""

REFRESH_ONE_ADVISORY = """
CREATE OR REPLACE FUNCTION pb_refresh_account(p_tenant bigint, p_account bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(7101, ((p_account + 2147483648) % 4294967296 - 2147483648)::integer) THEN
    RETURN -1;
  END IF;
  RETURN pb_fold_account_metrics(p_tenant, p_account);
END;
$$;
"""


def upgrade() -> None:
    op.execute(REFRESH_BATCH)
    op.execute(REFRESH_ONE)


def downgrade() -> None:
    op.execute(REFRESH_ONE_ADVISORY)
    op.execute("DROP FUNCTION IF EXISTS pb_refresh_accounts(bigint, bigint[])")

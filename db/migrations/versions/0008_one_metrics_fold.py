"""one home for the metric fold: pb_fold_metrics consumes a set of accounts' ledger rows and
adds them to their metrics; the one-account fold and the batch refresh both call it

Until now pb_fold_account_metrics (0002) and pb_refresh_accounts (0003) each carried their
own copy of the DELETE ... RETURNING, the sums and the UPDATE of account_metrics.
pb_fold_metrics is that fold, once. ``p_stamp_unchanged`` keeps the two callers' one
difference: the one-account fold (refreshAccountMetrics, the partner switch) stamps
lastMetricsUpdate even when there was nothing to fold; the batch refresh leaves an account
whose ledger rows someone else already folded alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""
from typing import Sequence, Union

from alembic import context, op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FOLD_METRICS = """
CREATE OR REPLACE FUNCTION pb_fold_metrics(p_tenant bigint, p_accounts bigint[],
                                           p_stamp_unchanged boolean)
RETURNS TABLE (r_account bigint, r_folded integer) LANGUAGE sql AS $$
  -- Consume the accounts' ledger rows (DELETE ... RETURNING: rows committed after this
  -- statement's snapshot stay for the next fold), add them up per account and add the sums
  -- to the stored metrics; re-derive lastInvoiceDate and stamp lastMetricsUpdate. The caller
  -- holds the accounts' metrics rows (or their lock). Returns the accounts whose metrics row
  -- moved, with the ledger rows folded into each.
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
      last_invoice_date = (SELECT max(i.invoice_date) FROM invoice i
                           WHERE i.account_id = m.account_id AND i.status = 'POSTED'),
      last_metrics_update = now()
    FROM s
    WHERE m.account_id = s.account_id AND m.tenant_id = p_tenant
      AND (s.n > 0 OR p_stamp_unchanged)
    RETURNING m.account_id, s.n
  )
  SELECT u.account_id, u.n FROM u;
$$;
"""

FOLD_ONE = """
CREATE OR REPLACE FUNCTION pb_fold_account_metrics(p_tenant bigint, p_account bigint)
RETURNS integer LANGUAGE sql AS $$
  -- One account, stamped even when nothing was pending: the ledger rows folded.
  SELECT coalesce((SELECT r_folded FROM pb_fold_metrics(p_tenant, ARRAY[p_account], true)), 0);
$$;
"""

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
  -- 2. Fold, in a new statement (a new snapshot, taken after the claim). An account whose
  -- ledger rows another fold consumed in between is left as it is.
  RETURN QUERY SELECT f.r_account, f.r_folded FROM pb_fold_metrics(p_tenant, claimed, false) f;
END;
$$;
"""


def _earlier(revision: str, name: str) -> str:
    """A function text of an earlier revision, put back as it was on downgrade."""
    return str(getattr(context.script.get_revision(revision).module, name))


def upgrade() -> None:
    op.execute(FOLD_METRICS)
    op.execute(FOLD_ONE)
    op.execute(REFRESH_BATCH)


def downgrade() -> None:
    op.execute(_earlier("0002", "FOLD"))
    op.execute(_earlier("0003", "REFRESH_BATCH"))
    op.execute("DROP FUNCTION IF EXISTS pb_fold_metrics(bigint, bigint[], boolean)")

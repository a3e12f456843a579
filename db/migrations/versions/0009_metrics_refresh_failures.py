"""accounts the refresh set aside: one row per partner account whose fold failed

When folding an account's ledger rows fails (its totals would overflow their NUMERIC
columns, say), the refresh splits the failing batch until only that account is left, folds
every other one, and records the account here with the error and when to try it again
(backing off). The next successful fold of the account removes its row. The API answers the
error as Account.metricsRefreshError and /metrics counts the rows, from any process.

pb_check_totals refuses up front a partner write that would take the account's stored totals
past their columns (ordinary accounts already are refused: their metrics row moves in the
write): it raises numeric_value_out_of_range, as the ordinary path does, which the API
answers as VALIDATION.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


CHECK_TOTALS = """
CREATE OR REPLACE FUNCTION pb_check_totals(p_account bigint, p_ib numeric, p_dm numeric,
                                           p_up numeric, p_cm numeric, p_mrr numeric)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  -- The stored totals plus this write's deltas, cast to the columns' types: a sum that
  -- does not fit raises numeric_value_out_of_range (22003) before anything is written.
  PERFORM (m.total_invoice_balance + p_ib)::numeric(20,4),
          (m.total_debit_memo_balance + p_dm)::numeric(20,4),
          (m.unapplied_payment_amount + p_up)::numeric(20,4),
          (m.unapplied_credit_memo_amount + p_cm)::numeric(20,4),
          (m.contracted_mrr + p_mrr)::numeric(24,6)
  FROM account_metrics m WHERE m.account_id = p_account;
  RETURN true;
END;
$$;
"""


def upgrade() -> None:
    op.execute(CHECK_TOTALS)
    op.create_table(
        "metrics_refresh_failure",
        sa.Column(
            "account_id",
            sa.BigInteger,
            sa.ForeignKey("account.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.BigInteger, sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column(
            "first_failed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column(
            "last_failed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_metrics_refresh_failure_tenant", "metrics_refresh_failure", ["tenant_id"])


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS pb_check_totals(bigint, numeric, numeric, numeric, numeric, numeric)"
    )
    op.drop_table("metrics_refresh_failure")

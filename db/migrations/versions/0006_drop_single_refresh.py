"""drop pb_refresh_account: the tenant refresh folds accounts in batches
(pb_refresh_accounts) and refreshAccountMetrics locks and folds in its own transaction,
so the one-account function is no longer called

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

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


def upgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS pb_refresh_account(bigint, bigint)")


def downgrade() -> None:
    op.execute(REFRESH_ONE)

"""bill run: the post or cancel under way

A run keeps its status (COMPLETED, or ERROR for a cancel) while its drafts are being
posted or canceled in short transactions, and takes POSTED or CANCELED in the
transaction that leaves no draft. ``posting`` ('POST' or 'CANCEL') marks the operation
under way, set under the run's row lock, so a post and a cancel exclude each other and an
interrupted one is continued by repeating it (or by a restarted worker).

Runs that an earlier version left POSTED or CANCELED with drafts (interrupted between
chunks) go back to COMPLETED with the matching marker: a run with invoices never ended
in ERROR, which is only for a run whose every account failed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("bill_run", sa.Column("posting", sa.String(), nullable=True))
    op.add_column(
        "bill_run", sa.Column("posting_started_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        "ck_bill_run_posting", "bill_run", "posting IS NULL OR posting IN ('POST', 'CANCEL')"
    )
    op.execute(
        """
        UPDATE bill_run r SET
          posting = CASE r.status WHEN 'POSTED' THEN 'POST' ELSE 'CANCEL' END,
          posting_started_at = now(),
          status = 'COMPLETED'
        WHERE r.status IN ('POSTED', 'CANCELED')
          AND EXISTS (SELECT 1 FROM invoice i WHERE i.bill_run_id = r.id AND i.status = 'DRAFT')
        """
    )


def downgrade() -> None:
    # The earlier version moved the status first and walked the drafts after it.
    op.execute(
        """
        UPDATE bill_run SET status = CASE posting WHEN 'POST' THEN 'POSTED' ELSE 'CANCELED' END
        WHERE posting IS NOT NULL
        """
    )
    op.drop_constraint("ck_bill_run_posting", "bill_run", type_="check")
    op.drop_column("bill_run", "posting_started_at")
    op.drop_column("bill_run", "posting")

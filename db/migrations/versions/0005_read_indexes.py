"""indexes for reading a subscription's charges and a bill run's drafts

A subscription's charges were read by rate plan with a sequential scan of every charge
(10 ms at 60,000 charges, growing with the table); a bill run's post or cancel found its
remaining drafts among all its invoices on every chunk.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index(
        "ix_subscription_charge_rate_plan", "subscription_charge", ["subscription_rate_plan_id"]
    )
    op.create_index(
        "ix_invoice_bill_run_draft",
        "invoice",
        ["bill_run_id", "id"],
        postgresql_where=sa.text("status = 'DRAFT'"),
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_bill_run_draft", table_name="invoice")
    op.drop_index("ix_subscription_charge_rate_plan", table_name="subscription_charge")

"""drop the tenant foreign keys of the tables every write inserts into

Every row of these tables belongs to an account (directly or through its document), and
its tenant_id is the authenticated tenant the API wrote it for. The foreign key to tenant
re-proved that on every insert with a FOR KEY SHARE lock on the tenant's one row: every
writer of a tenant locked the same row, so PostgreSQL built a new MultiXact for each of
them, and a 50-subscription order ran some 300 such checks. Tenants are never deleted.
account (the root of a tenant's data) and the low-volume tables keep theirs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from typing import Sequence, Union

from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

HOT_TABLES = (
    "invoice",
    "invoice_item",
    "payment",
    "metrics_change",
    "sales_order",
    "order_action",
    "subscription",
    "subscription_rate_plan",
    "subscription_charge",
)


def upgrade() -> None:
    for table in HOT_TABLES:
        op.drop_constraint(f"{table}_tenant_id_fkey", table, type_="foreignkey")


def downgrade() -> None:
    for table in HOT_TABLES:
        op.create_foreign_key(f"{table}_tenant_id_fkey", table, "tenant", ["tenant_id"], ["id"])

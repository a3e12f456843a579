"""the metrics ledger is read per account through its index, whatever one account holds

``pb_live_metrics`` (``liveMetrics``, ``pendingMetricChanges``) and ``pb_fold_metrics`` read
an account's pending rows of ``metrics_change`` with ``account_id`` taken from a join or a
function argument, never a constant. PostgreSQL then estimates the rows of one account as
the ledger's rows divided by its distinct accounts. ANALYZE counts those from a sample, and
in the product's main case, one reseller holding nearly every pending row of its tenant, it
finds a handful: one account's share looks like half the table, the scan and the index cost
the same, and the planner may read the whole ledger for every account. Measured on 100,100
ledger rows (100,000 of one account): a small account's live read took 4.7-6.7 ms by a scan
and 0.25 ms by the index; the big account's 22 ms either way.

The column's ``n_distinct`` is therefore declared (ANALYZE keeps the override): one distinct
account per 20 ledger rows, the order of the writes one account takes between two refresh
passes. A constant still meets the sampled most-common values, so only the per-account
estimate of joins and arguments changes. ``tests/test_metrics_freshness.py`` checks the plan
of a small account's read beside a large one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from typing import Sequence, Union

from alembic import op

revision: str = "0013"
down_revision: Union[str, None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("ALTER TABLE metrics_change ALTER COLUMN account_id SET (n_distinct = -0.05)")
    op.execute("ANALYZE metrics_change")


def downgrade() -> None:
    op.execute("ALTER TABLE metrics_change ALTER COLUMN account_id RESET (n_distinct)")
    op.execute("ANALYZE metrics_change")

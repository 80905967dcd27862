"""Raw alerts are acknowledged once stored and applied in the background: who received each body, when it
was applied and with what outcome, and an index of the bodies still waiting.

Revision ID: 0006_raw_alert_intake
Revises: 0005_remediations
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_raw_alert_intake"
down_revision = "0005_remediations"
branch_labels = None
depends_on = None

UNAPPLIED = sa.text("valid = 0 AND error IS NULL")


def upgrade() -> None:
    """Add ``received_by``, ``applied_at`` and ``outcome`` to ``raw_alerts`` (the outcome of the bodies stored
    before: ``accepted`` when applied, ``failed`` or ``invalid`` by their error) and the partial index
    ``raw_alerts_unapplied`` (the applier's claim reads only the waiting bodies)."""
    with op.batch_alter_table("raw_alerts") as batch:
        batch.add_column(sa.Column("received_by", sa.Text))
        batch.add_column(sa.Column("applied_at", sa.Float))
        batch.add_column(sa.Column("outcome", sa.Text))
    op.execute(
        "UPDATE raw_alerts SET outcome = CASE WHEN valid = 1 THEN 'accepted'"
        " WHEN error LIKE 'processing failed%' OR error LIKE 'replay failed%' OR error LIKE 'not replayable%'"
        " THEN 'failed' WHEN error IS NOT NULL THEN 'invalid' END"
    )
    op.create_index("raw_alerts_unapplied", "raw_alerts", ["id"], sqlite_where=UNAPPLIED, postgresql_where=UNAPPLIED)


def downgrade() -> None:
    """Drop the index and the three columns."""
    op.drop_index("raw_alerts_unapplied", table_name="raw_alerts")
    with op.batch_alter_table("raw_alerts") as batch:
        batch.drop_column("outcome")
        batch.drop_column("applied_at")
        batch.drop_column("received_by")

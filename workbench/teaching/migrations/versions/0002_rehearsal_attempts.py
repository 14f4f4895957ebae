"""Rehearsal attempts (issue 18): the plan-geometry columns may be empty.

A rehearsal attempt is scored on the simulator's metrics (tip to target, Frechet distance to the
expert path, ...; ``metrics_json``), not on a planned line, so its ``angle_deviation_deg`` and
``offset_*`` columns are NULL. Batch mode rebuilds the table on SQLite (no ALTER COLUMN there).

Revision ID: 0002_rehearsal_attempts
Revises: 0001_attempts
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_rehearsal_attempts"
down_revision = "0001_attempts"
branch_labels = None
depends_on = None

PLAN_COLUMNS = ("angle_deviation_deg", "offset_at_entry_mm", "offset_at_target_mm", "offset_mm")


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for name in PLAN_COLUMNS:
            batch.alter_column(name, existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM attempts WHERE kind = 'rehearsal'")
    with op.batch_alter_table("attempts") as batch:
        for name in PLAN_COLUMNS:
            batch.alter_column(name, existing_type=sa.Float, nullable=False)

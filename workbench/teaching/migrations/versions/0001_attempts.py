"""The attempts table: one row per submitted plan (kind "plan"; "rehearsal" reserved for issue 18).

Revision ID: 0001_attempts
Revises:
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_attempts"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trainee", sa.String(32), nullable=False),
        sa.Column("session", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("submitted_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("wrong_level", sa.Boolean, nullable=False),
        sa.Column("wrong_side", sa.Boolean, nullable=False),
        sa.Column("angle_deviation_deg", sa.Float, nullable=False),
        sa.Column("offset_at_entry_mm", sa.Float, nullable=False),
        sa.Column("offset_at_target_mm", sa.Float, nullable=False),
        sa.Column("offset_mm", sa.Float, nullable=False),
        sa.Column("safety_status", sa.String(16), nullable=False),
        sa.Column("plan_sha256", sa.String(64), nullable=False),
        sa.Column("metrics_json", sa.Text, nullable=False),
        sa.Column("software", sa.String(64), nullable=False),
        sa.CheckConstraint("kind IN ('plan', 'rehearsal')", name="ck_attempts_kind"),
        sa.CheckConstraint("score >= 0 AND score <= 100", name="ck_attempts_score"),
    )
    op.create_index("ix_attempts_session", "attempts", ["session"])
    op.create_index("ix_attempts_trainee", "attempts", ["trainee"])


def downgrade() -> None:
    op.drop_index("ix_attempts_trainee", "attempts")
    op.drop_index("ix_attempts_session", "attempts")
    op.drop_table("attempts")

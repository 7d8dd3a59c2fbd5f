"""promotion requests

One row per request to move an alias under the two-person rule (`champion`): the version asked
for, the alias revision it was asked against (the approval's compare-and-swap), who asked and
why, the gate snapshot they saw, and the decision (approved, rejected, stale, expired) with who
made it. Chained after 0004: the policy code that writes it needs the registry core.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("from_version_id", sa.String(length=32), nullable=True),
        sa.Column("expected_revision", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requester_role", sa.String(length=64), nullable=True),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decider_role", sa.String(length=64), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_name"], ["models.name"], name=op.f("fk_promotion_requests_model_name_models")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_promotion_requests_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["from_version_id"],
            ["model_versions.id"],
            name=op.f("fk_promotion_requests_from_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_requests")),
    )
    op.create_index(
        "ix_promotion_requests_model_alias_status",
        "promotion_requests",
        ["model_name", "alias", "status"],
    )
    op.create_index("ix_promotion_requests_created", "promotion_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_promotion_requests_created", table_name="promotion_requests")
    op.drop_index("ix_promotion_requests_model_alias_status", table_name="promotion_requests")
    op.drop_table("promotion_requests")

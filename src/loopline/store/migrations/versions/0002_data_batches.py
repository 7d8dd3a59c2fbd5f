"""data batches

One row per ingest batch of a raw table: its sources and their hashes, row counts, every broken
contract rule with counts and examples, the batch report and profile artifacts, the lake
versions it wrote, and its status (pending, committed, rejected, rolled_back). A batch's
`committed` status and its dataset version are written in one transaction: that is the commit
point an interrupted ingest is reconciled against.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("use_case", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("contract_version", sa.Integer(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("rows_in", sa.BigInteger(), nullable=False),
        sa.Column("rows_accepted", sa.BigInteger(), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("table_version", sa.Integer(), nullable=True),
        sa.Column("quarantine_version", sa.Integer(), nullable=True),
        sa.Column("schema_changes", sa.JSON(), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=32), nullable=True),
        sa.Column("report_id", sa.String(length=80), nullable=True),
        sa.Column("profile_id", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_data_batches_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_data_batches_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["artifacts.id"], name=op.f("fk_data_batches_report_id_artifacts")
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"], ["artifacts.id"], name=op.f("fk_data_batches_profile_id_artifacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_batches")),
    )
    with op.batch_alter_table("data_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_data_batches_dataset_created", ["dataset", "created_at"], unique=False
        )
        batch_op.create_index("ix_data_batches_dataset_status", ["dataset", "status"], unique=False)
        batch_op.create_index("ix_data_batches_run_id", ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_data_batches_run_id")
        batch_op.drop_index("ix_data_batches_dataset_status")
        batch_op.drop_index("ix_data_batches_dataset_created")
    op.drop_table("data_batches")

"""run search and crash detection

Adds what fast run search and crash detection need: a `run_params` table (flattened params,
indexed by key and value), `notes`, `git_dirty`, `pid`, `host` and `heartbeat_at` on runs, and
indexes for time-ordered listings, nested runs and final-metric searches. Existing runs keep
their params JSON; their flattened rows are back-filled here so old runs are searchable too.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

# The flattening rules of `loopline.tracking.flatten_params`, frozen here: a migration must not
# change behaviour when the package does.
_TEXT_MAX = 1000


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif prefix:
        out[prefix] = value


def _row(run_id: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        text, number = None, None
    elif isinstance(value, bool):
        text, number = "true" if value else "false", None
    elif isinstance(value, int | float):
        number = float(value)
        text = str(value)
        number = number if math.isfinite(number) else None
    elif isinstance(value, str):
        text = value
        try:
            number = float(value)
        except ValueError:
            number = None
        number = number if number is not None and math.isfinite(number) else None
    else:
        text, number = json.dumps(value, sort_keys=True, default=str), None
    if text is not None:
        text = text[:_TEXT_MAX]
    return {"run_id": run_id, "key": key[:250], "value_text": text, "value_num": number}


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notes", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("git_dirty", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_runs_started_id", ["started_at", "id"], unique=False)
        batch_op.create_index(
            "ix_runs_parent_started", ["parent_run_id", "started_at"], unique=False
        )

    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_metrics_final_key_value",
            ["key", "is_final", "value", "run_id", "step"],
            unique=False,
        )

    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.create_index("ix_run_tags_key_value_run", ["key", "value", "run_id"], unique=False)

    run_params = op.create_table(
        "run_params",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value_text", sa.String(length=1000), nullable=True),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_params_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_run_params")),
    )
    with op.batch_alter_table("run_params", schema=None) as batch_op:
        batch_op.create_index("ix_run_params_key_num", ["key", "value_num", "run_id"], unique=False)
        batch_op.create_index(
            "ix_run_params_key_text", ["key", "value_text", "run_id"], unique=False
        )

    # Back-fill: split git's '-dirty' suffix into the flag, flatten existing params.
    bind = op.get_bind()
    runs = sa.table(
        "runs",
        sa.column("id", sa.String),
        sa.column("params", sa.JSON),
        sa.column("git_commit", sa.String),
        sa.column("git_dirty", sa.Boolean),
    )
    bind.execute(
        runs.update()
        .where(runs.c.git_commit.like("%-dirty"))
        .values(git_commit=sa.func.replace(runs.c.git_commit, "-dirty", ""), git_dirty=True)
    )
    bind.execute(
        runs.update()
        .where(runs.c.git_commit.is_not(None), runs.c.git_dirty.is_(None))
        .values(git_dirty=False)
    )
    batch: list[dict[str, Any]] = []
    for run_id, params in bind.execute(sa.select(runs.c.id, runs.c.params)):
        flat: dict[str, Any] = {}
        _flatten(params or {}, "", flat)
        batch.extend(_row(run_id, key, value) for key, value in flat.items())
        if len(batch) >= 5000:
            op.bulk_insert(run_params, batch)
            batch = []
    if batch:
        op.bulk_insert(run_params, batch)


def downgrade() -> None:
    with op.batch_alter_table("run_params", schema=None) as batch_op:
        batch_op.drop_index("ix_run_params_key_text")
        batch_op.drop_index("ix_run_params_key_num")
    op.drop_table("run_params")
    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_run_tags_key_value_run")
    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_run_metrics_final_key_value")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_parent_started")
        batch_op.drop_index("ix_runs_started_id")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("host")
        batch_op.drop_column("pid")
        batch_op.drop_column("git_dirty")
        batch_op.drop_column("notes")

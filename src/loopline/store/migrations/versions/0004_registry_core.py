"""registry core: normalised model names, a version counter, model packages

Adds to `models` a unique `name_key` (the normalised name: URL-decoded, NFKC, trimmed,
casefolded) so two spellings of one name cannot coexist, and `last_version`, the counter a
registration increments in its own transaction (gap-free version numbers under concurrency).
Adds `model_versions.package_id`, the verified model package of a version. Existing models get
their key and counter back-filled; two existing names with the same key stop the upgrade with
a message naming them.

Columns are added in place (no table rebuild on SQLite: other tables reference these two, and
a rebuild would trip their foreign keys).

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-24 12:00:00
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key(name: str) -> str:
    # The key rule of `loopline.registry.names`, frozen and lenient: old names were never
    # validated by it, and a migration must not change when the package does.
    text = name
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text).strip()
    return unicodedata.normalize("NFKC", text.casefold())[:100]


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.add_column(
        "models",
        sa.Column("name_key", sa.String(length=100), nullable=False, server_default=""),
    )
    op.add_column(
        "models", sa.Column("last_version", sa.Integer(), nullable=False, server_default="0")
    )
    if sqlite:
        # SQLite adds a referencing column in place only when the clause is part of ADD COLUMN.
        op.execute(
            "ALTER TABLE model_versions ADD COLUMN package_id VARCHAR(80) REFERENCES artifacts (id)"
        )
    else:
        op.add_column(
            "model_versions", sa.Column("package_id", sa.String(length=80), nullable=True)
        )
        op.create_foreign_key(
            op.f("fk_model_versions_package_id_artifacts"),
            "model_versions",
            "artifacts",
            ["package_id"],
            ["id"],
        )

    models = sa.table(
        "models",
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
        sa.column("last_version", sa.Integer),
    )
    versions = sa.table("model_versions", sa.column("model_name"), sa.column("version"))
    latest = dict(
        bind.execute(
            sa.select(versions.c.model_name, sa.func.max(versions.c.version)).group_by(
                versions.c.model_name
            )
        ).all()
    )
    seen: dict[str, str] = {}
    for (name,) in bind.execute(sa.select(models.c.name).order_by(models.c.name)).all():
        key = _key(name)
        if key in seen:
            raise RuntimeError(
                f"models '{seen[key]}' and '{name}' have the same normalised name '{key}'; "
                "rename one of them (and its versions and aliases) before upgrading"
            )
        seen[key] = name
        bind.execute(
            models.update()
            .where(models.c.name == name)
            .values(name_key=key, last_version=latest.get(name) or 0)
        )
    op.create_index("uq_models_name_key", "models", ["name_key"], unique=True)
    if not sqlite:
        op.alter_column("models", "name_key", server_default=None)


def downgrade() -> None:
    op.drop_index("uq_models_name_key", table_name="models")
    # In place where SQLite allows it (a rebuild of `models` would trip referencing rows).
    op.drop_column("models", "last_version")
    op.drop_column("models", "name_key")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("model_versions", schema=None) as batch_op:
            batch_op.drop_column("package_id")
    else:
        op.drop_constraint(
            op.f("fk_model_versions_package_id_artifacts"), "model_versions", type_="foreignkey"
        )
        op.drop_column("model_versions", "package_id")

"""Several models: what a prompt asks of its model, and the model a batch runs.

- ``prompt.model`` (a model's name, or None for any) and ``prompt.min_quality`` (the lowest
  quality score accepted, or None), given per request or for a whole job;
- ``batch.model``, the served model the router chose with the device (None on batches routed
  before this revision: the device's one model).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _new_columns() -> dict[str, list[sa.Column]]:
    """The columns added, by table (built afresh: a Column belongs to one table)."""
    return {
        "prompt": [sa.Column("model", sa.String(length=200), nullable=True),
                   sa.Column("min_quality", sa.Float(), nullable=True)],
        "batch": [sa.Column("model", sa.String(length=200), nullable=True)],
    }


def _columns_of(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    """Add the three nullable columns where missing (as 0002 does: a ledger taken as 0001
    because it has no revision may already hold columns of later releases)."""
    for table, columns in _new_columns().items():
        have = _columns_of(table)
        missing = [c for c in columns if c.name not in have]
        if not missing:
            continue
        with op.batch_alter_table(table) as batch:
            for column in missing:
                batch.add_column(column)


def downgrade() -> None:
    """Drop the three columns."""
    for table, columns in _new_columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)

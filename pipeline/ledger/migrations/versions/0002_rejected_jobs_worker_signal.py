"""What the ledger gained after 79802b8: rejected jobs, the worker of a batch, the signal,
per-request sampling.

- ``job.error`` (why a submission was refused) and the ``REJECTED`` job status, which on
  PostgreSQL is a new label of the native ``jobstatus`` enum;
- ``batch.worker_id``, the worker that claimed a batch last (lost-worker take-back);
- ``result.intensity_signal``, average or marginal intensity and where it came from;
- ``prompt.sampling``, a request's own sampling parameters and response format (JSON).

Releases between 79802b8 and this revision added these nullable columns one by one at start-up,
so each is added only where it is missing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None



def _new_columns() -> dict[str, list[sa.Column]]:
    """The columns added, by table (built afresh: a Column belongs to one table)."""
    return {
        "job": [sa.Column("error", sa.Text(), nullable=True)],
        "batch": [sa.Column("worker_id", sa.String(length=200), nullable=True)],
        "result": [sa.Column("intensity_signal", sa.String(length=80), nullable=True)],
        "prompt": [sa.Column("sampling", sa.JSON(), nullable=True)],
    }


def _columns_of(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    """Add the four nullable columns where missing, and ``REJECTED`` to PostgreSQL's enum.

    ``ADD VALUE`` inside a transaction needs PostgreSQL 12 or newer; nothing in this
    transaction uses the new label, which is all PostgreSQL asks.
    """
    for table, columns in _new_columns().items():
        have = _columns_of(table)
        with op.batch_alter_table(table) as batch:
            for column in (c for c in columns if c.name not in have):
                batch.add_column(column)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE jobstatus ADD VALUE IF NOT EXISTS 'REJECTED'")


def downgrade() -> None:
    """Drop the four columns; PostgreSQL cannot drop an enum label, so ``REJECTED`` stays."""
    for table, columns in _new_columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)

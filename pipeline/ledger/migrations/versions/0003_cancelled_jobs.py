"""Cancelled jobs: the ``cancelled`` job status (``ecobatch cancel``, ``Client.cancel``).

The ledger stores a status by its enum member's name, ``CANCELED`` (value ``cancelled``): eight
characters, so SQLite's ``VARCHAR(8)`` column holds it unchanged (widening it would mean
rebuilding ``job`` under the prompts' foreign key). On PostgreSQL it is a new label of the
native ``jobstatus`` enum.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``CANCELED`` to PostgreSQL's ``jobstatus`` enum (PostgreSQL 12 or newer)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE jobstatus ADD VALUE IF NOT EXISTS 'CANCELED'")


def downgrade() -> None:
    """PostgreSQL cannot drop an enum label, so ``CANCELED`` stays."""

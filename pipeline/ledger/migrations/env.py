"""Alembic's environment: migrate the connection ecobatch handed over, in batch mode on SQLite.

Only online migrations are supported; the connection comes from
:func:`pipeline.ledger.migrations.alembic_config`, never from a URL in a file.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from pipeline.ledger import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def run_migrations_online() -> None:
    """Run the pending revisions on the connection in ``config.attributes``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("ecobatch migrations run through `ecobatch db upgrade`, not bare alembic")
    context.configure(connection=connection, target_metadata=SQLModel.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()

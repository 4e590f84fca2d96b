"""Alembic migrations of the ledger, configured in code so they run from an installed wheel.

No ``alembic.ini`` is read: :func:`alembic_config` points Alembic at this package and hands it
an open connection of ecobatch's own engine (SQLite pragmas, the psycopg 3 URL), which
``env.py`` migrates. ``HEAD_REVISION`` lets a process check a ledger without importing Alembic;
a test keeps it equal to the newest script in ``versions/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

MIGRATIONS_DIR = Path(__file__).parent
BASE_REVISION = "0001"
"""The ledger as made by the release before migrations (commit 79802b8)."""
HEAD_REVISION = "0004"
"""The newest revision; what ``make_engine`` creates and expects."""


def alembic_config(connection: Connection) -> Config:
    """An Alembic config for this package that migrates ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config

"""Opening the ledger: SQLite pragmas (migrations: ``test_migrations.py``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from pipeline.ledger.db import make_engine


def test_sqlite_ledger_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000

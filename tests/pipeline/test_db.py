"""Opening the ledger: SQLite pragmas, and columns added since an older ledger was made."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from pipeline.ledger.db import make_engine, normalise_url


def test_sqlite_ledger_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_an_older_ledger_gains_the_nullable_columns_added_since(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE prompt DROP COLUMN error"))
    assert "error" not in {c["name"] for c in inspect(create_engine(normalise_url(db_url)))
                           .get_columns("prompt")}
    reopened = make_engine(db_url)
    assert "error" in {c["name"] for c in inspect(reopened).get_columns("prompt")}

"""Engines and sessions for the SQL ledger (SQLite in WAL mode by default, PostgreSQL by URL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy import Enum as SAEnum
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from pipeline.errors import ServiceError
from pipeline.ledger import models  # noqa: F401  (registers the tables on SQLModel.metadata)

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def normalise_url(url: str) -> str:
    """Prefer psycopg 3 for plain ``postgresql://`` URLs (psycopg2 is not a dependency)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` and make sure every table exists.

    Raises:
        ServiceError: the database cannot be reached or the schema cannot be created.
    """
    url = normalise_url(url)
    is_sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        SQLModel.metadata.create_all(engine)
        _add_missing_columns(engine)
        _add_missing_enum_values(engine)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot open database {engine.url!r}: {e}") from e
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Add nullable columns that a ledger made by an earlier version lacks.

    ``create_all`` creates missing tables but never alters existing ones; a column added to a
    table since (always nullable, so old rows stay valid) is added here instead.
    """
    existing = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        have = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise ServiceError(f"ledger table {table.name!r} lacks required column "
                                   f"{column.name!r}; start a new database")
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _add_missing_enum_values(engine: Engine) -> None:
    """Add the values a status enum has gained since a PostgreSQL ledger was made.

    On PostgreSQL a status column is a native ENUM type of the member names, which
    ``create_all`` never alters, so a ledger made by an earlier version would refuse a new
    status (``REJECTED``). ``ADD VALUE`` runs in autocommit, as PostgreSQL before 12 requires;
    a race with another process adding the same value leaves it added, which is all we need.
    """
    if engine.dialect.name != "postgresql":
        return
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name, labels in _native_enums().items():
            have = set(conn.execute(text(
                "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                "WHERE t.typname = :name AND pg_type_is_visible(t.oid)"), {"name": name}).scalars())
            for label in (x for x in labels if x not in have):
                literal = label.replace("'", "''")
                with contextlib.suppress(IntegrityError):
                    conn.execute(text(f"ALTER TYPE {quote(name)} ADD VALUE IF NOT EXISTS '{literal}'"))


def _native_enums() -> dict[str, list[str]]:
    """Native enum types of the ledger's tables: type name -> the labels stored."""
    return {column.type.name: list(column.type.enums)
            for table in SQLModel.metadata.sorted_tables for column in table.columns
            if isinstance(column.type, SAEnum) and column.type.native_enum and column.type.name}


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise

"""Engines and sessions for the SQL ledger (SQLite in WAL mode by default, PostgreSQL by URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from pipeline.errors import LedgerSchemaError, ServiceError
from pipeline.ledger import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from pipeline.ledger.schema import ensure_schema

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


def make_engine(url: str, *, upgrade: bool = False) -> Engine:
    """Create an engine for ``url`` whose ledger is at this ecobatch's schema revision.

    A new, empty database is created at head. An older ledger is upgraded in place when
    ``upgrade`` is set (``ecobatch db upgrade``, and ``ecobatch run`` on its own SQLite ledger);
    otherwise it is refused, so no process writes rows into a schema it does not match.

    Raises:
        OutdatedLedgerError: the ledger is older and ``upgrade`` is False.
        ServiceError: the database cannot be reached or the schema cannot be created.
    """
    engine = connect_engine(url)
    try:
        ensure_schema(engine, upgrade=upgrade)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot open database {engine.url!r}: {e}") from e
    return engine


def refuse_outdated_ledger(url: str) -> None:
    """Check, as a long-running process starts, that the ledger at ``url`` is not outdated.

    A database that cannot be reached now is not refused: router and workers start without it
    and wait for it as before (they log its outage once); it is checked again when first used.

    Raises:
        LedgerSchemaError: the ledger is older (OutdatedLedgerError) or newer than this ecobatch.
    """
    try:
        make_engine(url).dispose()
    except LedgerSchemaError:
        raise
    except ServiceError:
        return


def connect_engine(url: str) -> Engine:
    """An engine for ``url`` with ecobatch's SQLite pragmas, leaving the schema as it is."""
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
    return engine


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

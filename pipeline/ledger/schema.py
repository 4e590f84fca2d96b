"""The ledger's schema revision: create a new ledger at head, refuse or upgrade an older one.

A process checks the revision in ``alembic_version`` against
:data:`~pipeline.ledger.migrations.HEAD_REVISION` with one SELECT; Alembic itself is imported
only to create, stamp or upgrade. A database with none of the ledger's tables is new and is
created at head; one with tables but no ``alembic_version`` was made before migrations
(revision 0001, commit 79802b8, or a release after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from pipeline.errors import LedgerSchemaError, OutdatedLedgerError
from pipeline.ledger.migrations import BASE_REVISION, HEAD_REVISION, alembic_config

VERSION_TABLE = "alembic_version"
PG_LOCK_KEY = 0x6563_6F62  # "ecob": one schema change at a time on a shared PostgreSQL


class LedgerState(StrEnum):
    """Where a ledger's schema stands against this ecobatch."""

    EMPTY = "empty"  # none of the ledger's tables: a new database
    UNVERSIONED = "unversioned"  # made before migrations, no alembic_version
    OUTDATED = "outdated"  # an older revision
    HEAD = "head"  # what this ecobatch expects
    UNKNOWN = "unknown"  # a revision this ecobatch does not know: a newer release made it


@dataclass(frozen=True)
class LedgerRevision:
    """A ledger's state and the revision in its ``alembic_version`` (None if it has none)."""

    state: LedgerState
    revision: str | None


def read_revision(conn: Connection) -> LedgerRevision:
    """The state of the ledger behind ``conn``."""
    tables = set(inspect(conn).get_table_names())
    if not tables & set(SQLModel.metadata.tables):
        return LedgerRevision(LedgerState.EMPTY, None)
    if VERSION_TABLE not in tables:
        return LedgerRevision(LedgerState.UNVERSIONED, None)
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()  # VERSION_TABLE
    if revision == HEAD_REVISION:
        return LedgerRevision(LedgerState.HEAD, revision)
    known = revision is not None and revision in known_revisions()
    return LedgerRevision(LedgerState.OUTDATED if known else LedgerState.UNKNOWN, revision)


def known_revisions() -> list[str]:
    """Every revision in ``versions/``, newest first."""
    from alembic.script import ScriptDirectory

    from pipeline.ledger.migrations import MIGRATIONS_DIR

    return [s.revision for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()]


def ensure_schema(engine: Engine, *, upgrade: bool = False) -> LedgerRevision:
    """Create a new ledger at head; upgrade an older one if ``upgrade``, else refuse it.

    Raises:
        OutdatedLedgerError: an older ledger and ``upgrade`` is False.
        LedgerSchemaError: a revision newer than this ecobatch.
    """
    with engine.connect() as conn:
        found = read_revision(conn)
    if found.state is LedgerState.HEAD:
        return found
    _refuse_unless_upgrading(engine, found, upgrade)
    return migrate(engine, upgrade=upgrade)


def _refuse_unless_upgrading(engine: Engine, found: LedgerRevision, upgrade: bool) -> None:
    url = engine.url.render_as_string(hide_password=True)
    if found.state is LedgerState.UNKNOWN:
        raise LedgerSchemaError(f"the ledger at {url} is at revision {found.revision}, which this "
                                f"ecobatch (head {HEAD_REVISION}) does not know: upgrade ecobatch")
    if found.state in (LedgerState.UNVERSIONED, LedgerState.OUTDATED) and not upgrade:
        raise OutdatedLedgerError(
            f"the ledger at {url} is at revision {found.revision or 'none (made before migrations)'}"
            f" and this ecobatch needs {HEAD_REVISION}: run `ecobatch db upgrade --database-url "
            f"{url}` (back the database up first)")


def migrate(engine: Engine, *, upgrade: bool = True) -> LedgerRevision:
    """Bring the ledger to head: create a new one, or upgrade an older one in place (only if
    ``upgrade``; else it is refused).

    One transaction under a lock (:func:`_lock`), so processes starting together change the
    schema once; the state is read again under the lock.

    Raises:
        OutdatedLedgerError: an older ledger and ``upgrade`` is False.
        LedgerSchemaError: a revision newer than this ecobatch, or the migration failed.
    """
    try:
        with engine.begin() as conn:
            _lock(conn)
            found = read_revision(conn)
            _refuse_unless_upgrading(engine, found, upgrade)
            if found.state is not LedgerState.HEAD:
                _to_head(conn, found)
            return read_revision(conn)
    except SQLAlchemyError as e:
        return _raced_or_raise(engine, e)


def _to_head(conn: Connection, found: LedgerRevision) -> None:
    from alembic import command

    config = alembic_config(conn)
    if found.state is LedgerState.EMPTY:
        SQLModel.metadata.create_all(conn)  # the models are head: no replay needed
        command.stamp(config, "head", purge=True)  # purge: a stale row of dropped tables
        return
    if found.state is LedgerState.UNVERSIONED:
        command.stamp(config, BASE_REVISION)
    command.upgrade(config, "head")


def _lock(conn: Connection) -> None:
    """Hold the schema against other processes until this transaction ends: PostgreSQL's
    advisory lock; on SQLite the database's write lock, taken at once (processes starting
    together on a new file wait on its busy timeout instead of creating the tables twice)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _raced_or_raise(engine: Engine, error: SQLAlchemyError) -> LedgerRevision:
    """Fine if another process brought the ledger to head meanwhile; otherwise a schema error."""
    with engine.connect() as conn:
        found = read_revision(conn)
    if found.state is LedgerState.HEAD:
        return found
    raise LedgerSchemaError(f"cannot migrate the ledger at "
                            f"{engine.url.render_as_string(hide_password=True)}: {error}") from error

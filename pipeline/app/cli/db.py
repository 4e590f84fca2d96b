"""``ecobatch db``: the ledger's schema revision, and upgrading it in place with Alembic."""

from __future__ import annotations

import click

from pipeline.app.cli.common import build_settings, database_url_option, handle_errors
from pipeline.ledger.db import connect_engine
from pipeline.ledger.migrations import HEAD_REVISION
from pipeline.ledger.schema import LedgerRevision, LedgerState, migrate, read_revision


@click.group("db")
def db() -> None:
    """The ledger's schema: which revision it is at, and upgrading an older one in place.

    A new, empty database is created at the newest revision by any command. A ledger made by
    an older ecobatch is refused by every process (except `ecobatch run` on its own SQLite
    ledger, which upgrades it) until `ecobatch db upgrade` has migrated it.
    """


def _describe(found: LedgerRevision) -> str:
    revision = found.revision or "none"
    return {
        LedgerState.EMPTY: "empty (no ledger tables yet; any command creates them at head)",
        LedgerState.UNVERSIONED: "made before migrations (revision 0001 or later, unstamped): "
                                 "run `ecobatch db upgrade`",
        LedgerState.OUTDATED: f"{revision}: older than head {HEAD_REVISION}, run `ecobatch db upgrade`",
        LedgerState.HEAD: f"{revision} (head)",
        LedgerState.UNKNOWN: f"{revision}: unknown to this ecobatch (a newer release made it)",
    }[found.state]


@db.command("current")
@database_url_option
@handle_errors
def current(database_url: str | None) -> None:
    """Print the ledger's revision and whether it is the newest (head). Changes nothing."""
    engine = connect_engine(build_settings(database_url=database_url).database_url)
    with engine.connect() as conn:
        click.echo(_describe(read_revision(conn)))
    engine.dispose()


@db.command("upgrade")
@database_url_option
@handle_errors
def upgrade(database_url: str | None) -> None:
    """Migrate the ledger in place to the newest revision, keeping every row.

    A ledger with no revision (made before migrations) is taken as revision 0001 first.
    On PostgreSQL the upgrade is one transaction; back a SQLite file up before upgrading.
    """
    engine = connect_engine(build_settings(database_url=database_url).database_url)
    with engine.connect() as conn:
        before = read_revision(conn)
    after = migrate(engine)
    engine.dispose()
    if before.state is LedgerState.HEAD:
        click.echo(f"ledger already at {after.revision} (head)")
    else:
        click.echo(f"ledger upgraded from {before.revision or before.state.value} to {after.revision}")


@db.command("history")
def history() -> None:
    """List the schema revisions this ecobatch knows, newest first."""
    from alembic.script import ScriptDirectory

    from pipeline.ledger.migrations import MIGRATIONS_DIR

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    for script in scripts.walk_revisions():
        head = " (head)" if script.revision == HEAD_REVISION else ""
        click.echo(f"{script.down_revision or '<base>'} -> {script.revision}{head}: {script.doc}")

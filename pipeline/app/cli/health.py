"""``ecobatch health``: is the cluster healthy? Exit 0 if so, 1 if not (for probes and cron)."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from pipeline.app.cli.common import (
    build_settings,
    database_url_option,
    devices_option,
    handle_errors,
    make_console,
    redis_url_option,
)
from pipeline.app.health import Limits, Report, check_cluster
from pipeline.grid.data import checked_registry


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@redis_url_option
@database_url_option
@devices_option
@click.option("--dead-window-s", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, help="Count batches dead-lettered within this many seconds.")
@click.option("--max-dead", type=click.IntRange(min=0), default=0, show_default=True,
              help="Most dead-lettered batches within the window that still count as healthy.")
@click.option("--max-backlog-s", type=click.FloatRange(min=0), default=None,
              help="Most predicted seconds of queued work per device that still count as "
                   "healthy [default: no limit].")
@handle_errors
def health(as_json: bool, dead_window_s: float, max_dead: int, max_backlog_s: float | None,
           **overrides: object) -> None:
    """Check the broker, the ledger, the router and every device's worker; exit 1 if any fails.

    Broker: Redis answers PING (and the prompts pending). Ledger: SQL answers and its schema
    is at head. Router: a router answers a Celery ping within 2 s. Each device of the
    registry: its heartbeat (age in seconds; none means no live worker) and backlog (messages
    queued, batches open, predicted seconds). Dead letters: batches dead-lettered within
    --dead-window-s, at most --max-dead.
    """
    settings = build_settings(**overrides)
    report = check_cluster(settings, checked_registry(settings).devices,
                           Limits(dead_window_s, max_dead, max_backlog_s))
    if as_json:
        click.echo(json.dumps(report.as_dict(), default=str))
    else:
        make_console().print(_table(report))
    sys.exit(0 if report.healthy else 1)


def _table(report: Report) -> Table:
    verdict = "healthy" if report.healthy else "UNHEALTHY"
    table = Table(title=f"ecobatch health: {verdict}")
    table.add_column("check", style="bold")
    table.add_column("ok")
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
    return table

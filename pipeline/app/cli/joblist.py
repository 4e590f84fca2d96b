"""``ecobatch jobs`` and ``ecobatch cancel``: the newest jobs with their state, progress, age
and totals; cancelling one; and the live view of one job that ``ecobatch status --watch``
shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

import click
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from sqlalchemy import Engine

from pipeline.app.cli.common import build_settings, handle_errors, make_console
from pipeline.ledger.db import make_engine
from pipeline.ledger.joblist import MAX_LISTED, recent_jobs
from pipeline.ledger.jobs import JobStatusView, cancel, job_status
from pipeline.ledger.models import JobStatus, utc_now


@click.command("jobs")
@click.option("--state", type=click.Choice([s.value for s in JobStatus]), default=None,
              help="Only jobs in this state (as `ecobatch status` derives it).")
@click.option("--limit", type=click.IntRange(1, MAX_LISTED), default=20, show_default=True,
              help="Most jobs listed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job instead of a table.")
@click.option("--database-url", help="SQLAlchemy URL of the ledger (ECOBATCH_DATABASE_URL).")
@handle_errors
def jobs(state: str | None, limit: int, as_json: bool, database_url: str | None) -> None:
    """List jobs, newest first: state, progress, age, energy (J), CO2e (g), water (L), cost."""
    settings = build_settings(database_url=database_url)
    views = recent_jobs(make_engine(settings.database_url), limit=limit,
                        state=JobStatus(state) if state else None)
    if as_json:
        for view in views:
            click.echo(json.dumps(_json_row(view), default=str))
        return
    make_console().print(_table(views))


@click.command("cancel")
@click.argument("job_id")
@click.option("--database-url", help="SQLAlchemy URL of the ledger (ECOBATCH_DATABASE_URL).")
@handle_errors
def cancel_command(job_id: str, database_url: str | None) -> None:
    """Cancel JOB_ID: none of its prompts not yet started will start (they end dead, with the
    reason 'cancelled'); a batch already on a device finishes and keeps its answers. Repeating
    it, or cancelling a job that already ended, changes nothing. Prints the job's state."""
    settings = build_settings(database_url=database_url)
    view = cancel(make_engine(settings.database_url), job_id)
    click.echo(f"{job_id} {view.status.value} ({view.n_results}/{view.total} answered, "
               f"{view.n_failed} not)")


def _progress(view: JobStatusView) -> str:
    finished = view.n_results + view.n_failed
    return f"{finished}/{view.total}" + (f" ({view.n_failed} dead)" if view.n_failed else "")


def _age(created_at: datetime | None) -> str:
    if created_at is None:
        return "-"
    seconds = int((utc_now() - created_at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _json_row(view: JobStatusView) -> dict[str, object]:
    return {"job_id": view.job_id, "status": view.status.value, "created_at": view.created_at,
            "total": view.total, "n_results": view.n_results, "n_failed": view.n_failed,
            "energy_j": view.energy_j, "carbon_g": view.carbon_g, "water_l": view.water_l,
            "cost_usd": view.cost_usd, "source": view.source}


def _table(views: list[JobStatusView]) -> Table:
    table = Table(title="jobs, newest first")
    for header in ("job", "state", "progress", "age", "energy J", "CO2e g", "water L",
                   "cost USD", "source"):
        table.add_column(header)
    for v in views:
        cost = "-" if v.cost_usd is None else f"{v.cost_usd:.6f}"
        table.add_row(v.job_id, v.status.value, _progress(v), _age(v.created_at),
                      f"{v.energy_j:.1f}", f"{v.carbon_g:.3f}", f"{v.water_l:.4f}", cost,
                      v.source)
    return table


def watch_job(engine: Engine, job_id: str, render: Callable[[JobStatusView], Table],
              interval_s: float = 1.0) -> JobStatusView:
    """Redraw ``render(view)`` under a progress bar every ``interval_s`` until the job ends
    (every prompt answered or dead, or the submission rejected); return the last view.

    Raises:
        NotFoundError: no job with this id.
        ServiceError: the database cannot be read.
    """
    view = job_status(engine, job_id)
    with Live(_live(view, render), console=make_console(), auto_refresh=False) as live:
        while not _ended(view):
            time.sleep(interval_s)
            view = job_status(engine, job_id)
            live.update(_live(view, render), refresh=True)
    return view


def _ended(view: JobStatusView) -> bool:
    return view.finished or view.status in (JobStatus.REJECTED, JobStatus.FAILED, JobStatus.DONE)


def _live(view: JobStatusView, render: Callable[[JobStatusView], Table]) -> Group:
    bar = ProgressBar(total=max(view.total, 1), completed=view.n_results + view.n_failed)
    return Group(render(view), bar)

"""``ecobatch plan JOB``: the window, devices and expected carbon of a deferred job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from sqlalchemy import select

from pipeline.app.cli.common import build_settings, database_url_option, handle_errors, make_console
from pipeline.app.context import AppContext
from pipeline.errors import NotFoundError
from pipeline.ledger.jobs import job_plan
from pipeline.ledger.models import Job, JobStatus


@click.command("plan")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_url_option
@handle_errors
def plan(job_id: str, as_json: bool, database_url: str | None) -> None:
    """Show when deferred JOB_ID runs (window and duration), on which devices, and its
    forecast gCO2e against starting now. Starting now is priced at the grid intensity the
    router uses this hour (live API, ECOBATCH_GRID_AT or the packaged trace), later hours at
    the forecast. A deferred job not planned yet is planned now (as the router's planner
    would) and the plan is stored."""
    from router.deferral.release import Planning, ensure_plan, stored_plan
    from router.predict.profiled import load_predictor

    ctx = AppContext(build_settings(database_url=database_url))
    job, row = _job_and_plan(ctx, job_id)
    if row is not None:
        p = stored_plan(row)
    elif job["status"] == JobStatus.DEFERRED and (deadline := job["deadline"]):
        planning = Planning(ctx.registry, load_predictor(ctx.engine, ctx.registry),
                            ctx.forecast, ctx.router_config.batch_size, ctx.grid)
        p = ensure_plan(ctx.engine, planning, job_id, deadline, datetime.now(UTC))
    else:
        raise NotFoundError(f"job {job_id} is not deferred and has no plan")
    released = row["released_at"] if row is not None else None
    view = {
        "job_id": job_id, "status": str(job["status"]), "deadline": job["deadline"],
        "start_at": p.start_at, "end_at": p.end_at,
        "duration_s": (p.end_at - p.start_at).total_seconds(), "devices": list(p.devices),
        "energy_j": p.energy_j, "carbon_g": p.carbon_g, "carbon_now_g": p.carbon_now_g,
        "saving_g": p.saving_g, "note": p.note, "released_at": released,
        "estimate": "carbon of predicted energy (not measured): this hour at the router's "
                    "grid intensity, later hours at the forecast",
    }
    if as_json:
        click.echo(json.dumps(view, default=str))
    else:
        make_console().print(_table(view))


def _job_and_plan(ctx: AppContext, job_id: str) -> tuple[Any, Any]:
    job_t = Job.__table__  # type: ignore[attr-defined]
    with ctx.engine.connect() as conn:
        job = conn.execute(select(job_t).where(job_t.c.id == job_id)).mappings().first()
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job, job_plan(ctx.engine, job_id)


def _table(view: dict[str, Any]) -> Table:
    table = Table(title=f"plan of job {view['job_id']}", show_header=False)
    fmt = "%Y-%m-%d %H:%M UTC"
    window = f"%Y-%m-%d %H:%M{':%S' if view['duration_s'] < 60 else ''} UTC"
    rows = [
        ("status", view["status"]),
        ("deadline", view["deadline"].strftime(fmt) if view["deadline"] else "-"),
        ("window", f"{view['start_at']:{window}} -> {view['end_at']:{window}}"),
        ("duration (predicted)", format_duration(view["duration_s"])),
        ("devices", ", ".join(view["devices"])),
        ("energy (predicted)", f"{view['energy_j']:.1f} J"),
        ("gCO2e in window (forecast)", f"{view['carbon_g']:.4f}"),
        ("gCO2e starting now (grid now)", f"{view['carbon_now_g']:.4f}"),
        ("saving", f"{view['saving_g']:.4f} g"),
        ("released", f"{view['released_at']}" if view["released_at"] else "not yet"),
    ]
    if view["note"]:
        rows.append(("note", view["note"]))
    for k, v in rows:
        table.add_row(k, v)
    return table


def format_duration(seconds: float) -> str:
    """``2.3 s``, ``4 min 05 s`` or ``3 h 20 min``: seconds shown while they matter."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"

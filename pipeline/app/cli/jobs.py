"""CLI commands for a running cluster: ``submit``, ``status``, ``results`` and ``reconcile``.

Standalone ``click`` commands; ``pipeline.app.cli.main`` adds them to the ``ecobatch`` group.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import click
from rich.table import Table

from pipeline.app.cli.common import (
    build_settings,
    database_url_option,
    handle_errors,
    input_format_option,
    make_console,
    max_tokens_option,
    model_choice_options,
    redis_url_option,
    routing_options,
)
from pipeline.app.cli.joblist import watch_job
from pipeline.app.context import AppContext
from pipeline.app.tracing import traced
from pipeline.broker.queue import connect
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.grid.data import checked_registry
from pipeline.intake.submit import JobOptions, submit_file
from pipeline.ledger.db import make_engine
from pipeline.ledger.jobs import OUTPUT_FORMATS, JobStatusView, iter_results, job_status, write_results
from pipeline.ledger.rows import ExportRow
from pipeline.report.openai_files import error_path_for, write_openai_paths
from pipeline.settings import Settings


@click.command("submit")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@input_format_option
@max_tokens_option
@routing_options
@model_choice_options
@redis_url_option
@database_url_option
@handle_errors
def submit(file: str, fmt: str | None, max_tokens: int | None, strategy: str | None,
           weights: dict[str, float] | None, slo_s: float | None, deadline: datetime | None,
           defer: bool, model_name: str | None, min_quality: float | None,
           redis_url: str | None, database_url: str | None) -> None:
    """Validate FILE (JSONL, CSV or text; '-' is stdin) and enqueue it; print the job id.

    The whole file is checked first: a bad line is reported with its line number and
    nothing is enqueued. With --defer the job waits in SQL for the planner, which releases it
    at the start of the lowest-carbon window that still meets --deadline.
    """
    settings = build_settings(redis_url=redis_url, database_url=database_url,
                              max_tokens=max_tokens, strategy=strategy)
    if settings.devices is not None:  # the cluster's registry: refuse one it could not route
        checked_registry(settings)
    # '-' reads sys.stdin.buffer, which CliRunner replaces
    options = JobOptions(weights=weights, slo_s=slo_s, deadline=deadline, deferred=defer,
                         model=model_name, min_quality=min_quality)
    with traced("ecobatch-submit"):
        receipt = submit_file(AppContext(settings), file, fmt=fmt, options=options)
    note = " (deferred: see `ecobatch plan`)" if receipt.deferred else ""
    click.echo(f"submitted {receipt.n_prompts} prompts{note}", err=True)
    click.echo(receipt.job_id)


@click.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", is_flag=True, help="Redraw the table live until the job ends.")
@click.option("--interval-s", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between redraws with --watch.")
@database_url_option
@handle_errors
def status(job_id: str, as_json: bool, watch: bool, interval_s: float,
           database_url: str | None) -> None:
    """Show progress and energy, carbon, water and cost totals of JOB_ID.

    A submission refused by the cluster (an ecobatch.submit call with bad prompts or options,
    or over the rate limit) shows status 'rejected' and why; an id with no job at all is
    reported as not found (not yet taken in, or never submitted) and exits 1.
    """
    settings = build_settings(database_url=database_url)
    if watch:
        watch_job(make_engine(settings.database_url), job_id, _status_table, interval_s)
        return
    view = job_status(make_engine(settings.database_url), job_id)
    if as_json:
        click.echo(json.dumps(_view_dict(view), default=str))
    else:
        make_console().print(_status_table(view))


def _view_dict(view: JobStatusView) -> dict[str, object]:
    data = asdict(view)
    data["status"] = view.status.value
    data["finished"] = view.finished
    return data


def _status_table(view: JobStatusView) -> Table:
    table = Table(title=f"job {view.job_id}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    counts = ", ".join(f"{k} {v}" for k, v in view.counts.items())
    rows = [("status", view.status.value)]
    if view.error is not None:
        rows.append(("rejected because", view.error))
    rows += [
        ("source", view.source),
        ("strategy", view.strategy or "router default"),
        ("created (UTC)", str(view.created_at)),
        ("answered", f"{view.n_results}/{view.total} ({view.fraction_done:.1%})"),
        ("failed", str(view.n_failed)),
        ("prompts", counts),
        ("energy (J)", f"{view.energy_j:.3f}"),
        ("carbon (g CO2e)", f"{view.carbon_g:.4f}"),
        ("embodied carbon (g CO2e)", f"{view.embodied_carbon_g:.4f}"),
        ("water (L)", f"{view.water_l:.5f}"),
        ("cost (USD)", "unknown" if view.cost_usd is None else f"{view.cost_usd:.6f}"),
    ]
    if view.redelivering:
        rows.append(("worker lost, redelivering", f"{view.redelivering} prompts"))
    rows += [("dead-lettered", f"{n} x {error}") for error, n in view.errors.items()]
    for name, value in rows:
        table.add_row(name, value)
    return table


@click.command("results")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="File to write; '-' (default) is stdout.")
@click.option("--format", "fmt", type=click.Choice((*OUTPUT_FORMATS, "openai")), default=None,
              help="Output format. Default: csv if --output ends in .csv, else jsonl. model "
                   "names the served model that answered, model_quality its score. Columns "
                   "carry their units: ttft_s and latency_s in seconds, energy_j in joules, "
                   "carbon_g in grams CO2e, water_l in litres, cost_usd in US dollars. openai: "
                   "OpenAI batch output lines (needs --output), with ecobatch's figures under "
                   "each body's 'ecobatch' key, and an error file of the dead prompts.")
@click.option("--error-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --format openai: where the error file goes (default: OUTPUT with "
                   ".errors before its extension).")
@database_url_option
@handle_errors
def results(job_id: str, output: str, fmt: str | None, error_file: Path | None,
            database_url: str | None) -> None:
    """Write the results of JOB_ID (answered and dead prompts, in input order)."""
    settings: Settings = build_settings(database_url=database_url)
    fmt = fmt or ("csv" if output.lower().endswith(".csv") else "jsonl")
    rows = iter_results(make_engine(settings.database_url), job_id)
    if fmt == "openai":
        _write_openai(rows, output, error_file, settings)
        return
    if output == "-":
        n = write_results(rows, sys.stdout, fmt)
    else:
        with Path(output).open("w", encoding="utf-8", newline="") as fh:
            n = write_results(rows, fh, fmt)
    click.echo(f"wrote {n} rows", err=True)
    sys.stdout.flush()


def _write_openai(rows: Iterable[ExportRow], output: str, error_file: Path | None,
                  settings: Settings) -> None:
    if output == "-":
        raise click.UsageError("--format openai writes two files: give --output")
    model = resolve_model_path(settings.model).stem
    n_out, n_err = write_openai_paths(rows, Path(output), error_file, model)
    where = error_file or error_path_for(Path(output))
    click.echo(f"wrote {n_out} answers to {output}, {n_err} errors to {where}", err=True)


@click.command("reconcile")
@redis_url_option
@database_url_option
@handle_errors
def reconcile_pending(redis_url: str | None, database_url: str | None) -> None:
    """Re-enqueue prompts that are pending in SQL but missing from Redis; print how many.

    Also publishes again every batch still waiting (dispatched) or running for longer than
    the task time limit, whose message Redis may have lost (a duplicate delivery is skipped
    or rewrites the same rows), and takes back every batch running on a worker whose
    heartbeat has stopped (checked twice, HEARTBEAT_TTL_S / 2 apart) and publishes it again.
    Use it after Redis lost its contents, a submission failed after its SQL commit, or a
    worker died; a running router does all of this by itself.
    """
    from pipeline.app.celery_app import create_app, publisher_for
    from router.recovery.lostwork import take_back_now
    from router.recovery.recovery import recover

    settings = build_settings(redis_url=redis_url, database_url=database_url)
    engine, client = make_engine(settings.database_url), connect(settings.require_redis_url())
    publish = publisher_for(create_app(settings))
    done = recover(engine, client, publish, settings.task_time_limit_s)
    taken = take_back_now(engine, client, publish, settings.heartbeat_ttl_s / 2)
    click.echo(f"re-enqueued {done.prompts} prompts, republished {done.batches} batches, "
               f"worker lost, redelivering {taken} batches", err=True)
    click.echo(done.prompts)

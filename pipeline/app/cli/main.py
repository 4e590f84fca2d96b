"""The ``ecobatch`` command line (an entry point: it may name pipeline, router and workers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.app.cli.common import (
    batching_options,
    build_settings,
    database_url_option,
    devices_option,
    handle_errors,
    input_format_option,
    make_console,
    max_tokens_option,
    model_choice_options,
    model_option,
    redis_url_option,
    strategy_option,
)
from pipeline.app.tracing import trace_pool_processes, traced
from pipeline.broker.queue import connect
from pipeline.grid.data import checked_registry
from pipeline.ledger.db import refuse_outdated_ledger
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.fleet.devices import Device

# Each command imports what only it needs (the job runner, llama.cpp's tokenizer, the intake
# limits) when it runs: every router and worker process starts by importing this module.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ecobatch")
def main() -> None:
    """Sustainability-aware LLM batch inference: prompts in, answers with energy, CO2e,
    water and cost out.

    Every setting can also come from the environment with the ECOBATCH_ prefix
    (ECOBATCH_REDIS_URL, ECOBATCH_DATABASE_URL, ECOBATCH_DEVICES, ECOBATCH_MODEL, ...).
    """


@main.command()
@click.argument("input_path", metavar="FILE")
@input_format_option
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("results.jsonl"), show_default=True, help="Results file.")
@click.option("--output-format", type=click.Choice(["jsonl", "csv", "openai"]),
              help="Results format; default: openai for an OpenAI batch input (answers in "
                   "--output, failures in OUTPUT.errors.jsonl), else from the output extension.")
@batching_options
@max_tokens_option
@strategy_option
@model_option
@devices_option
@click.option("--local-workers/--no-local-workers", default=None,
              help="Start the router and one worker per device here "
                   "(default: only with the embedded Redis).")
@click.option("--timeout-s", type=float, default=3600.0, show_default=True,
              help="Seconds to wait for every answer.")
@model_choice_options
@handle_errors
def run(input_path: str, fmt: str | None, output_path: Path, output_format: str | None,
        local_workers: bool | None, timeout_s: float, model_name: str | None,
        min_quality: float | None, **overrides: object) -> None:
    """Run FILE (JSONL, CSV with a prompt column, or text; '-' is stdin) end to end.

    With no ECOBATCH_REDIS_URL a private Redis server is started, the ledger is SQLite
    (./ecobatch.db) and the router and a worker per local device run as child processes.
    """
    from pipeline.app.run import RunOptions, run_job
    from pipeline.intake.submit import JobOptions

    settings = build_settings(**overrides)
    opts = RunOptions(input_path, fmt, output_path, output_format, local_workers, timeout_s,
                      JobOptions(model=model_name, min_quality=min_quality))
    with traced("ecobatch-run"):
        outcome = run_job(settings, opts, make_console(stderr=True))
    click.echo(f"{outcome.n_prompts - outcome.n_dead}/{outcome.n_prompts} answered; "
               f"results in {outcome.output_path}")


def _worker_options(func: click.decorators.FC) -> click.decorators.FC:
    """The options of the long-running services (``worker`` and ``router``)."""
    func = click.option("--loglevel", default="WARNING", show_default=True,
                        help="Celery log level.")(func)
    return redis_url_option(database_url_option(devices_option(func)))


@main.command()
@click.option("--device", "device_name", required=True, help="Device name from the registry.")
@model_option
@click.option("--metrics-port", "own_metrics_port", type=click.IntRange(0, 65535),
              help="Port of this worker's /metrics, /healthz and /readyz (0: off) [default: "
                   "ECOBATCH_METRICS_PORT + 1 + the device's position in the registry, from 0; "
                   "off when that is unset or 0].")
@_worker_options
@handle_errors
def worker(device_name: str, loglevel: str, own_metrics_port: int | None,
           **overrides: object) -> None:
    """Serve queue device.NAME: load the model once, decode batches, meter them.

    With the llama backend and continuous batching on (the default), the worker holds
    ECOBATCH_BATCHES_IN_FLIGHT batches at once (Celery's threads pool) and keeps its slots busy
    across them; otherwise it runs one batch at a time in a prefork child.
    """
    from celery.signals import worker_process_init

    from pipeline.app.celery_app import create_app
    from pipeline.broker.alive import worker_identity
    from pipeline.metrics.serve import start_metrics, worker_port
    from workers.backends.llama.tokenizer import verify_model
    from workers.service.heartbeat import heartbeat_step
    from workers.service.infer import backend_for, continuous_for, engine_for

    settings = build_settings(**overrides)
    quiet = _log_format(settings, loglevel, device=device_name)
    registry = checked_registry(settings)
    device = registry.get(device_name)
    if settings.backend != "echo":
        from workers.backends.llama.gpu import pin_process

        # Before anything in this process (or the pool it forks) initialises CUDA.
        pin_process(device)
    for served in device.served_models(settings.model):  # fail before Celery starts
        verify_model(served.resolve(device.model or settings.model))
    connect(settings.require_redis_url()).close()  # so does a wrong host, password or CA
    refuse_outdated_ledger(settings.database_url)  # and an outdated ledger
    port = worker_port(settings, registry, device) if own_metrics_port is None else own_metrics_port
    start_metrics(settings, port)  # before the pool forks: its children write the metrics
    app = create_app(settings)
    trace_pool_processes("ecobatch-worker")
    app.ctx.worker_id = worker_identity()  # this main process; its pool children inherit it
    app.steps["worker"].add(heartbeat_step(device.name, settings.heartbeat_ttl_s,
                                           app.ctx.worker_id, settings.task_time_limit_s))

    if continuous_for(app.ctx, device):  # one process: the task threads share one engine
        engine_for(app.ctx, device)
        pool = ["-P", "threads", "-c", str(settings.batches_in_flight)]
    else:
        def preload(**_: object) -> None:
            for served in device.served_models(settings.model):
                backend_for(app.ctx, device, served.name)

        worker_process_init.connect(preload, weak=False)
        pool = ["-P", "prefork", "-c", "1"]
    app.worker_main([*quiet, *_celery_argv(device, loglevel, pool)])


def _log_format(settings: Settings, loglevel: str, **static: str) -> list[str]:
    """Set JSON log lines up if the settings ask for them; return the Celery options that go
    with the format (no banner with JSON: it is not JSON)."""
    if settings.log_format != "json":
        return []
    from pipeline.app.celerylog import json_logs

    json_logs(loglevel, static)
    return ["--quiet"]


def _celery_argv(device: Device, loglevel: str, pool: list[str]) -> list[str]:
    return ["worker", "-Q", device.queue, *pool, "-n", f"{device.name}@%h",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]


@main.command()
@batching_options
@strategy_option
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Port of the router's /metrics, /healthz and /readyz (0: off) "
                   "[env: ECOBATCH_METRICS_PORT; default off].")
@_worker_options
@handle_errors
def router(loglevel: str, **overrides: object) -> None:
    """Run the router: batches pending prompts and publishes each to a device queue.

    Also serves the default queue 'celery', where ecobatch.submit calls by name arrive,
    and runs the beat that re-triggers routing every router_interval_s seconds.
    """
    from pipeline.app.celery_app import INTAKE_QUEUE, ROUTE_TASK, ROUTER_QUEUE, create_app
    from pipeline.app.celerylog import quiet_task_info
    from pipeline.intake.limits import check_batch_size
    from pipeline.metrics.serve import start_metrics

    settings = build_settings(**overrides)
    quiet = _log_format(settings, loglevel)
    check_batch_size(settings.batch_size, checked_registry(settings))  # fail fast
    connect(settings.require_redis_url()).close()  # and on a wrong host, password or CA
    refuse_outdated_ledger(settings.database_url)  # and on an outdated ledger
    start_metrics(settings, settings.metrics_port)  # before the pool forks
    app = create_app(settings)
    trace_pool_processes("ecobatch-router")
    quiet_task_info([ROUTE_TASK])  # a pass that did something logs its own line
    # Routing needs no persistent schedule: the beat keeps it in memory (celery.beat.Scheduler),
    # so no schedule file can be removed under a beat that is still closing.
    app.conf.beat_scheduler = "celery.beat:Scheduler"
    app.worker_main([*quiet, "worker", "-Q", f"{ROUTER_QUEUE},{INTAKE_QUEUE}", "-c", "1", "-B",
                     "-n", "router@%h",
                     f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"])


def _add_optional_commands() -> None:
    from pipeline.app.cli.db import db
    from pipeline.app.cli.devices import bench, devices
    from pipeline.app.cli.evaluate import evaluate
    from pipeline.app.cli.health import health
    from pipeline.app.cli.joblist import cancel_command, jobs
    from pipeline.app.cli.jobs import reconcile_pending, results, status, submit
    from pipeline.app.cli.plan import plan
    from pipeline.app.cli.provision import provision
    from pipeline.app.cli.report import report
    from pipeline.app.cli.serve import serve
    from pipeline.app.cli.simulate import optimise, simulate

    main.add_command(report)

    for cmd in (submit, status, results, jobs, reconcile_pending, devices, bench, plan, simulate,
                optimise, provision, db, health, cancel_command, serve, evaluate):
        main.add_command(cmd)


_add_optional_commands()

if __name__ == "__main__":
    main()

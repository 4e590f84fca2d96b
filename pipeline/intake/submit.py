"""Producer side: write a job and its prompts to SQL, then enqueue references in Redis.

SQL is written and committed first; only then are references pushed to Redis. If the push
fails the prompts stay ``pending`` in SQL, and :func:`reconcile` re-enqueues every pending
prompt of a queued or running job that is missing from the Redis list.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import redis
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.queue import PromptRef, push_refs
from pipeline.broker.restore import reconcile
from pipeline.errors import ConfigError, InputError, ServiceError
from pipeline.fleet.devices import load_registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand
from pipeline.intake.demand import check_demands, demands_of
from pipeline.intake.limits import PromptTokenizer, check_submission, line_limit
from pipeline.intake.parse import (
    PromptIn,
    external_id,
    read_input,
)
from pipeline.ledger.models import (
    MAX_JOB_ID_CHARS,
    Job,
    JobStatus,
    Prompt,
    PromptStatus,
    table_of,
    utc_now,
)
from pipeline.policy import check_deadline, check_strategy, normalise_weights
from pipeline.settings import Settings
from pipeline.tracing import submit_span

SQL_CHUNK_ROWS = 10_000
CHARS_PER_TOKEN_EST = 4
MESSAGE_OVERHEAD_TOKENS_EST = 4
PROMPT_COLUMNS = ("id", "job_id", "position", "external_id", "prompt", "messages", "max_tokens",
                  "metadata", "sampling", "prompt_tokens_est", "model", "min_quality", "status")
_MAX_TOKENS = PROMPT_COLUMNS.index("max_tokens")
_TOKENS_EST = PROMPT_COLUMNS.index("prompt_tokens_est")


@dataclass(frozen=True, slots=True)
class SubmitReceipt:
    """What a submission wrote.

    Attributes:
        job_id: id of the new job (32 hex characters).
        n_prompts: prompts written to SQL.
        deferred: True when the job waits in SQL for the planner instead of going to Redis.
    """

    job_id: str
    n_prompts: int
    deferred: bool = False


def estimate_prompt_tokens(record: PromptIn) -> int:
    """A cheap prompt-size estimate in tokens: about four characters per token.

    Tokenising every prompt with the model would dominate submission time; the router only
    needs a size estimate, and the worker records the true count in the result.
    """
    if record.messages is not None:
        chars = sum(len(m["content"]) for m in record.messages)
        overhead = MESSAGE_OVERHEAD_TOKENS_EST * len(record.messages)
    else:
        chars = len(record.prompt or "")
        overhead = 0
    return max(1, -(-chars // CHARS_PER_TOKEN_EST) + overhead)


def new_job_id() -> str:
    """A fresh job id: uuid4 as 32 hex characters."""
    return uuid.uuid4().hex


def submit_records(
    engine: Engine,
    redis_client: redis.Redis,
    records: Sequence[PromptIn],
    *,
    source: str,
    strategy: str,
    default_max_tokens: int,
    deferred: bool = False,
    job_id: str | None = None,
    weights: Mapping[str, float] | None = None,
    slo_s: float | None = None,
    deadline: datetime | None = None,
    demand: ModelDemand = ANY_MODEL,
) -> SubmitReceipt:
    """Write a job and its prompts to SQL in one transaction, then enqueue them in Redis.

    Args:
        engine: SQL ledger.
        redis_client: broker client (``pipeline.broker.queue.connect``).
        records: validated prompts, in order; position is the 1-based index.
        source: where they came from: a file name, ``-`` or ``client``.
        strategy: routing strategy name for the job.
        default_max_tokens: new-token limit for prompts that give none, in tokens.
        deferred: keep the job in SQL as ``deferred`` for the planner; push nothing to Redis.
        job_id: id to use (at most 32 characters) instead of a fresh one. If that job already
            exists (a redelivered task) nothing is written again: its missing references are
            re-enqueued and its receipt returned, so the call is idempotent.
        weights: the job's weights for the ``weighted`` strategy (None: the router's).
        slo_s: the job's latency target in seconds (None: the router's default).
        deadline: when every answer is due (timezone-aware); required with ``deferred``, where
            the planner picks the lowest-carbon window that still meets it.
        demand: the job's model name and quality floor, for records that give none.

    Raises:
        InputError: ``records`` is empty, ``strategy`` or ``weights`` bad, ``deadline``
            missing for a deferred job or already past, or ``job_id`` too long.
        ServiceError: SQL could not be written (nothing was), or Redis could not be written
            (the job is in SQL and :func:`reconcile` will enqueue it).
    """
    if not records:
        raise InputError("no prompts to submit")
    policy = _job_policy(strategy, weights, slo_s, deadline, deferred)
    if job_id is not None:
        existing = _existing_job(engine, redis_client, job_id)
        if existing is not None:
            return existing
    job_id = job_id or new_job_id()
    job_row = {"id": job_id, "created_at": utc_now(), "source": source,
               "n_prompts": len(records), **policy,
               "max_tokens": default_max_tokens,
               "status": JobStatus.DEFERRED if deferred else JobStatus.QUEUED}
    with submit_span(redis_client, job_id, len(records), deferred, deadline):
        rows = _write_sql(engine, job_row, records, default_max_tokens, demand)
        if not deferred:
            _enqueue(redis_client, job_id, rows)
    return SubmitReceipt(job_id=job_id, n_prompts=len(records), deferred=deferred)


def _job_policy(strategy: str, weights: Mapping[str, float] | None, slo_s: float | None,
                deadline: datetime | None, deferred: bool) -> dict[str, Any]:
    """The routing columns of a job row, validated; errors name the field."""
    try:
        check_strategy(strategy)
    except ConfigError as e:
        raise InputError(str(e), field="strategy") from e
    try:
        clean_weights = normalise_weights(weights) if weights is not None else None
    except ConfigError as e:
        raise InputError(str(e), field="weights") from e
    if slo_s is not None and not slo_s > 0:
        raise InputError(f"latency target must be > 0 seconds, got {slo_s}", field="slo_s")
    if deferred and deadline is None:
        raise InputError("a deferred job needs a deadline", field="deadline")
    if deadline is not None:
        try:
            deadline = check_deadline(deadline, utc_now())
        except ConfigError as e:
            raise InputError(str(e), field="deadline") from e
    return {"strategy": strategy, "weights": clean_weights, "slo_s": slo_s, "deadline": deadline}


class SubmitContext(Protocol):
    """Where a submission goes: settings, tokenizer, ledger and broker (``AppContext``, the
    ``Client``, :class:`SubmitHandles`).

    ``engine`` and ``redis`` are read only once a submission passed its checks, so a bad
    submission is refused before any connection is made.
    """

    settings: Settings

    @property
    def tokenizer(self) -> PromptTokenizer:
        """The tokenizer of the model ``settings.model`` names (the workers' own)."""
        ...

    @property
    def engine(self) -> Engine:
        """The SQL ledger."""
        ...

    @property
    def redis(self) -> redis.Redis:
        """The broker's Redis."""
        ...


@dataclass(frozen=True, slots=True)
class SubmitHandles:
    """A :class:`SubmitContext` of handles already open (tests, benchmarks, scripts)."""

    settings: Settings
    tokenizer: PromptTokenizer
    engine: Engine
    redis: redis.Redis


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How one submission wants its job run; None takes the default from :class:`Settings`.

    Attributes:
        max_tokens: new-token limit of prompts that give none, in tokens (None:
            ``settings.max_tokens``).
        strategy: routing strategy name (None: ``settings.strategy``).
        weights: the job's weights for the ``weighted`` strategy (None: the router's).
        slo_s: the job's latency target in seconds (None: the router's default).
        deadline: when every answer is due (timezone-aware); required with ``deferred``.
        deferred: hold the job in SQL for the planner instead of enqueueing it.
        job_id: id to use instead of a fresh one (a Celery task's), so a redelivered call
            does not submit twice.
        model: the served model every prompt that names none must get, by name.
        min_quality: the lowest model quality score of prompts that give none (0-100).
    """

    max_tokens: int | None = None
    strategy: str | None = None
    weights: Mapping[str, float] | None = None
    slo_s: float | None = None
    deadline: datetime | None = None
    deferred: bool = False
    job_id: str | None = None
    model: str | None = None
    min_quality: float | None = None


@dataclass(frozen=True, slots=True)
class CheckedJob:
    """A submission that passed every submit-time limit, with the defaults applied.

    Made only by :func:`check_job`; written by :func:`submit_checked`.
    """

    records: Sequence[PromptIn]
    source: str
    options: JobOptions
    max_tokens: int
    strategy: str


def check_job(records: Sequence[PromptIn], settings: Settings, tokenizer: PromptTokenizer, *,
              source: str, options: JobOptions = JobOptions()) -> CheckedJob:
    """Apply the settings' defaults to ``options`` and every submit-time limit to ``records``.

    The one place where a submission gets its defaults and its limits: every entry (``ecobatch
    submit``, ``ecobatch run``, :class:`pipeline.client.Client`, the ``ecobatch.submit`` task
    and :func:`submit_file`) goes through here.

    Args:
        records: validated prompts, in order.
        settings: defaults (``max_tokens``, ``strategy``) and limits.
        tokenizer: the workers' tokenizer of ``settings.model``, which gives those of the
            other served models (see :func:`pipeline.intake.limits.check_submission`).
        source: where the prompts came from: a file name, ``-``, ``client`` or ``celery``.
        options: what the submitter asked for.

    Raises:
        InputError: a limit is exceeded (names the line and field), or no device serves a
            model the prompts ask for.
        ConfigError: the model file or the device registry is unreadable.
    """
    max_tokens = options.max_tokens or settings.max_tokens
    check_submission(records, max_tokens, settings, tokenizer,
                     ModelDemand(options.model, options.min_quality))
    _check_models(records, options, settings)  # a demand no model meets, its sizes unchecked
    return CheckedJob(records, source, options, max_tokens, options.strategy or settings.strategy)


def _check_models(records: Sequence[PromptIn], options: JobOptions, settings: Settings) -> None:
    """Refuse model demands no registered device can meet (the registry is read only when
    some prompt or the job asks for a model or a quality)."""
    if options.min_quality is not None and not 0 <= options.min_quality <= 100:
        raise InputError(f"min_quality must be 0-100, got {options.min_quality:g}",
                         field="min_quality")
    demands = demands_of(ModelDemand(r.model or options.model, options.min_quality
                                     if r.min_quality is None else r.min_quality)
                         for r in records)
    if demands:
        check_demands(demands, load_registry(settings.devices), settings.model)


def submit_checked(engine: Engine, redis_client: redis.Redis, job: CheckedJob) -> SubmitReceipt:
    """Write and enqueue a job :func:`check_job` accepted (see :func:`submit_records`)."""
    opts = job.options
    return submit_records(engine, redis_client, job.records, source=job.source,
                          strategy=job.strategy, default_max_tokens=job.max_tokens,
                          deferred=opts.deferred, job_id=opts.job_id, weights=opts.weights,
                          slo_s=opts.slo_s, deadline=opts.deadline,
                          demand=ModelDemand(opts.model, opts.min_quality))


def submit_job(ctx: SubmitContext, records: Sequence[PromptIn], *, source: str,
               options: JobOptions = JobOptions()) -> SubmitReceipt:
    """Check ``records`` (:func:`check_job`), then write and enqueue them.

    Raises:
        InputError: a limit is exceeded, or a record or option is bad; nothing is written.
        ConfigError: the model file is unreadable.
        ServiceError: as for :func:`submit_records`.
    """
    job = check_job(records, ctx.settings, ctx.tokenizer, source=source, options=options)
    return submit_checked(ctx.engine, ctx.redis, job)


def submit_file(ctx: SubmitContext, path: str | Path, *, fmt: str | None = None,
                stdin: BinaryIO | None = None,
                options: JobOptions = JobOptions()) -> SubmitReceipt:
    """Parse and validate a whole file (``-`` is ``stdin``), then :func:`submit_job` it.

    Lines longer than :func:`pipeline.intake.limits.line_limit` are refused unread, and the
    records get the same limits as any other submission.

    Raises:
        InputError: the file is unreadable, a record is bad or a limit is exceeded (names the
            line); nothing is written.
        ConfigError: the model file is unreadable.
        ServiceError: as for :func:`submit_records`.
    """
    records = read_input(path, fmt, stdin=stdin, limit=line_limit(ctx.settings, ctx.tokenizer))
    return submit_job(ctx, records, source=str(path), options=options)


def _existing_job(engine: Engine, redis_client: redis.Redis, job_id: str) -> SubmitReceipt | None:
    if not 0 < len(job_id) <= MAX_JOB_ID_CHARS:
        raise InputError(f"job id must have 1 to {MAX_JOB_ID_CHARS} characters", field="job_id")
    job = table_of(Job)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(job.c.n_prompts, job.c.status)
                               .where(job.c.id == job_id)).first()
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read job {job_id}: {e}") from e
    if row is None:
        return None
    deferred = row[1] == JobStatus.DEFERRED
    if not deferred:
        reconcile(engine, redis_client, job_id=job_id)
    return SubmitReceipt(job_id=job_id, n_prompts=int(row[0]), deferred=deferred)


def _prompt_rows(job_id: str, records: Sequence[PromptIn], default_max_tokens: int,
                 pending_db_value: object,
                 demand: ModelDemand = ANY_MODEL) -> list[tuple[Any, ...]]:
    """Rows in :data:`PROMPT_COLUMNS` order, JSON already serialised, status as stored; a
    record's own model and quality floor win over the job's ``demand``."""
    dumps = json.dumps
    return [
        (f"{job_id}:{position}", job_id, position, external_id(rec, position), rec.prompt,
         None if rec.messages is None else dumps(rec.messages),
         rec.max_tokens or default_max_tokens,
         None if rec.metadata is None else dumps(rec.metadata),
         None if rec.sampling is None else dumps(rec.sampling.stored()),
         estimate_prompt_tokens(rec), rec.model or demand.model,
         demand.min_quality if rec.min_quality is None else rec.min_quality, pending_db_value)
        for position, rec in enumerate(records, start=1)
    ]


def _write_sql(engine: Engine, job_row: dict[str, Any], records: Sequence[PromptIn],
               default_max_tokens: int, demand: ModelDemand) -> list[tuple[Any, ...]]:
    """Insert the job and its prompts in one transaction; return the prompt rows written."""
    dialect = engine.dialect
    status_type = table_of(Prompt).c.status.type
    to_db = status_type.bind_processor(dialect) or (lambda v: v)
    rows = _prompt_rows(job_row["id"], records, default_max_tokens, to_db(PromptStatus.PENDING),
                        demand)
    try:
        with engine.begin() as conn:
            conn.execute(insert(table_of(Job)), [job_row])
            _bulk_insert(conn, rows)
    except (SQLAlchemyError, dialect.loaded_dbapi.Error) as e:
        raise ServiceError(f"cannot write job {job_row['id']} to the database: {e}") from e
    return rows


def _bulk_insert(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """COPY on PostgreSQL, a driver-level executemany on SQLite.

    Rows are prepared by hand (JSON text, stored enum value) because SQLAlchemy's per-row
    parameter processing costs more than the insert itself at 100k rows.
    """
    names = ", ".join(PROMPT_COLUMNS)
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ConfigError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    cursor = conn.connection.cursor()
    try:
        if dialect == "postgresql":
            with cursor.copy(f"COPY prompt ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(PROMPT_COLUMNS))
            sql = f"INSERT INTO prompt ({names}) VALUES ({marks})"
            for i in range(0, len(rows), SQL_CHUNK_ROWS):
                cursor.executemany(sql, rows[i : i + SQL_CHUNK_ROWS])
    finally:
        cursor.close()


def _enqueue(redis_client: redis.Redis, job_id: str, rows: list[tuple[Any, ...]]) -> None:
    now_s = time.time()
    refs = (PromptRef(r[0], job_id, now_s, r[_TOKENS_EST], r[_MAX_TOKENS]) for r in rows)
    try:
        push_refs(redis_client, refs)
    except ServiceError as e:
        raise ServiceError(
            f"job {job_id} is saved in the database ({len(rows)} prompts pending) but could "
            f"not be enqueued in Redis ({e.__cause__ or e}); run `ecobatch reconcile` once "
            "Redis is back"
        ) from e

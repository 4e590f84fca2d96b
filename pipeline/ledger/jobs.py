"""Read side of the ledger: job status, result export, and the job's own status update."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TextIO, cast

from sqlalchemy import Connection, Engine, exists, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import InputError, NotFoundError, ServiceError
from pipeline.ledger.models import (
    MAX_JOB_ID_CHARS,
    Batch,
    BatchStatus,
    Job,
    JobPlan,
    JobStatus,
    Prompt,
    PromptStatus,
    Result,
    table_of,
)
from pipeline.ledger.rows import EXPORT_FIELDS, ExportRow
from pipeline.ledger.state import CANCELLED_REASON, cancel_job, set_job_status

OutputFormat = Literal["jsonl", "csv"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("jsonl", "csv")
_BATCH_FIELDS = ("model", "model_quality")  # of the batch that answered, not the result row
_RESULT_FIELDS = tuple(name for name in EXPORT_FIELDS[EXPORT_FIELDS.index("output"):
                                                      EXPORT_FIELDS.index("metadata")]
                       if name not in _BATCH_FIELDS)
_PROMPT_FIELDS = ("metadata", "error")
EXPORT_CHUNK_ROWS = 2_000
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class JobStatusView:
    """Where a job stands, with its sustainability totals so far.

    Attributes:
        job_id: the job.
        status: the job's status, derived from its prompts when the stored one lags behind.
        source: file name, ``-`` or ``client``.
        strategy: routing strategy.
        created_at: submission time (UTC).
        total: prompts in the job.
        counts: prompts per prompt status (pending, batched, done, dead).
        n_results: prompts that have a result.
        n_failed: dead prompts without a result.
        energy_j: measured or estimated energy of the results so far, in joules.
        carbon_g: operational carbon so far, in grams CO2e.
        embodied_carbon_g: amortised embodied carbon so far, in grams CO2e.
        water_l: water so far, in litres.
        cost_usd: energy cost so far, in US dollars; None while no result has a price (a zone
            without price data leaves a result's cost unknown, and the sum skips it).
        errors: why prompts were dead-lettered: each distinct reason (at most
            ``MAX_ERRORS_SHOWN``, the most frequent) with how many prompts it stopped.
        redelivering: prompts of batches whose worker was lost while running them, waiting
            to be delivered again (``router.recovery.lostwork``).
        error: why the submission was refused (status ``rejected``), else None.
    """

    job_id: str
    status: JobStatus
    source: str
    strategy: str | None
    created_at: datetime | None
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    n_results: int = 0
    n_failed: int = 0
    energy_j: float = 0.0
    carbon_g: float = 0.0
    embodied_carbon_g: float = 0.0
    water_l: float = 0.0
    cost_usd: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    redelivering: int = 0
    error: str | None = None

    @property
    def done(self) -> int:
        """Prompts answered."""
        return self.n_results

    @property
    def finished(self) -> bool:
        """True once every prompt has a result or is dead."""
        return self.n_results + self.n_failed >= self.total

    @property
    def fraction_done(self) -> float:
        """Answered prompts over all prompts, 0..1."""
        return self.n_results / self.total if self.total else 1.0


def derive_status(stored: JobStatus, total: int, n_results: int, n_failed: int,
                  n_started: int) -> JobStatus:
    """The status a job should have given its prompts' progress.

    Every prompt answered or dead: done (failed if none was answered). Some work started on a
    queued job: running. Otherwise the stored status stands (deferred jobs stay deferred).
    A cancelled job stays cancelled.
    """
    if stored == JobStatus.CANCELED:
        return stored
    if total and n_results + n_failed >= total:
        return JobStatus.FAILED if n_results == 0 else JobStatus.DONE
    if stored == JobStatus.QUEUED and n_started > 0:
        return JobStatus.RUNNING
    return stored


def job_not_found(job_id: str) -> NotFoundError:
    """The error for an id with no job: said apart from a job that was refused (``rejected``)."""
    return NotFoundError(f"job {job_id} not found: not yet taken in, or never submitted")


def check_job_id(job_id: str) -> None:
    """Refuse, as not found, an id no job can have (too long, or with control characters),
    before it reaches SQL: PostgreSQL would reject a NUL byte with a driver error.

    Raises:
        NotFoundError: no job can have this id.
    """
    if not 0 < len(job_id) <= MAX_JOB_ID_CHARS or not job_id.isprintable():
        raise NotFoundError(f"job {job_id!r} not found (a job id is 1 to {MAX_JOB_ID_CHARS} "
                            "printable characters)")


def job_status(engine: Engine, job_id: str) -> JobStatusView:
    """Counts, progress and sustainability totals of one job.

    Raises:
        NotFoundError: no job with this id.
        ServiceError: the database cannot be read.
    """
    check_job_id(job_id)
    try:
        with engine.connect() as conn:
            return _status_view(conn, job_id)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read job {job_id}: {e}") from e


def job_plan(engine: Engine, job_id: str) -> dict[str, Any] | None:
    """The planner's stored window of a deferred job (a ``JobPlan`` row), or None before the
    planner's first pass over it, or for a job never deferred.

    Raises:
        ServiceError: the database cannot be read.
    """
    plan = table_of(JobPlan)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(plan).where(plan.c.job_id == job_id)).mappings().first()
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read the plan of job {job_id}: {e}") from e
    return None if row is None else dict(row)


def refresh_job_status(engine: Engine, job_id: str) -> JobStatus:
    """Store the derived status of a job (done once every prompt has a result or is dead).

    Returns:
        The job's status after the update.

    Raises:
        NotFoundError: no job with this id.
        ServiceError: the database cannot be written.
    """
    try:
        with engine.begin() as conn:
            view = _status_view(conn, job_id)
            set_job_status(conn, job_id, view.status)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot update job {job_id}: {e}") from e
    return view.status


def cancel(engine: Engine, job_id: str, reason: str = CANCELLED_REASON) -> JobStatusView:
    """Cancel a job (see :func:`pipeline.ledger.state.cancel_job`); a repeat, or a job that
    already ended, changes nothing. Return its status after. ``reason`` is what its requests
    that never started say in the error file.

    Raises:
        NotFoundError: no job with this id.
        ServiceError: the database cannot be written.
    """
    check_job_id(job_id)
    try:
        with engine.begin() as conn:
            _status_view(conn, job_id)  # NotFoundError before anything is written
            cancel_job(conn, job_id, reason)
            return _status_view(conn, job_id)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot cancel job {job_id}: {e}") from e


def _status_view(conn: Connection, job_id: str) -> JobStatusView:
    job, prompt, result = table_of(Job), table_of(Prompt), table_of(Result)
    row = conn.execute(select(job).where(job.c.id == job_id)).mappings().first()
    if row is None:
        raise job_not_found(job_id)
    counts = {s.value: 0 for s in PromptStatus}
    for status, n in conn.execute(select(prompt.c.status, func.count())
                                  .where(prompt.c.job_id == job_id).group_by(prompt.c.status)):
        counts[PromptStatus(status).value] = int(n)
    has_result = exists().where(result.c.prompt_id == prompt.c.id)
    n_failed = conn.execute(select(func.count()).select_from(prompt).where(
        prompt.c.job_id == job_id, prompt.c.status == PromptStatus.DEAD, ~has_result)).scalar_one()
    sums = conn.execute(select(
        func.count(), func.sum(result.c.energy_j), func.sum(result.c.carbon_g),
        func.sum(result.c.embodied_carbon_g), func.sum(result.c.water_l),
        func.sum(result.c.cost_usd)).where(result.c.job_id == job_id)).one()
    total = sum(counts.values())
    n_started = total - counts[PromptStatus.PENDING.value]
    status = derive_status(JobStatus(row["status"]), total, int(sums[0]), int(n_failed),
                           n_started)
    return JobStatusView(
        job_id=job_id, status=status, source=row["source"], strategy=row["strategy"],
        created_at=row["created_at"], total=total, counts=counts, n_results=int(sums[0]),
        n_failed=int(n_failed), energy_j=float(sums[1] or 0.0), carbon_g=float(sums[2] or 0.0),
        embodied_carbon_g=float(sums[3] or 0.0), water_l=float(sums[4] or 0.0),
        cost_usd=None if sums[5] is None else float(sums[5]), errors=_dead_errors(conn, job_id),
        redelivering=_redelivering(conn, job_id),
        error=row["error"],
    )


def _redelivering(conn: Connection, job_id: str) -> int:
    """Prompts of the job in batches taken back from a lost worker (``dispatched`` with the
    lost worker still named) that no worker has claimed again yet."""
    prompt, batch = table_of(Prompt), table_of(Batch)
    # Two steps, not a join: right after a large submit the planner's statistics still say the
    # tables are nearly empty, and the join it then picked took 21 s on a 100k-prompt job with
    # 80k prompts batched. Taken-back batches are few (usually none), found by their status.
    taken_back = list(conn.execute(select(batch.c.id).where(
        batch.c.status == BatchStatus.DISPATCHED, batch.c.worker_id.is_not(None))).scalars())
    if not taken_back:
        return 0
    return int(conn.execute(select(func.count()).select_from(prompt).where(
        prompt.c.batch_id.in_(taken_back), prompt.c.job_id == job_id,
        prompt.c.status == PromptStatus.BATCHED)).scalar_one())


def _dead_errors(conn: Connection, job_id: str) -> dict[str, int]:
    prompt = table_of(Prompt)
    n = func.count().label("n")
    rows = conn.execute(select(prompt.c.error, n).where(
        prompt.c.job_id == job_id, prompt.c.status == PromptStatus.DEAD,
        prompt.c.error.is_not(None)).group_by(prompt.c.error).order_by(n.desc())
        .limit(MAX_ERRORS_SHOWN))
    return {str(error): int(count) for error, count in rows}


def iter_results(engine: Engine, job_id: str) -> Iterator[ExportRow]:
    """Export rows of a job in position order: answered prompts, and dead ones (no output).

    Each row has the keys of :data:`EXPORT_FIELDS`; ``id`` is the user's id (or the 1-based
    position), ``prompt_id`` the ledger's. The job is looked up before the first row, so an
    unknown id fails here rather than mid-export.

    Raises:
        NotFoundError: no job with this id.
        ServiceError: the database cannot be read.
    """
    check_job_id(job_id)
    job = table_of(Job)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(job.c.id).where(job.c.id == job_id)).first()
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read job {job_id}: {e}") from e
    if found is None:
        raise job_not_found(job_id)
    return _stream_results(engine, job_id)


def _export_query(job_id: str) -> Any:
    prompt, result, batch = table_of(Prompt), table_of(Result), table_of(Batch)
    return (
        select(prompt.c.external_id.label("id"), prompt.c.id.label("prompt_id"),
               prompt.c.status, prompt.c.prompt, prompt.c.messages,
               prompt.c.batch_id.label("prompt_batch_id"),
               *(prompt.c[name] for name in _PROMPT_FIELDS),
               *(result.c[name] for name in _RESULT_FIELDS),
               batch.c.model, batch.c.device.label("batch_device"))
        .select_from(prompt.outerjoin(result, result.c.prompt_id == prompt.c.id)
                     .outerjoin(batch, batch.c.id == result.c.batch_id))
        .where(prompt.c.job_id == job_id,
               result.c.prompt_id.is_not(None) | (prompt.c.status == PromptStatus.DEAD))
        .order_by(prompt.c.position)
    )


def decision_quality(device: str, model: str | None,
                     scores: dict[str, Any] | None) -> float | None:
    """The quality score of ``model`` on ``device`` in a batch's decision record (what the
    router weighed when it chose the pair); None when the record has none.

    The record names an option ``device/model`` where the device serves several models, else
    ``device``; the entry must name the same model.
    """
    if model is None:
        return None
    for key in (f"{device}/{model}", device):
        got = (scores or {}).get(key)
        if isinstance(got, dict) and got.get("model") == model:
            value = got.get("quality")
            return float(value) if isinstance(value, int | float) else None
    return None


def _qualities(conn: Connection, job_id: str) -> dict[tuple[str, str], float | None]:
    """Each (device, model) that answered the job, with its score from one of its batches'
    decision records (the registry's score, the same for every batch of the pair); reads one
    record per pair, not one per row."""
    result, batch = table_of(Result), table_of(Batch)
    answered = select(result.c.batch_id).where(result.c.job_id == job_id)
    first = (select(func.min(batch.c.id).label("batch_id"))
             .where(batch.c.id.in_(answered), batch.c.model.is_not(None))
             .group_by(batch.c.device, batch.c.model)).subquery()
    rows = conn.execute(select(batch.c.device, batch.c.model, batch.c.scores)
                        .join(first, first.c.batch_id == batch.c.id))
    return {(device, model): decision_quality(device, model, scores)
            for device, model, scores in rows}


def _stream_results(engine: Engine, job_id: str) -> Iterator[ExportRow]:
    try:
        with engine.connect() as conn:
            quality = _qualities(conn, job_id)
            rows = conn.execution_options(yield_per=EXPORT_CHUNK_ROWS).execute(
                _export_query(job_id)).mappings()
            for row in rows:
                yield _export_row(row, quality)
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read results of job {job_id}: {e}") from e


def _export_row(row: Any, quality: dict[tuple[str, str], float | None]) -> ExportRow:
    out = {name: row[name] for name in EXPORT_FIELDS
           if name not in ("batch_id", "model_quality")}
    out["status"] = PromptStatus(row["status"]).value
    out["batch_id"] = row["batch_id"] or row["prompt_batch_id"]
    out["model_quality"] = quality.get((row["batch_device"], row["model"]))
    return cast(ExportRow, {name: out[name] for name in EXPORT_FIELDS})


def write_results(rows: Iterable[ExportRow], fh: TextIO, fmt: str) -> int:
    """Write export rows as JSONL or CSV (nested values JSON-encoded); return rows written.

    For CSV, open ``fh`` with ``newline=""``.

    Raises:
        InputError: unknown format.
    """
    if fmt == "jsonl":
        n = 0
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
        return n
    if fmt == "csv":
        writer = csv.DictWriter(fh, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        n = 0
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
            n += 1
        return n
    raise InputError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value

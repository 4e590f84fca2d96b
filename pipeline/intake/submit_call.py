"""The work of one ``ecobatch.submit`` task call: validate its JSON arguments, submit them
through :func:`pipeline.intake.submit.submit_job`, or keep its refusal in the ledger.

A service posting by task name gets no reply (there is no result backend), so a refusal is
kept where it can look: a job in state ``rejected`` under the call's job id, with the reason in
``Job.error``, which ``ecobatch status`` shows. A refused call delivered again stays rejected
with its first reason, and takes no rate-limit token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, TypeGuard

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pipeline.errors import ConfigError, InputError, ServiceError
from pipeline.intake.limits import take_submit_token
from pipeline.intake.parse import MAX_TOKENS_CAP, storable_text, validate_records
from pipeline.intake.submit import JobOptions, SubmitContext, SubmitReceipt, submit_job
from pipeline.ledger.db import session_scope
from pipeline.ledger.models import MAX_JOB_ID_CHARS, Job, JobStatus
from pipeline.ledger.retry import is_permanent

MAX_ERROR_CHARS = 2000
MAX_SOURCE_CHARS = 200
_JOB = Job.__table__.c  # type: ignore[attr-defined]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitCall:
    """Who sent one ``ecobatch.submit`` message, and whether it was delivered before.

    Attributes:
        job_id: the task id without dashes, which is the job id; None if the message had none.
        client: who sent it, for the rate limit.
        redelivered: the message came before (a retry or a redelivery), so its rate-limit
            token is already taken.
    """

    job_id: str | None
    client: str
    redelivered: bool


def take_submit_call(ctx: SubmitContext, prompts: Any, options: dict[str, Any],
                     call: SubmitCall) -> dict[str, Any]:
    """Submit the call's prompts, or record why not as a rejected job.

    Returns:
        ``{"job_id", "n_prompts"}`` when accepted, ``{"job_id", "error"}`` when refused.

    Raises:
        ServiceError: SQL or Redis cannot be reached; the caller retries the whole call.
    """
    previous = rejection_of(ctx.engine, call.job_id)
    if previous is not None:
        log.warning("ecobatch.submit: job %s stays rejected: %s", call.job_id, previous)
        return {"job_id": call.job_id, "error": previous}
    try:
        if not call.redelivered:
            take_submit_token(ctx.redis, call.client, ctx.settings.submit_rate_per_min)
        receipt = submit_task_payload(ctx, prompts, options, job_id=call.job_id)
    except (InputError, ConfigError) as e:
        return _reject(ctx.engine, call.job_id, str(e), options)
    except ServiceError as e:
        if not is_permanent(e):  # SQL or Redis away: the call is tried again later
            raise
        return _reject(ctx.engine, call.job_id, str(e), options)  # the database refuses the data
    return {"job_id": receipt.job_id, "n_prompts": receipt.n_prompts}


def _reject(engine: Engine, job_id: str | None, error: str,
            options: dict[str, Any]) -> dict[str, Any]:
    reason = record_rejection(engine, job_id, error, _source_of(options))
    log.warning("ecobatch.submit: job %s rejected: %s", job_id, reason)
    return {"job_id": job_id, "error": reason}


def record_rejection(engine: Engine, job_id: str | None, error: str, source: str) -> str:
    """Keep a refused call as job ``job_id`` in state ``rejected``; return the reason kept.

    Idempotent: a call refused before keeps its first reason. Nothing is written for an id no
    job can have, nor over a job already accepted under the same id.

    Raises:
        ServiceError: the database cannot be written.
    """
    reason = _storable(error)
    if not _is_job_id(job_id):
        return reason
    try:
        with session_scope(engine) as session:
            session.add(Job(id=job_id, source=source, status=JobStatus.REJECTED, error=reason))
    except IntegrityError:
        pass  # refused before (a redelivery), or accepted under this id: either way, keep it
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot record the refusal of job {job_id}: {e}") from e
    return rejection_of(engine, job_id) or reason


def rejection_of(engine: Engine, job_id: str | None) -> str | None:
    """Why job ``job_id`` was rejected, or None if it was not (or does not exist).

    Raises:
        ServiceError: the database cannot be read.
    """
    if not _is_job_id(job_id):
        return None
    try:
        with engine.connect() as conn:
            row = conn.execute(select(_JOB.status, _JOB.error).where(_JOB.id == job_id)).first()
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read job {job_id}: {e}") from e
    if row is None or JobStatus(row[0]) != JobStatus.REJECTED:
        return None
    return str(row[1] or "rejected")


def _is_job_id(job_id: str | None) -> TypeGuard[str]:
    return job_id is not None and 0 < len(job_id) <= MAX_JOB_ID_CHARS and job_id.isprintable()


def _storable(text: str) -> str:
    """``text`` as SQL can store it: no NUL or lone surrogate, at most MAX_ERROR_CHARS."""
    clean = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return clean if len(clean) <= MAX_ERROR_CHARS else clean[: MAX_ERROR_CHARS - 3] + "..."


def _source_of(options: Any) -> str:
    source = options.get("source") if isinstance(options, dict) else None
    if isinstance(source, str) and 0 < len(source) <= MAX_SOURCE_CHARS:
        return _storable(source)
    return "celery"


class SubmitOptions(BaseModel):
    """Options of the ``ecobatch.submit`` task (JSON object, every key optional).

    Attributes:
        max_tokens: default new-token limit per prompt, in tokens.
        strategy: routing strategy name (see ``ecobatch submit --help``).
        source: label stored on the job.
        weights: weights of the weighted strategy, e.g. ``{"carbon": 3, "latency": 1}``.
        slo_s: latency target in seconds.
        deadline: ISO 8601 time with a zone by which the job must be done.
        defer: hold the job for the lowest-carbon window before ``deadline``.
        model: the served model that must answer prompts that name none.
        min_quality: the lowest model quality score of prompts that give none (0-100).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: Annotated[int, Field(gt=0, le=MAX_TOKENS_CAP, strict=True)] | None = None
    strategy: str | None = None
    source: Annotated[str, Field(max_length=200), AfterValidator(storable_text)] = "celery"
    weights: dict[str, float] | None = None
    slo_s: Annotated[float, Field(gt=0)] | None = None
    deadline: AwareDatetime | None = None
    defer: bool = False
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    min_quality: Annotated[float, Field(ge=0, le=100)] | None = None


def submit_task_payload(ctx: SubmitContext, prompts: Any, options: dict[str, Any], *,
                        job_id: str | None = None) -> SubmitReceipt:
    """Validate and submit the JSON arguments of an ``ecobatch.submit`` task call.

    Args:
        ctx: the process's engine, Redis client and settings.
        prompts: a list of strings or JSONL-style records.
        options: see :class:`SubmitOptions`.
        job_id: the task id, so that a redelivered task does not submit twice.

    Raises:
        InputError: bad prompts or options (``line`` is the 1-based record number).
        ServiceError: SQL or Redis failed.
    """
    try:
        opts = SubmitOptions.model_validate(options)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(f"bad submit option: {err['msg']}", field=field) from e
    if not isinstance(prompts, list):
        raise InputError(f"prompts must be a list, got {type(prompts).__name__}")
    records = validate_records(prompts)
    job = JobOptions(max_tokens=opts.max_tokens, strategy=opts.strategy, weights=opts.weights,
                     slo_s=opts.slo_s, deadline=opts.deadline, deferred=opts.defer, job_id=job_id,
                     model=opts.model, min_quality=opts.min_quality)
    return submit_job(ctx, records, source=opts.source, options=job)

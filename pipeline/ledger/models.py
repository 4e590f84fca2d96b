"""SQL tables of the ledger: jobs, prompts, batches, results and device profiles.

SQL is the record of truth; Redis only carries references to these rows.
Times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import JSON, Column, DateTime, Dialect, Index, Table, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that reads back aware in UTC on every database.

    PostgreSQL keeps the zone; SQLite stores the text without it and hands back a naive value,
    which is UTC because only UTC is ever written. Tagging it here means no caller has to.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read ``value`` back as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MAX_JOB_ID_CHARS = 32
"""Longest job id: a uuid4 as 32 hex characters, or a Celery task id without its dashes."""


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy table of a ledger model (``Job``, ``Prompt``, ...), typed for Core queries.

    SQLModel declares ``__table__`` without a type, so this is the one place that casts it.
    """
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def _ts(index: bool = False) -> object:
    return Field(default_factory=utc_now, sa_column=Column(UtcDateTime(), index=index))


class JobStatus(StrEnum):
    """Life cycle of a job."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"  # an ecobatch.submit call refused; Job.error says why
    # by ``ecobatch cancel``; its unstarted prompts are dead. Stored by name: 8 characters fit
    # the SQLite column (migration 0003)
    CANCELED = "cancelled"


class PromptStatus(StrEnum):
    """Life cycle of one prompt."""

    PENDING = "pending"
    BATCHED = "batched"
    DONE = "done"
    DEAD = "dead"


class BatchStatus(StrEnum):
    """Life cycle of one batch."""

    DISPATCHED = "dispatched"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    MOVED = "moved"  # its device died before it started; its prompts were routed again


class Job(SQLModel, table=True):
    """One submission: a file, a stdin stream or a programmatic call."""

    id: str = Field(primary_key=True, max_length=MAX_JOB_ID_CHARS)
    created_at: datetime = _ts(index=True)  # type: ignore[assignment]
    source: str = Field(default="", description="file name, '-' or 'client'")
    n_prompts: int = 0
    status: JobStatus = Field(default=JobStatus.QUEUED, index=True)
    strategy: str | None = None  # None: the router's ECOBATCH_STRATEGY decides
    max_tokens: int = 128
    weights: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    slo_s: float | None = None  # latency target; None: the router's ECOBATCH_SLO_S
    deadline: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    error: str | None = Field(default=None, sa_column=Column(Text))  # why it was rejected


class Prompt(SQLModel, table=True):
    """One prompt of a job. ``id`` is ``<job_id>:<position>``; ``external_id`` is the user's."""

    __table_args__ = (Index("ix_prompt_job_status", "job_id", "status"),)

    id: str = Field(primary_key=True, max_length=80)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    position: int
    external_id: str = Field(max_length=200)
    prompt: str | None = Field(default=None, sa_column=Column(Text))
    messages: list[dict[str, str]] | None = Field(default=None, sa_column=Column(JSON))
    max_tokens: int = 128
    extra: dict[str, object] | None = Field(default=None, sa_column=Column("metadata", JSON))
    # pipeline.intake.sampling.Sampling as JSON; None: every default (greedy, free text)
    sampling: dict[str, object] | None = Field(default=None, sa_column=Column(JSON))
    prompt_tokens_est: int = 0
    # what it asks of its model (migration 0004): a model's name, a lowest quality score
    model: str | None = Field(default=None, max_length=200)
    min_quality: float | None = None
    status: PromptStatus = Field(default=PromptStatus.PENDING, index=True)
    batch_id: str | None = Field(default=None, index=True, max_length=32)
    error: str | None = Field(default=None, sa_column=Column(Text))


class Batch(SQLModel, table=True):
    """A group of prompts sent to one device as one decode."""

    id: str = Field(primary_key=True, max_length=32)
    created_at: datetime = _ts(index=True)  # type: ignore[assignment]
    device: str = Field(index=True, max_length=100)
    model: str | None = Field(default=None, max_length=200)  # served model; None: the device's one
    strategy: str = ""
    size: int = 0
    status: BatchStatus = Field(default=BatchStatus.DISPATCHED, index=True)
    attempts: int = 0
    predicted_latency_s: float = 0.0
    predicted_energy_j: float = 0.0
    predicted_carbon_g: float = 0.0
    prediction_source: str = ""
    started_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    # The worker (host:pid:boot) that claimed it last; still set on a ``dispatched`` batch,
    # it names the worker lost while running it: the batch waits to be delivered again.
    worker_id: str | None = Field(default=None, max_length=200)
    finished_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    latency_s: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    energy_measured: bool | None = None
    peak_memory_bytes: int | None = None
    host_energy_j: float | None = None  # a GPU's host share, apart from energy_j
    host_energy_source: str | None = None
    host_energy_measured: bool | None = None
    energy_notes: str | None = None  # meter caveats, e.g. "short-window,counter-reset"
    error: str | None = Field(default=None, sa_column=Column(Text))
    reason: str | None = Field(default=None, sa_column=Column(Text))  # why this device
    scores: dict[str, dict[str, object]] | None = Field(default=None, sa_column=Column(JSON))


class Result(SQLModel, table=True):
    """The answer to one prompt, upserted by prompt id so redelivery never doubles a row."""

    prompt_id: str = Field(primary_key=True, max_length=80)
    job_id: str = Field(index=True, max_length=32)
    batch_id: str = Field(index=True, max_length=32)
    device: str = Field(max_length=100)
    output: str = Field(sa_column=Column(Text, nullable=False))
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    energy_j: float = 0.0
    energy_source: str = ""
    energy_measured: bool = False
    host_energy_j: float | None = None  # a GPU's host share; carbon/water/cost cover both
    host_energy_source: str | None = None
    host_energy_measured: bool | None = None
    carbon_g: float = 0.0
    embodied_carbon_g: float = 0.0
    water_l: float = 0.0
    cost_usd: float | None = None  # None where the zone has no price data
    intensity_g_per_kwh: float = 0.0
    # average or marginal, and from where (pipeline/grid/signal.py); None: not recorded
    intensity_signal: str | None = Field(default=None, max_length=80)
    created_at: datetime = _ts()  # type: ignore[assignment]


class DeviceProfile(SQLModel, table=True):
    """Benchmarked figures of one device at one batch size (written by ``ecobatch bench``)."""

    id: int | None = Field(default=None, primary_key=True)
    device: str = Field(index=True, max_length=100)
    model: str = Field(max_length=300)
    batch_size: int
    created_at: datetime = _ts()  # type: ignore[assignment]
    repeats: int = 1
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    tokens_per_s: float = 0.0
    energy_j: float = 0.0
    j_per_token: float = 0.0
    avg_power_w: float = 0.0
    peak_memory_bytes: int = 0
    energy_source: str = ""
    energy_measured: bool = False


class JobPlan(SQLModel, table=True):
    """The planner's window for a deferred job, kept in SQL so it survives every restart.

    ``released_at`` is set once, in the same transaction that moves the job from ``deferred`` to
    ``queued``, so a job is released exactly once however many planners run.
    """

    job_id: str = Field(primary_key=True, foreign_key="job.id", max_length=32)
    updated_at: datetime = _ts()  # type: ignore[assignment]
    start_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    end_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    deadline: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    devices: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    energy_j: float = 0.0
    carbon_g: float = 0.0  # forecast gCO2e in the chosen window
    carbon_now_g: float = 0.0  # forecast gCO2e had the job started at planning time
    forecast_digest: str = ""  # a changed forecast re-plans a job not yet released
    note: str = Field(default="", sa_column=Column(Text))
    released_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))

"""The newest jobs of the ledger, each with its derived state, progress and totals."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import InputError, ServiceError
from pipeline.ledger.jobs import JobStatusView, job_status
from pipeline.ledger.models import Job, JobStatus

MAX_LISTED = 1000


def recent_jobs(engine: Engine, *, limit: int = 20,
                state: JobStatus | None = None) -> list[JobStatusView]:
    """Up to ``limit`` jobs, newest first, in ``state`` if given (the derived state, as
    ``ecobatch status`` shows it).

    Raises:
        InputError: ``limit`` out of 1 to :data:`MAX_LISTED`.
        ServiceError: the database cannot be read.
    """
    if not 1 <= limit <= MAX_LISTED:
        raise InputError(f"limit must be 1 to {MAX_LISTED}, got {limit}", field="limit")
    found: list[JobStatusView] = []
    for job_id in _ids_newest_first(engine):
        view = job_status(engine, job_id)
        if state is None or view.status == state:
            found.append(view)
            if len(found) == limit:
                break
    return found


def _ids_newest_first(engine: Engine) -> Iterator[str]:
    job = Job.__table__.c  # type: ignore[attr-defined]
    query = select(job.id).order_by(job.created_at.desc(), job.id)
    try:
        with engine.connect() as conn:
            ids = [str(i) for i in conn.execute(query).scalars()]
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot list jobs: {e}") from e
    yield from ids

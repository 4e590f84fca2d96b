"""Write side of the ledger for device workers: claims, failures and idempotent result upserts
(the status changes themselves are :mod:`pipeline.ledger.state`'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from pipeline.errors import NotFoundError
from pipeline.ledger import state
from pipeline.ledger.db import session_scope
from pipeline.ledger.models import Batch, BatchStatus, Prompt, PromptStatus, Result, table_of
from pipeline.ledger.outcome import attempts_exhausted
from pipeline.ledger.rows import BatchFigures, ResultRow
from pipeline.ledger.state import (
    dead_letter_batch,
    mark_batch_done,
    mark_batch_running,
    mark_batch_waiting,
    requeue_batch,
)

SETTLED_BATCH = frozenset({BatchStatus.DONE, BatchStatus.DEAD, BatchStatus.MOVED})


@dataclass(frozen=True)
class ClaimedBatch:
    """A batch a worker is about to run, with its prompts in position order."""

    batch: Batch
    prompts: list[Prompt]
    lost_before: bool = False
    """The previous attempt never finished (its worker died): back off before running again,
    as after a failure that raised; this delivery was not counted."""

    @property
    def dead(self) -> bool:
        """True when the attempt limit was exceeded and the batch was dead-lettered."""
        return self.batch.status == BatchStatus.DEAD

    @property
    def already_done(self) -> bool:
        """True when an earlier delivery already wrote every result."""
        return self.batch.status == BatchStatus.DONE

    @property
    def settled(self) -> bool:
        """True when there is nothing to run: done, dead-lettered or moved to another device."""
        return self.batch.status in SETTLED_BATCH


def claim_batch(engine: Engine, batch_id: str, max_attempts: int,
                worker_id: str | None = None) -> ClaimedBatch:
    """Count one more attempt at ``batch_id`` in SQL; dead-letter it past ``max_attempts``.

    A batch set running records ``worker_id`` (the claiming worker's identity), so that a
    router can take it back if that worker's heartbeat stops (``router.recovery.lostwork``).

    The attempt is counted by one ``UPDATE ... SET attempts = attempts + 1``, so two deliveries
    claiming at once both count, on SQLite as on PostgreSQL. A batch found ``running`` was
    left by an attempt that never finished (its worker was killed, crashed or hit the time
    limit), or is running elsewhere right now (a duplicate delivery); that is noted as the
    batch's error, which the dead-letter reason repeats, and the claim comes back
    ``lost_before`` without counting, so the caller backs off and tries again later.

    Raises:
        NotFoundError: no such batch.
    """
    with session_scope(engine) as s:
        s.execute(update(Batch).where(col(Batch.id) == batch_id,
                                      col(Batch.status).not_in(SETTLED_BATCH))
                  .values(attempts=col(Batch.attempts) + 1))
        batch = s.get(Batch, batch_id, with_for_update=_lock_ok(engine), populate_existing=True)
        if batch is None:
            raise NotFoundError(f"batch {batch_id} not found")
        prompts = list(s.execute(
            select(Prompt).where(col(Prompt.batch_id) == batch_id).order_by(col(Prompt.position))
        ).scalars())
        if batch.status in SETTLED_BATCH:
            return ClaimedBatch(batch, prompts)
        if batch.status == BatchStatus.RUNNING and _back_off_lost(batch, max_attempts):
            s.add(batch)
            return ClaimedBatch(batch, prompts, lost_before=True)
        if attempts_exhausted(batch.attempts, max_attempts):
            dead_letter_batch(s, batch, f"gave up after {max_attempts} attempts; last error: "
                                        f"{batch.error or 'none recorded'}")
        else:
            mark_batch_running(batch, worker_id)
        s.add(batch)
        return ClaimedBatch(batch, prompts)


def _back_off_lost(batch: Batch, max_attempts: int) -> bool:
    """Note that the attempt before never finished; True when another is still allowed, in
    which case this delivery is not counted and the batch waits again."""
    note = (f"attempt {batch.attempts - 1} did not finish: its worker was killed, "
            "crashed or hit the time limit")
    if attempts_exhausted(batch.attempts, max_attempts):
        batch.error = note  # the dead-letter reason repeats it
        return False
    batch.attempts -= 1
    mark_batch_waiting(batch, note)
    return True


def _lock_ok(engine: Engine) -> bool:
    return engine.dialect.name != "sqlite"


def dead_letter(engine: Engine, batch_id: str, reason: str) -> None:
    """Move a batch and its prompts to the dead-letter state with ``reason``."""
    with session_scope(engine) as s:
        batch = s.get(Batch, batch_id)
        if batch is None:
            raise NotFoundError(f"batch {batch_id} not found")
        dead_letter_batch(s, batch, reason)
        s.add(batch)
    refresh_jobs(engine, batch_id)


def record_failure(engine: Engine, batch_id: str, reason: str) -> None:
    """Note an error on a batch that will be retried, and mark it waiting again.

    Back in ``dispatched``, the next claim does not mistake this attempt for a lost one, nor
    ``status`` for a batch whose worker was lost (its worker is cleared).
    """
    with session_scope(engine) as s:
        requeue_batch(s, batch_id, reason)


def upsert_results(s: Session, rows: Sequence[ResultRow]) -> None:
    """Insert results, or overwrite them when the prompt already has one (redelivery)."""
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # One statement executed with many parameter sets: SQLAlchemy compiles it once and caches
    # it. Rows inlined with .values([...]) made a new statement per batch, and compiling it
    # was 37% of a worker's CPU in the 100k-prompt load test (py-spy).
    stmt = insert(table_of(Result))
    keys = [k for k in rows[0] if k != "prompt_id"]
    stmt = stmt.on_conflict_do_update(
        index_elements=["prompt_id"], set_={k: stmt.excluded[k] for k in keys}
    )
    s.execute(stmt, [dict(r) for r in rows])


def reject_prompts(engine: Engine, reasons: dict[str, str]) -> None:
    """Dead-letter single prompts (by id) with the reason each cannot run."""
    with session_scope(engine) as s:
        state.reject_prompts(s, reasons)


def complete_batch(engine: Engine, batch_id: str, batch_values: BatchFigures | None,
                   result_rows: Sequence[ResultRow]) -> None:
    """Upsert the batch's results and mark it and the answered prompts done, in one transaction
    (``batch_values`` None: nothing was measured, every prompt was refused)."""
    answered = [r["prompt_id"] for r in result_rows]
    with session_scope(engine) as s:
        upsert_results(s, result_rows)
        mark_batch_done(s, batch_id, batch_values or {}, answered)
    refresh_jobs(engine, batch_id)


def refresh_jobs(engine: Engine, batch_id: str) -> None:
    """Bring a job's status up to date once none of its prompts is still open.

    The cheap indexed existence check runs per batch; the full status derivation (which
    aggregates the job's results) runs only when the job may have finished.
    """
    from pipeline.ledger.jobs import refresh_job_status

    open_states = (PromptStatus.PENDING, PromptStatus.BATCHED)
    with Session(engine) as s:
        job_ids = set(s.execute(select(col(Prompt.job_id)).where(col(Prompt.batch_id) == batch_id)).scalars())
        finished = [j for j in job_ids if s.execute(select(col(Prompt.id)).where(
            col(Prompt.job_id) == j, col(Prompt.status).in_(open_states)).limit(1)).first() is None]
    for job_id in finished:
        refresh_job_status(engine, job_id)

"""The one owner of status changes: every batch, prompt and job status is written here.

Each life cycle is a table of allowed moves (:data:`BATCH_MOVES`, :data:`PROMPT_MOVES`,
:data:`JOB_MOVES`). A named transition checks it: on a row loaded in a session it raises
:class:`~pipeline.errors.StateError` (a bug in the caller); as an ``UPDATE`` it is guarded by
``status IN (<the states it may come from>)``, so a row another process moved first is left
alone and the transition says so (False, or no ids back).

An answer is kept whenever it arrives (results are the record), so ``done`` may be reached
from any state but ``rejected``. New rows start in their first state where they are written:
a job queued or deferred (``pipeline.intake.submit``) or rejected
(``pipeline.intake.submit_call``), its prompts pending, a batch dispatched
(:func:`add_batches`, called by ``router.live.route``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Update, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from pipeline.errors import StateError
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus, Prompt, PromptStatus, utc_now
from pipeline.ledger.rows import BatchRow

S = TypeVar("S", bound=StrEnum)
Executor = Session | Connection
_B, _P, _J = BatchStatus, PromptStatus, JobStatus

BATCH_MOVES: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    _B.DISPATCHED: frozenset({_B.DISPATCHED, _B.RUNNING, _B.MOVED, _B.DEAD, _B.DONE}),
    _B.RUNNING: frozenset({_B.DISPATCHED, _B.DONE, _B.DEAD}),
    _B.DONE: frozenset({_B.DONE}),  # a redelivery writes the same results again
    _B.DEAD: frozenset({_B.DONE}),  # the late answer of an attempt thought lost
    _B.MOVED: frozenset({_B.DONE}),
}
PROMPT_MOVES: Mapping[PromptStatus, frozenset[PromptStatus]] = {
    _P.PENDING: frozenset({_P.BATCHED, _P.DONE, _P.DEAD}),  # dead: its job was cancelled
    _P.BATCHED: frozenset({_P.PENDING, _P.DONE, _P.DEAD}),
    _P.DONE: frozenset({_P.DONE}),
    _P.DEAD: frozenset({_P.DEAD, _P.DONE}),  # its batch's reason replaces its own
}
JOB_MOVES: Mapping[JobStatus, frozenset[JobStatus]] = {
    _J.QUEUED: frozenset({_J.RUNNING, _J.DONE, _J.FAILED, _J.CANCELED}),
    _J.DEFERRED: frozenset({_J.QUEUED, _J.DONE, _J.FAILED, _J.CANCELED}),
    _J.RUNNING: frozenset({_J.DONE, _J.FAILED, _J.CANCELED}),
    _J.FAILED: frozenset({_J.DONE}),
    _J.DONE: frozenset(),
    _J.REJECTED: frozenset(),
    _J.CANCELED: frozenset(),
}


def sources(moves: Mapping[S, frozenset[S]], target: S) -> list[S]:
    """The states from which ``target`` may be reached, in declaration order."""
    return [state for state, targets in moves.items() if target in targets]


def check(moves: Mapping[S, frozenset[S]], old: S, new: S) -> None:
    """Refuse a move the life cycle does not allow.

    Raises:
        StateError: ``old`` may not become ``new``.
    """
    if new not in moves[old]:
        raise StateError(f"a {type(old).__name__} may not go from {old} to {new}")


def mark_batch_running(batch: Batch, worker_id: str | None) -> None:
    """A loaded batch starts its attempt on the worker ``worker_id``."""
    check(BATCH_MOVES, batch.status, _B.RUNNING)
    batch.status = _B.RUNNING
    batch.started_at = utc_now()
    batch.worker_id = worker_id


def mark_batch_waiting(batch: Batch, error: str) -> None:
    """A loaded running batch waits again, its attempt lost (``error`` says how)."""
    check(BATCH_MOVES, batch.status, _B.DISPATCHED)
    batch.status = _B.DISPATCHED
    batch.error = error


def dead_letter_batch(s: Session, batch: Batch, reason: str) -> None:
    """Move a loaded batch and all its prompts to the dead-letter state with ``reason``."""
    check(BATCH_MOVES, batch.status, _B.DEAD)
    batch.status = _B.DEAD
    batch.error = reason
    batch.finished_at = utc_now()
    s.execute(update(Prompt).where(col(Prompt.batch_id) == batch.id,
                                   col(Prompt.status).in_(sources(PROMPT_MOVES, _P.DEAD)))
              .values(status=_P.DEAD, error=reason))


def requeue_batch(ex: Executor, batch_id: str, reason: str) -> bool:
    """A batch whose attempt failed waits for the next one, with no worker; False when it was
    settled meanwhile."""
    return _hits(ex, update(Batch).where(
        col(Batch.id) == batch_id, col(Batch.status).in_(sources(BATCH_MOVES, _B.DISPATCHED)),
    ).values(error=reason, status=_B.DISPATCHED, worker_id=None)) == 1


def take_back_batch(ex: Executor, batch_id: str, worker_id: str, note: str) -> bool:
    """A batch running under the lost worker ``worker_id`` waits again, keeping that worker's
    name; False when it finished or was claimed meanwhile."""
    return _hits(ex, update(Batch).where(
        col(Batch.id) == batch_id, col(Batch.status) == _B.RUNNING,
        col(Batch.worker_id) == worker_id,
    ).values(status=_B.DISPATCHED, error=note)) == 1


def move_batch(ex: Executor, batch_id: str, reason: str) -> list[str]:
    """A batch no worker started is marked moved and its prompts pending again, for the
    router to route anew; return their job ids (none when a worker claimed it meanwhile)."""
    if _hits(ex, update(Batch).where(col(Batch.id) == batch_id,
                                     col(Batch.status) == _B.DISPATCHED)
             .values(status=_B.MOVED, error=reason)) != 1:
        return []
    jobs = ex.execute(update(Prompt).where(col(Prompt.batch_id) == batch_id,
                                           col(Prompt.status) == _P.BATCHED)
                      .values(status=_P.PENDING, batch_id=None).returning(col(Prompt.job_id)))
    return [str(j) for j in jobs.scalars()]


def add_batches(ex: Executor, rows: Sequence[BatchRow]) -> None:
    """New batches, each in its first state (``dispatched``).

    Raises:
        StateError: a row starts in another state.
    """
    if any(row["status"] != _B.DISPATCHED for row in rows):
        raise StateError("a new batch starts dispatched")
    if rows:
        ex.execute(insert(Batch), [dict(row) for row in rows])


def mark_batch_done(ex: Executor, batch_id: str, values: Mapping[str, Any],
                    answered: Collection[str]) -> None:
    """A batch and its ``answered`` prompts are done (``values``: its measured figures)."""
    ex.execute(update(Batch).where(col(Batch.id) == batch_id).values(
        status=_B.DONE, finished_at=utc_now(), error=None, **values))
    if answered:
        ex.execute(update(Prompt).where(col(Prompt.id).in_(list(answered))).values(
            status=_P.DONE))


def reject_prompts(ex: Executor, reasons: Mapping[str, str]) -> None:
    """Dead-letter single batched prompts (by id) with the reason each cannot run."""
    for prompt_id, reason in reasons.items():
        ex.execute(update(Prompt).where(col(Prompt.id) == prompt_id,
                                        col(Prompt.status).in_(sources(PROMPT_MOVES, _P.DEAD)))
                   .values(status=_P.DEAD, error=reason))


_MARK_BATCHED = (
    update(Prompt)
    .where(col(Prompt.id) == bindparam("pid"), col(Prompt.status) == _P.PENDING)
    .values(status=_P.BATCHED, batch_id=bindparam("bid"))
)


def mark_prompts_batched(ex: Executor, assignments: Sequence[Mapping[str, str]]) -> None:
    """Pending prompts join their batches: ``assignments`` are ``{"pid", "bid"}`` pairs."""
    if assignments:
        ex.execute(_MARK_BATCHED, list(assignments))


def release_job(ex: Executor, job_id: str) -> bool:
    """A deferred job is queued; False when another planner released it first."""
    return _hits(ex, update(Job).where(col(Job.id) == job_id, col(Job.status) == _J.DEFERRED)
                 .values(status=_J.QUEUED)) == 1


def set_job_status(ex: Executor, job_id: str, status: JobStatus) -> None:
    """Store a job's derived status, from any state allowed to reach it."""
    ex.execute(update(Job).where(col(Job.id) == job_id,
                                 col(Job.status).in_(sources(JOB_MOVES, status)))
               .values(status=status))


CANCELLED_REASON = "cancelled: its job was cancelled before this request started"
EXPIRED_REASON = ("expired: its batch's completion window passed before this request started "
                  "(its job was cancelled then)")


def cancel_job(ex: Executor, job_id: str, reason: str = CANCELLED_REASON) -> bool:
    """Cancel a job: no more of its prompts start. Its pending prompts are dead-lettered with
    ``reason`` (the router skips a reference whose prompt is no longer pending),
    and so is each batch of its own that no worker has claimed (the worker finds it settled);
    a running batch, or one shared with another job, finishes and keeps its answers.

    Returns:
        True when this call cancelled it; False when it was cancelled, finished or refused
        before (a repeat is harmless).
    """
    if _hits(ex, update(Job).where(col(Job.id) == job_id,
                                   col(Job.status).in_(sources(JOB_MOVES, _J.CANCELED)))
             .values(status=_J.CANCELED)) != 1:
        return False
    ex.execute(update(Prompt).where(col(Prompt.job_id) == job_id, col(Prompt.status) == _P.PENDING)
               .values(status=_P.DEAD, error=reason))
    _drop_unstarted_batches(ex, job_id, reason)
    return True


def _drop_unstarted_batches(ex: Executor, job_id: str, reason: str) -> None:
    """Dead-letter the dispatched batches holding only ``job_id``'s prompts, and those prompts.

    The status guard makes it lose cleanly to a worker's claim: a batch claimed first runs.
    """
    mine = select(col(Prompt.batch_id)).where(col(Prompt.job_id) == job_id,
                                         col(Prompt.status) == _P.BATCHED)
    shared = select(col(Prompt.batch_id)).where(col(Prompt.job_id) != job_id,
                                           col(Prompt.batch_id).is_not(None))
    dropped = list(ex.execute(update(Batch).where(
        col(Batch.id).in_(mine), col(Batch.id).not_in(shared),
        col(Batch.status) == _B.DISPATCHED,
    ).values(status=_B.DEAD, error=reason, finished_at=utc_now())
        .returning(col(Batch.id))).scalars())
    if dropped:
        ex.execute(update(Prompt).where(col(Prompt.batch_id).in_(dropped),
                                        col(Prompt.status) == _P.BATCHED)
                   .values(status=_P.DEAD, error=reason))


def _hits(ex: Executor, stmt: Update) -> int:
    """Rows an ``UPDATE`` changed."""
    return int(cast(CursorResult[Any], ex.execute(stmt)).rowcount)

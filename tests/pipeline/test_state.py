"""The one owner of status changes: moves the life cycles allow, and guards against races."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from pipeline.errors import StateError
from pipeline.ledger.db import make_engine, session_scope
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus, Prompt, PromptStatus
from pipeline.ledger.state import (
    BATCH_MOVES,
    JOB_MOVES,
    PROMPT_MOVES,
    check,
    mark_batch_running,
    move_batch,
    release_job,
    set_job_status,
    sources,
    take_back_batch,
)


def _seed(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        s.add(Job(id="j1", n_prompts=2, status=JobStatus.DEFERRED))
        s.add(Batch(id="b1", device="cpu", size=2))
        s.flush()
        for i in range(2):
            s.add(Prompt(id=f"j1:{i}", job_id="j1", position=i, external_id=str(i),
                         prompt=f"q{i}", status=PromptStatus.BATCHED, batch_id="b1"))
    return engine


def test_every_state_has_its_moves_and_done_is_always_reachable() -> None:
    for moves, done in ((BATCH_MOVES, BatchStatus.DONE), (PROMPT_MOVES, PromptStatus.DONE)):
        assert set(moves) == set(type(done))
        assert set(sources(moves, done)) == set(type(done))  # type: ignore[arg-type]
    assert set(JOB_MOVES) == set(JobStatus) and not JOB_MOVES[JobStatus.REJECTED]
    with pytest.raises(StateError, match="from done to running"):
        check(BATCH_MOVES, BatchStatus.DONE, BatchStatus.RUNNING)


def test_a_settled_batch_cannot_start_again() -> None:
    batch = Batch(id="b", device="cpu", size=1, status=BatchStatus.MOVED)
    with pytest.raises(StateError):
        mark_batch_running(batch, "w1")
    assert batch.status == BatchStatus.MOVED


def test_guarded_moves_leave_a_row_another_process_moved(db_url: str) -> None:
    engine = _seed(db_url)
    with engine.begin() as conn:
        assert not take_back_batch(conn, "b1", "w1", "lost")  # not running: left alone
        assert move_batch(conn, "b1", "device had no live worker") == ["j1", "j1"]
        assert move_batch(conn, "b1", "again") == []  # moved already
        assert release_job(conn, "j1") and not release_job(conn, "j1")
        set_job_status(conn, "j1", JobStatus.QUEUED)  # no move to itself: nothing happens
    with Session(engine) as s:
        batch, job = s.get(Batch, "b1"), s.get(Job, "j1")
        assert batch is not None and batch.status == BatchStatus.MOVED
        assert job is not None and job.status == JobStatus.QUEUED
        prompt = s.get(Prompt, "j1:0")
        assert prompt is not None and prompt.status == PromptStatus.PENDING
        assert prompt.batch_id is None

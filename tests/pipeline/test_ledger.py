"""The worker's write side on SQLite and PostgreSQL: attempts, dead letters, idempotent upserts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from pipeline.ledger.batches import claim_batch, complete_batch, dead_letter
from pipeline.ledger.db import make_engine, session_scope
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus, Prompt, PromptStatus, Result


def _seed(db_url: str, n: int = 3):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        s.add(Job(id="j1", n_prompts=n))
        s.add(Batch(id="b1", device="cpu", size=n))
        s.flush()
        for i in range(n):
            s.add(Prompt(id=f"j1:{i}", job_id="j1", position=i, external_id=str(i),
                         prompt=f"q{i}", status=PromptStatus.BATCHED, batch_id="b1"))
    return engine


def _row(i: int, output: str) -> dict[str, object]:
    return {"prompt_id": f"j1:{i}", "job_id": "j1", "batch_id": "b1", "device": "cpu",
            "output": output, "energy_j": 1.5, "energy_source": "rapl", "energy_measured": True}


def test_claim_counts_attempts_and_dead_letters_past_the_limit(db_url: str) -> None:
    engine = _seed(db_url)
    first = claim_batch(engine, "b1", max_attempts=2)
    assert first.batch.attempts == 1 and first.batch.status == BatchStatus.RUNNING
    assert [p.position for p in first.prompts] == [0, 1, 2]
    # Claimed again while running: attempt 1 was lost. Not counted; the worker backs off.
    lost = claim_batch(engine, "b1", max_attempts=2)
    assert lost.lost_before and lost.batch.attempts == 1 and not lost.settled
    assert lost.batch.error is not None and "attempt 1 did not finish" in lost.batch.error
    assert claim_batch(engine, "b1", max_attempts=2).batch.attempts == 2  # the backed-off retry
    third = claim_batch(engine, "b1", max_attempts=2)  # attempt 2 lost too: the limit is reached
    assert third.dead and third.batch.error is not None
    assert third.batch.error.startswith("gave up after 2 attempts; last error: attempt 2")
    with Session(engine) as s:
        statuses = set(s.execute(select(Prompt.status)).scalars())  # type: ignore[call-overload]
    assert statuses == {PromptStatus.DEAD}


def test_redelivered_batch_overwrites_results_instead_of_doubling(db_url: str) -> None:
    engine = _seed(db_url)
    complete_batch(engine, "b1", {"energy_j": 4.5}, [_row(i, "first") for i in range(3)])
    complete_batch(engine, "b1", {"energy_j": 4.5}, [_row(i, "second") for i in range(3)])
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Result)).scalar_one() == 3
        outputs = set(s.execute(select(Result.output)).scalars())  # type: ignore[call-overload]
        assert outputs == {"second"}
        assert s.get(Job, "j1").status == JobStatus.DONE  # type: ignore[union-attr]
        assert s.get(Batch, "b1").status == BatchStatus.DONE  # type: ignore[union-attr]
    assert claim_batch(engine, "b1", max_attempts=3).already_done


def test_dead_letter_finishes_the_job_as_failed(db_url: str) -> None:
    engine = _seed(db_url)
    dead_letter(engine, "b1", "prompt too long")
    with Session(engine) as s:
        batch = s.get(Batch, "b1")
        assert batch is not None and batch.status == BatchStatus.DEAD
        assert batch.error == "prompt too long"
        assert s.get(Job, "j1").status == JobStatus.FAILED  # type: ignore[union-attr]

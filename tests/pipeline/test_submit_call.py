"""Refusals kept as rejected jobs, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.errors import NotFoundError
from pipeline.intake.submit_call import SubmitCall, record_rejection, rejection_of, take_submit_call
from pipeline.ledger.jobs import job_status
from pipeline.ledger.models import Job, JobStatus
from pipeline.settings import load_settings
from workers.backends.llama.tokenizer import ModelTokenizer


class Ctx:
    """The handles ``take_submit_call`` uses, on the test services."""

    def __init__(self, engine: Engine, client: redis.Redis, **settings: object) -> None:
        self.engine = engine
        self.redis = client
        self.settings = load_settings(**settings)
        self.tokenizer = ModelTokenizer(None)


def _count_jobs(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.execute(select(func.count()).select_from(Job)).scalar_one())


@pytest.mark.service
def test_a_refusal_is_recorded_once_with_its_first_reason(engine: Engine) -> None:
    assert record_rejection(engine, "a" * 32, "first reason", "svc") == "first reason"
    assert record_rejection(engine, "a" * 32, "second reason", "svc") == "first reason"
    assert rejection_of(engine, "a" * 32) == "first reason"
    view = job_status(engine, "a" * 32)
    assert view.status == JobStatus.REJECTED and view.error == "first reason"
    assert view.total == 0 and view.finished


@pytest.mark.service
def test_unstorable_reasons_and_ids(engine: Engine) -> None:
    assert record_rejection(engine, "b" * 32, "nul \x00 and \ud800 " + "x" * 5000, "s")
    stored = rejection_of(engine, "b" * 32) or ""
    assert "\x00" not in stored and len(stored) == 2000 and stored.startswith("nul \\x00")
    record_rejection(engine, "c" * 33, "an id no job can have", "s")
    record_rejection(engine, None, "no id at all", "s")
    assert _count_jobs(engine) == 1
    with pytest.raises(NotFoundError, match="not yet taken in, or never submitted"):
        job_status(engine, "d" * 32)


@pytest.mark.service
def test_calls_refused_or_over_the_rate_are_rejected_and_stay_so(
    engine: Engine, rclient: redis.Redis
) -> None:
    ctx = Ctx(engine, rclient, submit_rate_per_min=1)
    ok = take_submit_call(ctx, ["fine"], {}, SubmitCall("1" * 32, "svc", False))
    assert ok == {"job_id": "1" * 32, "n_prompts": 1}
    over = take_submit_call(ctx, ["fine"], {}, SubmitCall("2" * 32, "svc", False))
    assert "rate limit" in over["error"]
    bad = take_submit_call(ctx, ["x"], {"strategy": "fastest"}, SubmitCall("3" * 32, "b", False))
    assert "field 'strategy'" in bad["error"]
    # delivered again, even with good arguments: still rejected, for the first reason
    again = take_submit_call(ctx, ["fine"], {}, SubmitCall("3" * 32, "b", True))
    assert again == bad
    # a refused call under an accepted job's id leaves that job as it was
    reused = take_submit_call(ctx, ["x"], {"strategy": "fastest"}, SubmitCall("1" * 32, "c", False))
    assert "field 'strategy'" in reused["error"]
    assert job_status(engine, "1" * 32).status == JobStatus.QUEUED

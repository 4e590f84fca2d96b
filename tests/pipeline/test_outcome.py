"""The one retry policy: each kind of failure has one outcome, and the backoff grows with the
attempts counted so far."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from pipeline.errors import (
    DeadLetterError,
    InputError,
    MemoryBudgetError,
    NotFoundError,
    RetryableError,
    ServiceError,
)
from pipeline.ledger.outcome import Action, RetryPolicy, attempts_exhausted, decide

BATCH = RetryPolicy(max_attempts=3)


@pytest.mark.parametrize(("exc", "action"), [
    (NotFoundError("batch b1 not found"), Action.ACK),
    (MemoryBudgetError("KV cache needs 9 GiB"), Action.DEAD_LETTER),
    (DeadLetterError("never fits"), Action.DEAD_LETTER),
    (RetryableError("decode failed", attempts=2), Action.RETRY),
    (RuntimeError("llama_decode returned -1"), Action.RETRY),
    (OperationalError("SELECT 1", {}, Exception("refused")), Action.RETRY),
])
def test_each_failure_has_one_outcome(exc: Exception, action: Action) -> None:
    assert decide(exc, 1, BATCH).action == action


def test_backoff_follows_the_attempts_counted_in_sql() -> None:
    assert decide(RuntimeError("x"), 1, BATCH).delay_s == 2
    assert decide(RuntimeError("x"), 3, BATCH).delay_s == 8
    # a redelivered message starts Celery's count again: the SQL count sets the backoff
    assert decide(RetryableError("x", attempts=4), 1, BATCH).delay_s == 16
    assert decide(RetryableError("x", attempts=4, delay_s=0.5), 1, BATCH).delay_s == 0.5
    assert decide(RuntimeError("x"), 10_000, BATCH).delay_s == 60


def test_reasons_and_unhandled_failures() -> None:
    assert decide(RuntimeError("boom"), 1, BATCH).reason == "RuntimeError: boom"
    assert decide(MemoryBudgetError("too big"), 1, BATCH).reason == "too big"
    submit = RetryPolicy(handles=(ServiceError,))
    assert decide(ServiceError("redis away"), 5, submit).action == Action.RETRY
    assert decide(InputError("bad"), 1, submit).action == Action.FAIL


def test_attempts_past_the_limit_are_exhausted() -> None:
    assert not attempts_exhausted(3, 3) and attempts_exhausted(4, 3)
    assert not attempts_exhausted(10**6, None)

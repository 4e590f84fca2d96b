"""What becomes of a failed attempt: acknowledge it, retry it after a delay, or dead-letter it.

The one retry policy of ecobatch (after dramatiq's ``Retries`` middleware). The error tree
(:mod:`pipeline.errors`) says what kind of failure an exception is; :func:`decide` turns it and
the attempts so far into an :class:`Outcome`; a Celery task only acts on the outcome.

=====================  =====================================================================
failure                outcome
=====================  =====================================================================
``NotFoundError``      ack: there is nothing to run, ever
``DeadLetterError``    dead-letter at once (``MemoryBudgetError`` is one)
``RetryableError``     retry after its ``delay_s``, else after the backoff of its ``attempts``
other, handled         retry after the backoff (a decode, the database, a bug)
not handled            fail: raised, so Celery logs it and acknowledges the message
=====================  =====================================================================

The retries of a batch are capped by the attempts counted in SQL, never by Celery (a
redelivered message starts Celery's count at 0 again): the claim that counts one attempt past
the limit dead-letters the batch (:func:`attempts_exhausted`, asked by
``pipeline.ledger.batches.claim_batch``). A database write that fails while the database is
away is retried in place, before any of this (``pipeline.ledger.retry.retry_db``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.errors import DeadLetterError, NotFoundError, RetryableError

FIRST_DELAY_S = 2
MAX_DELAY_S = 60


class Action(StrEnum):
    """What to do with the message of a failed attempt."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


@dataclass(frozen=True)
class Outcome:
    """The decision on one failed attempt.

    Attributes:
        action: what to do with the message.
        delay_s: seconds before the next attempt (for a dead-letter too, in case the
            dead-letter state cannot be written now and the attempt is retried instead).
        reason: the failure in words, for the log or the dead-letter state.
    """

    action: Action
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Limits and backoff of one kind of task.

    Attributes:
        max_attempts: attempts allowed before dead-lettering; None for no limit.
        first_delay_s: delay before the second attempt, doubled for each after it.
        max_delay_s: longest delay.
        handles: the failures this policy decides; any other is raised (:attr:`Action.FAIL`).
    """

    max_attempts: int | None = None
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    handles: tuple[type[BaseException], ...] = (Exception,)

    def backoff_s(self, retries: int) -> float:
        """The delay after ``retries`` retries so far: 2, 4, 8, ... capped at 60 s by default."""
        return min(self.max_delay_s, self.first_delay_s * 2 ** min(max(0, retries), 32))


def attempts_exhausted(attempts: int, max_attempts: int | None) -> bool:
    """True when ``attempts`` (counted in SQL, this one included) pass ``max_attempts``."""
    return max_attempts is not None and attempts > max_attempts


def failure_reason(exc: BaseException) -> str:
    """An exception as a batch's error: its class name, then its message."""
    return f"{type(exc).__name__}: {exc}"


def decide(exc: BaseException, attempts: int, policy: RetryPolicy) -> Outcome:
    """The outcome of an attempt that raised ``exc``.

    Args:
        exc: what the attempt raised.
        attempts: attempts made so far, the failed one included (a
            :class:`~pipeline.errors.RetryableError` may know of more, counted in SQL).
        policy: the task's limits and backoff.
    """
    if not isinstance(exc, policy.handles):
        return Outcome(Action.FAIL, reason=failure_reason(exc))
    if isinstance(exc, NotFoundError):
        return Outcome(Action.ACK, reason=str(exc))
    if isinstance(exc, RetryableError):
        if exc.delay_s is not None:
            return Outcome(Action.RETRY, exc.delay_s, str(exc))
        attempts = max(attempts, exc.attempts)
    delay_s = policy.backoff_s(attempts - 1)
    if isinstance(exc, DeadLetterError):
        return Outcome(Action.DEAD_LETTER, delay_s, str(exc))
    return Outcome(Action.RETRY, delay_s, failure_reason(exc))

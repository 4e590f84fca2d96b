"""The settings a device worker reads around its backend, as one small frozen object built by
the entry layer (``pipeline.app``). The backend factory still receives the whole settings:
backend plugins are written against them (``workers.backends.factory``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.ledger.outcome import RetryPolicy
from pipeline.settings import Settings, soft_time_limit_s


@dataclass(frozen=True)
class WorkerConfig:
    """What ``workers.service.infer`` reads of the settings.

    Attributes:
        max_attempts: attempts at a batch before it is dead-lettered.
        retry_backoff_s: wait before a failed batch's first retry, doubled for each after it.
        db_retry_s: how long a result write is retried while the database is away.
        temperature: sampling temperature of every request.
        continuous: the llama backend keeps its slots busy across batches
            (:mod:`workers.service.engine`).
        batch_size: prompts per batch, the engine's slot count (capped by the device).
        time_limit_s: a batch's hard time limit; the engine drops a batch at the soft one.
    """

    max_attempts: int
    retry_backoff_s: float
    db_retry_s: float
    temperature: float
    continuous: bool = False
    batch_size: int = 4
    time_limit_s: int = 1800

    @property
    def soft_time_limit_s(self) -> int:
        """When the engine drops a batch that has not finished (Celery's soft limit)."""
        return soft_time_limit_s(self.time_limit_s)

    @property
    def retry_policy(self) -> RetryPolicy:
        """A batch's retries: any failure is retried after a backoff, the attempts counted in
        SQL capped by :attr:`max_attempts` (``pipeline.ledger.outcome``)."""
        return RetryPolicy(max_attempts=self.max_attempts, first_delay_s=self.retry_backoff_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        """The worker's part of ``settings``."""
        return cls(max_attempts=settings.max_attempts, retry_backoff_s=settings.retry_backoff_s,
                   db_retry_s=settings.db_retry_s, temperature=settings.temperature,
                   continuous=settings.continuous_batching and settings.backend == "llama",
                   batch_size=settings.batch_size, time_limit_s=settings.task_time_limit_s)

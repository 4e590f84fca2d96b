"""Python API for services: submit prompts, follow a job, fetch its results.

An entry point like the CLI: it hands the workers' tokenizer to the submit-time limits.
``pipeline.client.Client``, its published path, is this class.

Example:
    >>> from pipeline.settings import load_settings
    >>> with Client(load_settings()) as client:  # doctest: +SKIP
    ...     job_id = client.submit(["What is a joule?", {"prompt": "Define PUE.", "id": "q2"}])
    ...     client.wait(job_id, timeout_s=600)
    ...     rows = client.results(job_id)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis

from pipeline.broker.queue import connect
from pipeline.errors import WaitTimeoutError
from pipeline.intake.parse import validate_records
from pipeline.intake.submit import JobOptions, submit_file, submit_job
from pipeline.ledger.db import make_engine
from pipeline.ledger.jobs import JobStatusView, cancel, iter_results, job_status
from pipeline.ledger.rows import ExportRow
from pipeline.settings import Settings

if TYPE_CHECKING:
    from workers.backends.llama.tokenizer import ModelTokenizer


class Client:
    """Submit work to a running ecobatch cluster and read it back.

    The SQL engine is opened at construction; Redis and the model's vocabulary only when a
    submission needs them, so a client that only reads status and results needs no broker URL.
    """

    def __init__(self, settings: Settings) -> None:
        """Open the SQL ledger named by ``settings.database_url``.

        Raises:
            ServiceError: the database cannot be opened.
        """
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self._redis: redis.Redis | None = None

    @property
    def redis(self) -> redis.Redis:
        """The broker client, connected on first use.

        Raises:
            ConfigError: no Redis URL is configured.
            ServiceError: Redis cannot be reached.
        """
        if self._redis is None:
            self._redis = connect(self.settings.require_redis_url())
        return self._redis

    @cached_property
    def tokenizer(self) -> ModelTokenizer:
        """The workers' tokenizer of ``settings.model``, read when a prompt must be counted."""
        from workers.backends.llama.tokenizer import ModelTokenizer  # llama.cpp: only if used

        return ModelTokenizer(self.settings.model)

    def submit(self, prompts: Iterable[str | Mapping[str, Any]], *, max_tokens: int | None = None,
               strategy: str | None = None, **routing: Any) -> str:
        """Validate and submit prompts; return the job id.

        Args:
            prompts: strings (prompt text) or JSONL-style records (``prompt`` or ``messages``,
                optional ``id``, ``max_tokens``, ``metadata``).
            max_tokens: default new-token limit in tokens; None uses the settings.
            strategy: routing strategy; None uses the settings.
            **routing: ``weights`` (dict over carbon, latency, energy, water, cost),
                ``slo_s`` (latency target, seconds), ``deadline`` (timezone-aware datetime)
                and ``deferred`` (True holds the job for the lowest-carbon window before
                ``deadline``), as for :class:`pipeline.intake.submit.JobOptions`.

        Raises:
            InputError: a record is invalid (``line`` is its 1-based number); nothing is sent.
            ServiceError: SQL or Redis failed.
        """
        records = validate_records(prompts)
        options = JobOptions(max_tokens=max_tokens, strategy=strategy, **routing)
        return submit_job(self, records, source="client", options=options).job_id

    def submit_file(self, path: str | Path, *, fmt: str | None = None,
                    max_tokens: int | None = None, strategy: str | None = None,
                    **routing: Any) -> str:
        """Validate and submit a JSONL, CSV or text file; return the job id.

        ``routing`` takes the same keywords as :meth:`submit`.

        Raises:
            InputError: the file is unreadable or a line is invalid; nothing is sent.
            ServiceError: SQL or Redis failed.
        """
        options = JobOptions(max_tokens=max_tokens, strategy=strategy, **routing)
        return submit_file(self, path, fmt=fmt, options=options).job_id

    def status(self, job_id: str) -> JobStatusView:
        """Counts, progress and sustainability totals of a job.

        Raises:
            NotFoundError: unknown job id.
        """
        return job_status(self.engine, job_id)

    def cancel(self, job_id: str) -> JobStatusView:
        """Cancel a job: none of its prompts not yet started will start (they end dead, as
        cancelled); a batch already in flight finishes. Harmless to repeat.

        Raises:
            NotFoundError: unknown job id.
        """
        return cancel(self.engine, job_id)

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.2) -> JobStatusView:
        """Poll until every prompt of the job has a result or is dead.

        Args:
            job_id: the job.
            timeout_s: longest wait, in seconds.
            poll_s: pause between polls, in seconds.

        Raises:
            WaitTimeoutError: the job is not finished after ``timeout_s``.
            NotFoundError: unknown job id.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.status(job_id)
            if view.finished:
                return view
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise WaitTimeoutError(
                    f"job {job_id} not finished after {timeout_s:g} s "
                    f"({view.n_results}/{view.total} answered, {view.n_failed} failed)"
                )
            time.sleep(min(poll_s, left_s))

    def results(self, job_id: str) -> list[ExportRow]:
        """All export rows of a job so far, in input order.

        Raises:
            NotFoundError: unknown job id.
        """
        return list(iter_results(self.engine, job_id))

    def close(self) -> None:
        """Release the database pool, the Redis connection and the vocabulary."""
        self.engine.dispose()
        if "tokenizer" in self.__dict__:
            self.tokenizer.close()
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

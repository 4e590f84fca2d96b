"""Restore the Redis pending list from SQL, the record of truth.

Redis may lose its contents (a restart without persistence, a failed push after a commit);
every prompt that is still ``pending`` in SQL for a queued or running job can be enqueued
again from its row.
"""

from __future__ import annotations

import time
from typing import cast

import redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.broker.queue import PENDING_KEY, PromptRef, push_refs
from pipeline.errors import ServiceError
from pipeline.ledger.models import Job, JobStatus, Prompt, PromptStatus, table_of

REDIS_SCAN_CHUNK = 10_000


def reconcile(engine: Engine, redis_client: redis.Redis, *, job_id: str | None = None,
              key: str = PENDING_KEY) -> int:
    """Re-enqueue pending prompts of queued or running jobs that are missing from Redis.

    Deferred jobs are left to the planner. A prompt the router has popped but not yet marked
    ``batched`` looks missing too and is enqueued again, so the router must skip prompts that
    are no longer pending when it batches them.

    Args:
        engine: SQL ledger.
        redis_client: broker client.
        job_id: only this job; None reconciles every job.
        key: the Redis list of pending references.

    Returns:
        How many references were pushed.

    Raises:
        ServiceError: SQL or Redis could not be read or written.
    """
    queued = _queued_prompt_ids(redis_client, key)
    now_s = time.time()
    refs = [PromptRef(pid, jid, now_s, tokens, max_tokens)
            for pid, jid, tokens, max_tokens in _pending_prompts(engine, job_id)
            if pid not in queued]
    if refs:
        push_refs(redis_client, refs, key)
    return len(refs)


def _queued_prompt_ids(redis_client: redis.Redis, key: str) -> set[str]:
    ids: set[str] = set()
    start = 0
    try:
        while True:
            chunk = cast(list[str], redis_client.lrange(key, start, start + REDIS_SCAN_CHUNK - 1))
            ids.update(PromptRef.decode(raw).prompt_id for raw in chunk)
            if len(chunk) < REDIS_SCAN_CHUNK:
                return ids
            start += REDIS_SCAN_CHUNK
    except RedisError as e:
        raise ServiceError(f"cannot read the pending list from Redis: {e}") from e


def _pending_prompts(engine: Engine, job_id: str | None) -> list[tuple[str, str, int, int]]:
    prompt, job = table_of(Prompt), table_of(Job)
    stmt = (
        select(prompt.c.id, prompt.c.job_id, prompt.c.prompt_tokens_est, prompt.c.max_tokens)
        .join(job, job.c.id == prompt.c.job_id)
        .where(prompt.c.status == PromptStatus.PENDING,
               job.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .order_by(job.c.created_at, prompt.c.position)
    )
    if job_id is not None:
        stmt = stmt.where(prompt.c.job_id == job_id)
    try:
        with engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(stmt)]
    except SQLAlchemyError as e:
        raise ServiceError(f"cannot read pending prompts from the database: {e}") from e

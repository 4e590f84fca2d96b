"""Cutting the Redis pending list into batches.

The decision is pure (:func:`plan_take` looks at a peeked head of the list and the clock); the
I/O around it (:func:`take_refs`) peeks many references in one round trip and pops exactly what
was decided in a second one; :func:`cut_batches` then cuts the popped references into batches.

Batches are cut at :func:`effective_batch_size`, the smaller of the configured batch size and the
largest ``max_batch_size`` in the registry, so every batch fits at least one device and the
router never has to split a batch after cutting it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from pipeline.broker.queue import PENDING_KEY, PromptRef
from pipeline.errors import ConfigError, ServiceError
from pipeline.fleet.devices import Registry

log = logging.getLogger(__name__)

PEEK_REFS = 1000
"""References read per Redis round trip (rounded down to whole batches)."""


@dataclass(frozen=True, slots=True)
class TakePlan:
    """How many references to take from the head of the pending list, and why.

    Attributes:
        n_refs: references to pop (whole batches, plus a due partial batch).
        due_partial: the last batch taken is a partial one flushed after ``max_wait_s``.
        waiting_partial: references left in place because their partial batch is not yet due.
    """

    n_refs: int
    due_partial: bool = False
    waiting_partial: int = 0


def effective_batch_size(batch_size: int, registry: Registry) -> int:
    """Batch size the router cuts at: ``batch_size`` (the setting) capped by the largest device.

    Raises:
        ConfigError: the registry holds no device.
    """
    if not registry.devices:
        raise ConfigError("the device registry holds no device")
    return min(batch_size, max(d.max_batch_size for d in registry.devices))


def peek_size(batch_size: int, peek_refs_max: int = PEEK_REFS) -> int:
    """Largest multiple of ``batch_size`` not above ``peek_refs_max`` (at least one batch)."""
    return max(batch_size, peek_refs_max - peek_refs_max % batch_size)


def plan_take(
    refs: Sequence[PromptRef],
    batch_size: int,
    max_wait_s: float,
    now_unix_s: float,
    *,
    list_end_seen: bool,
) -> TakePlan:
    """Decide how many references to take from the peeked head of the pending list.

    Whole batches are always taken. The remainder is a partial batch; it is flushed only when
    the list has no more references behind it (``list_end_seen``) and its oldest reference has
    waited at least ``max_wait_s``, otherwise it stays in place for later references to fill.

    Args:
        refs: the head of the pending list, in list order.
        batch_size: prompts per batch.
        max_wait_s: longest wait of a prompt before a partial batch is flushed.
        now_unix_s: the current time, Unix seconds.
        list_end_seen: ``refs`` is the whole list, not only its head.
    """
    n_full = len(refs) - len(refs) % batch_size
    rest = refs[n_full:]
    if not rest:
        return TakePlan(n_full)
    oldest_s = min(r.enqueued_unix_s for r in rest)
    if list_end_seen and now_unix_s - oldest_s >= max_wait_s:
        return TakePlan(len(refs), due_partial=True)
    return TakePlan(n_full, waiting_partial=len(rest))


def cut_batches(refs: Sequence[PromptRef], batch_size: int) -> list[list[PromptRef]]:
    """Cut references into consecutive batches of ``batch_size`` (the last may be shorter)."""
    return [list(refs[i : i + batch_size]) for i in range(0, len(refs), batch_size)]


def take_refs(
    client: redis.Redis,
    batch_size: int,
    max_wait_s: float,
    now_unix_s: float,
    *,
    peek_refs_max: int = PEEK_REFS,
    key: str = PENDING_KEY,
) -> tuple[list[PromptRef], TakePlan]:
    """Pop the references that :func:`plan_take` decides to take from the pending list.

    Two round trips whatever the count: one peek and one atomic pop. Only the router (which
    holds the router lock) removes from the head of the list, so the popped references should
    be the peeked ones; the popped ones are returned all the same (decoded again only if they
    differ).

    Raises:
        ServiceError: Redis cannot be reached.
    """
    limit = peek_size(batch_size, peek_refs_max)
    try:
        head, head_raw, n_raw = _peek_clean(client, limit, key)
        plan = plan_take(head, batch_size, max_wait_s, now_unix_s, list_end_seen=n_raw < limit)
        popped_raw = _pop_raw(client, plan.n_refs, key) if plan.n_refs else []
    except RedisError as e:
        raise ServiceError(f"cannot read the pending list from Redis: {e}") from e
    if popped_raw == head_raw[: plan.n_refs]:
        return head[: plan.n_refs], plan
    log.warning("pending list head changed between peek and pop; another consumer?")
    try:
        return [PromptRef.decode(r) for r in popped_raw], plan
    except (ValueError, KeyError, TypeError) as e:
        raise ServiceError(f"undecodable reference popped from {key!r}: {e}") from e


def _pop_raw(client: redis.Redis, n: int, key: str) -> list[str]:
    pipe = client.pipeline(transaction=True)
    pipe.lrange(key, 0, n - 1)
    pipe.ltrim(key, n, -1)
    raw, _ = pipe.execute()
    return list(raw)


def _peek_clean(
    client: redis.Redis, limit: int, key: str
) -> tuple[list[PromptRef], list[str], int]:
    """Peek the head, deleting references that do not decode.

    Returns:
        The decoded references, their raw strings, and how many raw entries were read.

    One bad reference would otherwise stop the router for good; its prompt is still pending in
    SQL, where a reconcile can re-enqueue it.
    """
    raw: list[str] = client.lrange(key, 0, limit - 1)  # type: ignore[assignment]
    refs: list[PromptRef] = []
    good: list[str] = []
    bad: list[str] = []
    for r in raw:
        try:
            refs.append(PromptRef.decode(r))
            good.append(r)
        except (ValueError, KeyError, TypeError):
            bad.append(r)
    if bad:
        for r in set(bad):
            client.lrem(key, 0, r)
        log.warning("dropped %d undecodable references from %s", len(bad), key)
    return refs, good, len(raw)


def return_refs(client: redis.Redis, refs: Sequence[PromptRef], key: str = PENDING_KEY) -> None:
    """Put popped references back at the head of the pending list, in their original order.

    Used when routing fails after the pop, so that no prompt is left only in SQL.

    Raises:
        ServiceError: Redis cannot be reached.
    """
    if not refs:
        return
    try:
        # LPUSH prepends one by one, so push in reverse to restore the original order.
        client.lpush(key, *[r.encode() for r in reversed(refs)])
    except RedisError as e:
        raise ServiceError(f"cannot return {len(refs)} references to Redis: {e}") from e

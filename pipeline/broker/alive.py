"""Liveness in Redis: each device worker keeps two keys alive; the router reads them.

``ecobatch:alive:<device>`` (time to live ``heartbeat_ttl_s``) says that a worker serves the
device; a device whose key is gone has no live consumer: the router stops choosing it and moves
the batches still queued for it. ``ecobatch:worker:<identity>`` says that one worker process is
alive; a batch ``running`` under an identity whose key is gone was lost with its worker (a
``kill -9`` of the main process) and is taken back (``router.recovery.lostwork``). The identity,
``host:pid:boot``, names the worker's main process and a random id drawn when it starts, so a
restarted worker (even with a reused pid) never passes for the old one; it is also the value of
the device key. Both keys are refreshed every third of the time to live by the worker's main
process (``workers.service.heartbeat``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterable

import redis
from redis.exceptions import RedisError

from pipeline.errors import ServiceError

ALIVE_PREFIX = "ecobatch:alive:"
WORKER_PREFIX = "ecobatch:worker:"


def alive_key(device: str) -> str:
    """Redis key of ``device``'s heartbeat."""
    return ALIVE_PREFIX + device


def worker_key(identity: str) -> str:
    """Redis key of one worker process's heartbeat."""
    return WORKER_PREFIX + identity


def worker_identity() -> str:
    """``host:pid:boot`` of this process: call it in the worker's main process at start."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def beat(client: redis.Redis, device: str, ttl_s: float, identity: str | None = None) -> None:
    """Say that a worker of ``device`` (the one named ``identity``) is alive for ``ttl_s``."""
    px = int(ttl_s * 1000)
    with client.pipeline(transaction=False) as pipe:
        pipe.set(alive_key(device), identity or f"{socket.gethostname()}:{os.getpid()}", px=px)
        if identity is not None:
            pipe.set(worker_key(identity), device, px=px)
        pipe.execute()


def stop_beating(client: redis.Redis, device: str) -> None:
    """Withdraw ``device``'s heartbeat at once (warm shutdown)."""
    client.delete(alive_key(device))


def hold_identity(client: redis.Redis, identity: str, device: str, hold_s: float) -> None:
    """Keep ``identity`` alive for ``hold_s`` without further beats: a warm shutdown lets the
    batch in flight finish (at most a task time limit) while the timer no longer runs."""
    client.set(worker_key(identity), device, px=int(hold_s * 1000))


def alive_devices(client: redis.Redis, devices: Iterable[str]) -> set[str]:
    """Names among ``devices`` whose heartbeat has not expired.

    Raises:
        ServiceError: Redis could not be read.
    """
    return _present(client, list(devices), alive_key, "worker heartbeats")


def live_workers(client: redis.Redis, identities: Iterable[str]) -> set[str]:
    """Identities among ``identities`` whose worker heartbeat has not expired.

    Raises:
        ServiceError: Redis could not be read.
    """
    return _present(client, list(identities), worker_key, "worker identities")


def _present(client: redis.Redis, names: list[str], key: Callable[[str], str],
             what: str) -> set[str]:
    if not names:
        return set()
    try:
        values = client.mget([key(n) for n in names])
    except RedisError as e:
        raise ServiceError(f"cannot read {what} from Redis: {e}") from e
    return {n for n, v in zip(names, values, strict=True) if v is not None}

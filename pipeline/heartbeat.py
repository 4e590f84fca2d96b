"""Device liveness: each device worker keeps a Redis key alive; the router reads them.

A key ``ecobatch:alive:<device>`` with a time to live of ``heartbeat_ttl_s`` is refreshed every
third of that by the worker's main process (``workers.heartbeat``) and deleted at a warm
shutdown. A device whose key is gone has no live consumer: the router stops choosing it and
moves the batches still queued for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

import redis
from redis.exceptions import RedisError

from pipeline.errors import ServiceError

ALIVE_PREFIX = "ecobatch:alive:"


def alive_key(device: str) -> str:
    """Redis key of ``device``'s heartbeat."""
    return ALIVE_PREFIX + device


def beat(client: redis.Redis, device: str, ttl_s: float) -> None:
    """Say that a worker of ``device`` is alive for the next ``ttl_s`` seconds."""
    client.set(alive_key(device), f"{socket.gethostname()}:{os.getpid()}", px=int(ttl_s * 1000))


def stop_beating(client: redis.Redis, device: str) -> None:
    """Withdraw ``device``'s heartbeat at once (warm shutdown)."""
    client.delete(alive_key(device))


def alive_devices(client: redis.Redis, devices: Iterable[str]) -> set[str]:
    """Names among ``devices`` whose heartbeat has not expired.

    Raises:
        ServiceError: Redis could not be read.
    """
    names = list(devices)
    if not names:
        return set()
    try:
        values = client.mget([alive_key(n) for n in names])
    except RedisError as e:
        raise ServiceError(f"cannot read worker heartbeats from Redis: {e}") from e
    return {n for n, v in zip(names, values, strict=True) if v is not None}

"""Readiness probes: does the broker answer, does the ledger answer?

Each probe opens its own short-lived connection with a timeout, so a probe never holds a
connection a forked pool child could inherit, and a dead service answers in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.broker.queue import redact_url, redis_py_url, secure_url
from pipeline.ledger.db import normalise_url
from pipeline.settings import Settings

PROBE_TIMEOUT_S = 3.0


def broker_problem(url: str) -> str | None:
    """Why the broker at ``url`` does not answer a PING; None when it does."""
    client = redis.Redis.from_url(redis_py_url(secure_url(url)), socket_timeout=PROBE_TIMEOUT_S,
                                  socket_connect_timeout=PROBE_TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as e:
        return f"cannot reach Redis at {redact_url(url)}: {e}"
    finally:
        client.close()
    return None


def ledger_probe(database_url: str) -> Callable[[], str | None]:
    """A probe answering why the ledger does not answer ``SELECT 1``; None when it does."""
    url = normalise_url(database_url)
    args = {"connect_timeout": int(PROBE_TIMEOUT_S)} if url.startswith("postgresql") else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)

    def problem() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            return f"cannot reach the ledger: {type(e).__name__}: {str(e).splitlines()[0]}"
        return None

    return problem


def readiness(settings: Settings) -> Callable[[], dict[str, str]]:
    """A check returning ``{"broker": why, "ledger": why}`` for what does not answer; empty
    when the process is ready."""
    broker_url = settings.require_redis_url()
    ledger = ledger_probe(settings.database_url)

    def problems() -> dict[str, str]:
        found = {"broker": broker_problem(broker_url), "ledger": ledger()}
        return {k: v for k, v in found.items() if v is not None}

    return problems

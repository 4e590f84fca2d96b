"""The Redis master killed mid-job under Sentinel: a replica is promoted, router and worker
follow it through the one ``sentinel://`` URL, and every prompt is answered once.

Real redis-server processes (master, replica, sentinel on free loopback ports), real router and
worker processes, the fault-injecting echo backend (tests/faultbackend.py) and SQLite.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.broker.queue import PENDING_KEY, connect
from pipeline.errors import ServiceError
from pipeline.ledger.models import Batch, BatchStatus, Prompt, Result
from tests.cluster import energy_counted_once, fault_env, running_cluster, wait_until
from tests.conftest import service_missing
from tests.servers import SentinelCluster, server_binary

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 180.0  # generous: two cores shared by three Redis, a router, a worker and the test
PROMPTS = 24


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> SentinelCluster:
    """A started master, replica and sentinel; skipped locally without a redis-server binary."""
    try:
        server_binary()
    except ServiceError as e:
        service_missing("redis-server", e)
    return SentinelCluster(tmp_path / "redis")


def _answers_per_prompt(engine: Engine, job_id: str) -> dict[str, int]:
    with Session(engine) as s:
        prompts = s.execute(select(Prompt.id).where(Prompt.job_id == job_id)).scalars().all()
        rows = dict(s.execute(select(Result.prompt_id, func.count()).where(
            Result.job_id == job_id).group_by(Result.prompt_id)).all())
    return {p: int(rows.get(p, 0)) for p in prompts}


def _batches(engine: Engine) -> list[Batch]:
    with Session(engine) as s:
        return list(s.execute(select(Batch)).scalars().all())


def test_master_killed_mid_job_the_replica_takes_over_and_every_prompt_is_answered_once(
    sentinel_cluster: SentinelCluster, sqlite_url: str, tmp_path: Path
) -> None:
    with sentinel_cluster as ha:
        env = fault_env(ha.url, sqlite_url, ECOBATCH_BATCH_SIZE="2")
        with running_cluster(env, tmp_path / "logs") as c:
            job_id = c.client.submit([f"[sleep 0.5] question {i}" for i in range(PROMPTS)])
            answered = lambda: sum(_answers_per_prompt(c.client.engine, job_id).values())  # noqa: E731
            wait_until("some answers", lambda: answered() >= 4, WAIT_S, poll_s=0.2)
            old_port, before = ha.master_port(), answered()
            assert old_port == ha.master.port
            t0 = time.monotonic()
            ha.master.stop(signal.SIGKILL)
            wait_until("a replica promoted", lambda: ha.master_port() == ha.replica.port,
                       WAIT_S, poll_s=0.1)
            failover_s = time.monotonic() - t0
            assert before < PROMPTS, "the job ended before the master was killed"
            c.client.wait(job_id, timeout_s=WAIT_S)
            finished_s = time.monotonic() - t0
            c.children.check_alive()  # router and worker rode the failover out
    per_prompt = _answers_per_prompt(c.client.engine, job_id)
    batches = _batches(c.client.engine)
    print(f"\nfailover: promoted in {failover_s:.1f} s; {before}/{PROMPTS} answered before the "
          f"kill; job done {finished_s:.1f} s after it; {len(batches)} batches, "
          f"{sum(b.attempts > 1 for b in batches)} run again")
    assert len(per_prompt) == PROMPTS
    assert set(per_prompt.values()) == {1}, "a prompt lost or answered twice"
    assert not [b.id for b in batches if b.status == BatchStatus.DEAD]
    energy_counted_once(c.client.engine)


def test_one_client_follows_the_promoted_replica(sentinel_cluster: SentinelCluster) -> None:
    with sentinel_cluster as ha:
        client = connect(ha.url)
        client.rpush(PENDING_KEY, "a")
        client.wait(1, 5000)  # the replica has it before the master dies
        ha.master.stop(signal.SIGKILL)
        wait_until("a replica promoted", lambda: ha.master_port() == ha.replica.port,
                   WAIT_S, poll_s=0.1)
        wait_until("the client to reach the new master", lambda: _pushes(client), WAIT_S)
        assert client.lrange(PENDING_KEY, 0, -1)[0] == "a"


def _pushes(client: redis.Redis) -> bool:
    try:
        client.rpush(PENDING_KEY, "b")
    except redis.RedisError:
        return False
    return True

"""A continuous-batching worker on real processes: llama.cpp on the bundled SmolLM2, real Redis,
router and worker, SQLite.

The worker holds two batches at once (Celery's threads pool) and decodes them in one engine;
these tests prove what its README section promises: a worker killed with several batches in
hand loses none of them, each one's attempt counted; a batch that outlives its time limit is
dropped alone while the others are answered; greedy answers are those of a batch-at-a-time
worker; the batches' energies are their own shares of what was metered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlmodel import Session

from pipeline.client import Client
from pipeline.ledger.models import Batch, BatchStatus, Result
from tests.cluster import (
    cluster_env,
    energy_counted_once,
    kill_all,
    ledger_counts,
    running_cluster,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 180.0
QUESTIONS = ("Name three colours.", "Why is the sky blue?", "Count from 1 to 20.",
             "What is the capital of France?", "Write a haiku about rain.", "List four fruits.")


def _records(n: int, max_tokens: list[int]) -> list[dict[str, object]]:
    return [{"prompt": QUESTIONS[i % len(QUESTIONS)], "max_tokens": max_tokens[i % len(max_tokens)]}
            for i in range(n)]


def _running(client: Client) -> list[Batch]:
    with Session(client.engine) as s:
        return list(s.execute(select(Batch).where(Batch.status == BatchStatus.RUNNING)).scalars())


def _answers(client: Client, job_id: str) -> dict[str, str]:
    with Session(client.engine) as s:
        rows = s.execute(select(Result).where(Result.job_id == job_id)).scalars()
        return {r.prompt_id: r.output for r in rows}


def test_killed_worker_loses_none_of_the_batches_it_held(
        redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_BATCH_SIZE="2",
                      ECOBATCH_BATCHES_IN_FLIGHT="2", ECOBATCH_HEARTBEAT_TTL_S="6")
    with running_cluster(env, tmp_path / "logs") as c:
        client = c.client
        job_id = client.submit(_records(8, [96, 64]))
        seen: list[list[Batch]] = []

        def two_running() -> bool:
            running = _running(client)
            if len(running) >= 2:
                seen.append(running)
            return bool(seen)

        wait_until("two batches running in the one worker", two_running, WAIT_S)
        held = seen[0]
        kill_all(c.workers[0])
        start_worker(c.children, "worker2")
        client.wait(job_id, timeout_s=WAIT_S)
    assert ledger_counts(client.engine, job_id) == {"rows": 8, "distinct": 8, "prompts": 8}
    energy_counted_once(client.engine)
    with Session(client.engine) as s:
        redone = [s.get(Batch, b.id) for b in held]
    assert len(redone) >= 2
    for batch in redone:  # each held batch redelivered, its lost attempt counted
        assert batch is not None and batch.status == BatchStatus.DONE and batch.attempts == 2


def test_a_runaway_batch_is_dropped_alone_and_the_others_match_batch_at_a_time(
        redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    runaway = {"prompt": "Tell me a very long story about a dragon.", "max_tokens": 900}
    records = _records(6, [24, 8, 40])
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_BATCH_SIZE="2",
                      ECOBATCH_N_CTX_PER_SEQ="1024", ECOBATCH_MAX_ATTEMPTS="2",
                      ECOBATCH_TASK_TIME_LIMIT_S="8")  # soft limit 7 s: the runaway needs more
    with running_cluster(env, tmp_path / "logs") as c:
        client = c.client
        slow_id = client.submit([runaway, runaway])  # one whole batch of its own
        job_id = client.submit(records)
        view = client.wait(job_id, timeout_s=WAIT_S)
        slow = client.wait(slow_id, timeout_s=WAIT_S)
    assert (view.n_results, view.n_failed) == (6, 0), client.status(job_id).errors
    assert (slow.n_results, slow.n_failed) == (0, 2)
    with Session(client.engine) as s:
        dead = list(s.execute(select(Batch).where(Batch.status == BatchStatus.DEAD)).scalars())
    assert len(dead) == 1 and dead[0].error and "time limit" in dead[0].error
    assert "gave up after 2 attempts" in dead[0].error
    continuous = _answers(client, job_id)
    redis.Redis.from_url(redis_url).flushdb()

    one_at_a_time = cluster_env(redis_url, sqlite_url.replace(".db", "-static.db"),
                                ECOBATCH_BATCH_SIZE="2", ECOBATCH_CONTINUOUS_BATCHING="false")
    with running_cluster(one_at_a_time, tmp_path / "logs2") as c:
        again = c.client.submit(records)
        c.client.wait(again, timeout_s=WAIT_S)
        static = _answers(c.client, again)
    assert sorted(continuous.values()) == sorted(static.values())

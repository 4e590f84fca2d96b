"""A worker's main process killed mid-batch, with the default visibility timeout (an hour):
the router takes the batch back once its heartbeat is gone (a 6 s heartbeat time to live
instead of the default 15 s, so the test waits 12 s rather than 30 for it), and the old
delivery, when it comes back, changes nothing. Real Redis, PostgreSQL, router and worker processes; inference
is the fault-injecting echo backend (tests/faultbackend.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlmodel import Session

from pipeline.ledger.models import Batch, BatchStatus
from tests.cluster import (
    energy_counted_once,
    fault_env,
    kill_all,
    ledger_counts,
    running_cluster,
    start_worker,
    wait_for_running_batch,
    wait_until,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]
RECOVERY_DEADLINE_S = 60.0  # the bound for the default HEARTBEAT_TTL_S (15 s)
HEARTBEAT_TTL_S = 6  # the take-back comes within about twice this, plus the rerun
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport keys


def _bring_back_unacked(client: redis.Redis) -> list[str]:
    """Make every unacknowledged message look an hour old, so the next sweep of kombu's
    Redis transport gives it back: what the visibility timeout does after an hour."""
    tags = [t.decode() for t in client.zrange(UNACKED_INDEX, 0, -1)]
    if tags:
        client.zadd(UNACKED_INDEX, dict.fromkeys(tags, 0))
    return tags


def test_killed_main_process_batch_is_taken_back_and_answered_once(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, pg_url, ECOBATCH_VISIBILITY_TIMEOUT_S="3600",
                    ECOBATCH_TASK_TIME_LIMIT_S="1800",  # the defaults
                    ECOBATCH_HEARTBEAT_TTL_S=str(HEARTBEAT_TTL_S))
    broker = redis.Redis.from_url(redis_url)
    with running_cluster(env, tmp_path / "logs") as c:
        client = c.client
        job_id = client.submit([f"{'[sleep 3] ' if i == 0 else ''}question {i}"
                                for i in range(8)])
        victim = wait_for_running_batch(client.engine, 120)
        kill_all(c.workers[0])  # main and pool process at once, as a crash does
        killed_at = time.monotonic()
        start_worker(c.children, "worker2")
        client.wait(job_id, timeout_s=RECOVERY_DEADLINE_S)
        recovery_s = time.monotonic() - killed_at
        counts = ledger_counts(client.engine, job_id)
        old = _bring_back_unacked(broker)
        assert old, "the killed worker's delivery should still be unacknowledged"
        wait_until("the old delivery to come back and be acknowledged",
                   lambda: not broker.hlen(UNACKED) and not broker.llen("device.cpu"), 120,
                   poll_s=0.2)
        router_log = c.router.log_tail(200_000)
    print(f"recovered {recovery_s:.1f} s after the kill")
    assert counts == {"rows": 8, "distinct": 8, "prompts": 8}
    assert ledger_counts(client.engine, job_id) == counts  # the old delivery wrote nothing
    energy_counted_once(client.engine)
    with Session(client.engine) as s:
        redone = s.get(Batch, victim.id)
    assert redone is not None and redone.status == BatchStatus.DONE
    assert redone.attempts == 2  # the lost attempt, and the one that finished
    assert "worker lost, redelivering 1 batches" in router_log

"""Batches of a worker that died while running them are taken back once, on SQLite and
PostgreSQL with a real Redis; ``status`` and ``reconcile`` say so."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine

from pipeline.app.cli.jobs import reconcile_pending, status
from pipeline.broker.alive import beat, worker_key
from pipeline.ledger.batches import claim_batch, complete_batch
from pipeline.ledger.db import session_scope
from pipeline.ledger.jobs import job_status
from pipeline.ledger.models import Batch, BatchStatus, Job, Prompt, PromptStatus
from router.live.route import Dispatch
from router.recovery.lostwork import Claim, LostWorkerWatch, take_back, take_back_lost
from tests.cluster import wait_until

pytestmark = pytest.mark.service
LOST, LIVE = "hostA:111:0dead0", "hostB:222:a11ve0"


def _seed(engine: Engine, batches: dict[str, int]) -> None:
    """Job j1 with a dispatched batch of ``n`` prompts per batch id."""
    with session_scope(engine) as s:
        s.add(Job(id="j1", n_prompts=sum(batches.values())))
        position = 0
        for batch_id, n in batches.items():
            s.add(Batch(id=batch_id, device="cpu", size=n))
            s.flush()
            for _ in range(n):
                s.add(Prompt(id=f"j1:{position}", job_id="j1", position=position,
                             external_id=str(position), prompt="q", batch_id=batch_id,
                             status=PromptStatus.BATCHED))
                position += 1


def _batch(engine: Engine, batch_id: str) -> Batch:
    with session_scope(engine) as s:
        found = s.get(Batch, batch_id)
        assert found is not None
        return found


class Sent:
    """A publisher that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.dispatches: list[Dispatch] = []

    def __call__(self, dispatches: Sequence[Dispatch]) -> None:
        self.dispatches.extend(dispatches)


def test_a_batch_of_a_lost_worker_is_taken_back_once(engine: Engine,
                                                     rclient: redis.Redis) -> None:
    _seed(engine, {"b1": 3, "b2": 2})
    beat(rclient, "cpu", 30.0, LIVE)
    claim_batch(engine, "b1", 3, LOST)  # its worker is killed: no heartbeat under LOST
    claim_batch(engine, "b2", 3, LIVE)
    sent, watch = Sent(), LostWorkerWatch(confirm_s=0.2)
    assert take_back_lost(engine, rclient, sent, watch) == 0  # first seen missing: not yet
    wait_until("b1 taken back", lambda: take_back_lost(engine, rclient, sent, watch) > 0, 30)
    assert sent.dispatches == [("b1", "device.cpu")]
    lost = _batch(engine, "b1")
    assert (lost.status, lost.attempts, lost.worker_id) == (BatchStatus.DISPATCHED, 1, LOST)
    assert lost.error is not None and f"worker {LOST} was lost" in lost.error
    assert _batch(engine, "b2").status == BatchStatus.RUNNING  # its worker is alive
    assert job_status(engine, "j1").redelivering == 3
    # A second router, or the same claim seen stale: the conditional update finds nothing.
    assert take_back(engine, sent, [Claim("b1", LOST, "cpu", 1)]) == 0
    assert take_back_lost(engine, rclient, sent, LostWorkerWatch(confirm_s=0.0)) == 0
    assert len(sent.dispatches) == 1
    again = claim_batch(engine, "b1", 3, LIVE)  # the republished message: runs at once
    assert not again.lost_before and again.batch.attempts == 2
    assert job_status(engine, "j1").redelivering == 0
    complete_batch(engine, "b1", {"energy_j": 1.0}, [])
    late = claim_batch(engine, "b1", 3, LIVE)  # the old message, after the visibility timeout
    assert late.settled and late.batch.attempts == 2


def test_a_heartbeat_back_within_the_confirmation_keeps_the_batch(
    engine: Engine, rclient: redis.Redis
) -> None:
    _seed(engine, {"b1": 2})
    beat(rclient, "cpu", 30.0, LIVE)
    claim_batch(engine, "b1", 3, LIVE)
    rclient.delete(worker_key(LIVE))  # Redis restarted without its data
    watch = LostWorkerWatch(confirm_s=0.2)
    missing_since = watch.clock()
    assert take_back_lost(engine, rclient, Sent(), watch) == 0
    beat(rclient, "cpu", 30.0, LIVE)  # the worker's next beat
    wait_until("the confirmation time", lambda: watch.clock() - missing_since > 0.3, 30)
    assert take_back_lost(engine, rclient, Sent(), watch) == 0
    assert _batch(engine, "b1").status == BatchStatus.RUNNING and not watch.first_missing


def test_reconcile_takes_back_by_hand_and_status_says_so(redis_url: str, db_url: str,
                                                         engine: Engine) -> None:
    _seed(engine, {"b1": 4})
    claim_batch(engine, "b1", 3, LOST)
    env = {"ECOBATCH_HEARTBEAT_TTL_S": "0.4"}
    args = ["--redis-url", redis_url, "--database-url", db_url]
    first = CliRunner().invoke(reconcile_pending, args, env=env)
    assert first.exit_code == 0 and "worker lost, redelivering 1 batches" in first.output
    assert redis.Redis.from_url(redis_url).llen("device.cpu") == 1
    shown = CliRunner().invoke(status, ["j1", "--database-url", db_url])
    assert shown.exit_code == 0 and "worker lost, redelivering" in shown.output
    assert "4 prompts" in shown.output
    second = CliRunner().invoke(reconcile_pending, args, env=env)
    assert second.exit_code == 0 and "worker lost, redelivering 0 batches" in second.output

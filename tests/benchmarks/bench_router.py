"""Router dispatch rate with inference left out.

20k prompts wait in a real Redis (db 13 unless ECOBATCH_BENCH_REDIS_URL says otherwise), the
ledger is SQLite, and every batch is really published with Celery to the Redis broker (JSON,
queue ``device.<name>``) with no worker consuming. Prints prompts/s dispatched for three
publishers side by side: one producer per pass whose LPUSHes kombu pipelines (``producer.batch``,
kombu >= 5.7; the way the router is meant to run), one producer per pass sending each message on
its own, and one plain ``send_task`` per batch. Goal: >= 5,000 prompts/s at batch size 4.

Run: ``python -m tests.benchmarks.bench_router [--prompts N] [--batch-size B]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine, insert

from pipeline.broker.queue import PromptRef, connect, pending_count, push_refs
from pipeline.fleet.devices import Device, Registry
from pipeline.grid.trace import GridTrace
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Job, Prompt, PromptStatus
from pipeline.settings import Settings
from router.config import RouterConfig
from router.live.route import Dispatch, PublishMany, publish_each, route_once
from router.predict.nominal import NominalPredictor

INFER_TASK = "ecobatch.infer_batch"
GOAL_PROMPTS_PER_S = 5_000.0


def registry() -> Registry:
    """Three devices in two zones, like the edge testbed plus a data-centre GPU."""
    return Registry(devices=[
        Device(name="h100", kind="nvidia", zone="DE-LU", tdp_w=700.0, pue=1.12,
               max_batch_size=64, nominal_tokens_per_s=866.0),
        Device(name="ada2000", kind="nvidia", zone="GB", tdp_w=70.0, pue=1.2,
               max_batch_size=16, nominal_tokens_per_s=120.0),
        Device(name="orin", kind="jetson", zone="AU-VIC", tdp_w=25.0, pue=1.0,
               max_batch_size=8, nominal_tokens_per_s=40.0),
    ])


def seed(engine: Engine, client: redis.Redis, n: int, tag: str) -> None:
    """One job of ``n`` pending prompts in SQL, their refs in Redis (enqueued long ago)."""
    job_id = f"bench{tag}"
    t = time.time() - 60
    with engine.begin() as conn:
        conn.execute(insert(Job.__table__), [{  # type: ignore[attr-defined]
            "id": job_id, "created_at": datetime.now(UTC), "source": "bench", "n_prompts": n,
            "status": "QUEUED", "strategy": "carbon", "max_tokens": 128}])
        conn.execute(insert(Prompt.__table__), [{  # type: ignore[attr-defined]
            "id": f"{job_id}:{i}", "job_id": job_id, "position": i, "external_id": str(i),
            "prompt": f"question {i}", "max_tokens": 128, "prompt_tokens_est": 24,
            "status": PromptStatus.PENDING} for i in range(n)])
    push_refs(client, (PromptRef(f"{job_id}:{i}", job_id, t, 24, 128) for i in range(n)))


def pipelined_producer(app: Celery) -> PublishMany:
    """One producer for all the batches of a pass, its LPUSHes sent as one Redis pipeline."""

    def publish_many(dispatches: Sequence[Dispatch]) -> None:
        with app.producer_or_acquire() as producer, _batched(producer):
            for batch_id, queue in dispatches:
                app.send_task(INFER_TASK, args=[batch_id], queue=queue, producer=producer)

    return publish_many


def shared_producer(app: Celery) -> PublishMany:
    """One producer for all the batches of a pass, one LPUSH round trip per batch."""

    def publish_many(dispatches: Sequence[Dispatch]) -> None:
        with app.producer_or_acquire() as producer:
            for batch_id, queue in dispatches:
                app.send_task(INFER_TASK, args=[batch_id], queue=queue, producer=producer)

    return publish_many


def _batched(producer: Any) -> AbstractContextManager[object]:
    # kombu >= 5.7 pipelines the LPUSHes of a producer batch; older kombu sends one by one.
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else nullcontext()


def one_by_one(app: Celery) -> PublishMany:
    """A plain ``send_task`` per batch, as a ``publish(batch_id, queue)`` function would."""
    return publish_each(lambda batch_id, queue: app.send_task(INFER_TASK, args=[batch_id],
                                                              queue=queue))


def run(label: str, url: str, n: int, batch_size: int,
        make_publish: Callable[[Celery], PublishMany]) -> float:
    """Seed, route until the pending list is empty, check the broker, return prompts/s."""
    client = connect(url)
    client.flushdb()
    reg = registry()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        seed(engine, client, n, label)
        app = Celery("bench", broker=url, set_as_current=False)
        app.conf.update(task_serializer="json", accept_content=["json"])
        publish = make_publish(app)
        settings = Settings(batch_size=batch_size, strategy="carbon")
        carbon = GridTrace()  # the real hourly trace, lookups included in the timing
        predictor = NominalPredictor()
        started = time.perf_counter()
        dispatched = batches = 0
        while pending_count(client):
            report = route_once(RouterConfig.from_settings(settings), engine, client, reg, predictor,
                                carbon, publish)
            dispatched += report.prompts
            batches += report.batches
        elapsed_s = time.perf_counter() - started
        queued = sum(int(client.llen(d.queue)) for d in reg.devices)
        check_message(client, reg)
        engine.dispose()
        app.close()
    client.flushdb()
    assert dispatched == n and queued == batches, (dispatched, queued, batches)
    rate = dispatched / elapsed_s
    print(f"{label:>20}: {dispatched} prompts in {batches} batches, {elapsed_s:.2f} s, "
          f"{rate:,.0f} prompts/s")
    return rate


def check_message(client: redis.Redis, reg: Registry) -> None:
    """One published message really is a JSON ``ecobatch.infer_batch`` task for a batch id."""
    for device in reg.devices:
        raw = client.lindex(device.queue, 0)
        if raw is None:
            continue
        message = json.loads(str(raw))
        assert message["headers"]["task"] == INFER_TASK, message["headers"]
        assert message["content-type"] == "application/json", message["content-type"]
        return
    raise AssertionError("no message in any device queue")


def main() -> None:
    """Run the publishers side by side and print the rates and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    url = os.environ.get("ECOBATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    print(f"router dispatch rate: {args.prompts} prompts, batch size {args.batch_size}, "
          f"Redis {url}, SQLite ledger, Celery publish, no workers")
    piped = run("pipelined producer", url, args.prompts, args.batch_size, pipelined_producer)
    shared = run("shared producer", url, args.prompts, args.batch_size, shared_producer)
    single = run("send_task each", url, args.prompts, args.batch_size, one_by_one)
    print(f"pipelined / send_task each: {piped / single:.2f}x; "
          f"shared / send_task each: {shared / single:.2f}x")
    verdict = "meets" if piped >= GOAL_PROMPTS_PER_S else "MISSES"
    print(f"goal {GOAL_PROMPTS_PER_S:,.0f} prompts/s: {verdict} ({piped:,.0f} prompts/s, "
          f"pipelined producer)")


if __name__ == "__main__":
    main()

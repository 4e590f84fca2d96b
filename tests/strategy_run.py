"""Two real CPU workers registered in two grid zones, and the figures of one job per strategy.

Shared by ``tests/test_strategies_e2e.py`` (which asserts the orderings) and
``tests/benchmarks/bench_strategies.py`` (which prints the table quoted in the README).
The grid is pinned (``ECOBATCH_GRID_AT``) at 2024-06-03 12:00 UTC, when AU-NSW's trace reads
680 gCO2e/kWh and GB's 139, so every run sees the same grid whatever the wall clock says.
Both devices are this machine's CPU with one thread each, so they differ only in their zone.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from pipeline.app.children import ChildGroup
from pipeline.broker.alive import alive_devices
from pipeline.broker.queue import connect
from pipeline.client import Client
from pipeline.ledger.models import Batch, Job, Result
from pipeline.settings import Settings, load_settings
from tests.cluster import QuickStopGroup

GRID_AT = "2024-06-03T12:00:00+00:00"
DEVICES = ("nsw", "gb")  # registry order: greedy takes nsw, the dirtier zone
REGISTRY = """
[[device]]
name = "nsw"
kind = "cpu"
zone = "AU-NSW"
tdp_w = 65.0
pue = 1.2
max_batch_size = 4
nominal_tokens_per_s = 40.0

[[device]]
name = "gb"
kind = "cpu"
zone = "GB"
tdp_w = 65.0
pue = 1.2
max_batch_size = 4
nominal_tokens_per_s = 40.0
"""
PROMPTS = Path(__file__).parent / "fixtures" / "prompts20.jsonl"


@dataclass
class StrategyFigures:
    """What one job cost under one strategy (energy: the CPU estimate, TDP x utilisation)."""

    strategy: str
    prompts: int = 0
    by_device: dict[str, int] = field(default_factory=dict)
    energy_j: float = 0.0
    carbon_g: float = 0.0
    embodied_g: float = 0.0
    p50_s: float = 0.0
    p95_s: float = 0.0
    energy_sources: set[str] = field(default_factory=set)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (device, reason) per batch


@contextmanager
def two_zone_cluster(redis_url: str, db_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Router and two single-thread CPU workers in AU-NSW and GB, as real processes."""
    registry = tmp_path / "devices.toml"
    registry.write_text(REGISTRY)
    env = {"ECOBATCH_REDIS_URL": redis_url, "ECOBATCH_DATABASE_URL": db_url,
           "ECOBATCH_DEVICES": str(registry), "ECOBATCH_GRID_AT": GRID_AT,
           "ECOBATCH_N_THREADS": "1", "ECOBATCH_MAX_WAIT_S": "0.3",
           "ECOBATCH_BATCH_SIZE": "4"}
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        for name in DEVICES:
            children.start(f"worker-{name}", ["worker", "--device", name])
        settings = load_settings(redis_url=redis_url, database_url=db_url, devices=registry)
        _wait_alive(settings, children)
        _warm_up(settings)
        yield settings


def _wait_alive(settings: Settings, children: ChildGroup, timeout_s: float = 120.0) -> None:
    client = connect(settings.require_redis_url())
    deadline = time.monotonic() + timeout_s
    while alive_devices(client, DEVICES) != set(DEVICES):
        children.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("workers sent no heartbeat")
        time.sleep(0.2)


def _warm_up(settings: Settings) -> None:
    """One batch on each device first, so no strategy's figures carry a worker's cold start."""
    client = Client(settings)
    job_id = client.submit(forty_prompts()[:8], strategy="round_robin")
    client.wait(job_id, timeout_s=300.0)


def forty_prompts() -> list[dict[str, Any]]:
    """The 20 fixture prompts twice, 24 new tokens each."""
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    return [{**r, "id": f"{r.get('id', i)}-{k}", "max_tokens": 24}
            for k in range(2) for i, r in enumerate(rows)]


def run_strategy(settings: Settings, strategy: str, *, slo_s: float | None = None,
                 wait_s: float = 600.0) -> StrategyFigures:
    """Submit the forty prompts with ``strategy``, wait, and read the figures from SQL."""
    client = Client(settings)
    job_id = client.submit(forty_prompts(), strategy=strategy, slo_s=slo_s)
    client.wait(job_id, timeout_s=wait_s)
    return figures(client.engine, job_id, strategy if slo_s is None else f"{strategy}+slo")


def figures(engine: Engine, job_id: str, label: str) -> StrategyFigures:
    """Totals, per-device counts, end-to-end latency percentiles and decision reasons."""
    out = StrategyFigures(label)
    with engine.connect() as conn:
        created = conn.execute(select(Job.created_at).where(Job.id == job_id)).scalar_one()
        rows = conn.execute(select(Result).where(Result.job_id == job_id)).mappings().all()
        batches = conn.execute(select(Batch.device, Batch.reason).join(
            Result, Result.batch_id == Batch.id).where(Result.job_id == job_id)
            .distinct()).all()
    waits = sorted((r["created_at"] - created).total_seconds() for r in rows)
    out.prompts = len(rows)
    for r in rows:
        out.by_device[r["device"]] = out.by_device.get(r["device"], 0) + 1
        out.energy_j += r["energy_j"]
        out.carbon_g += r["carbon_g"]
        out.embodied_g += r["embodied_carbon_g"]
        out.energy_sources.add(r["energy_source"])
    out.p50_s = statistics.median(waits)
    out.p95_s = waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))]
    out.reasons = [(d, reason or "") for d, reason in batches]
    return out


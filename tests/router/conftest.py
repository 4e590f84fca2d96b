"""Helpers of the router tests: a small registry, a fixed carbon source, ledger seeding."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.broker.queue import PromptRef, push_refs
from pipeline.fleet.devices import Device, Registry
from pipeline.ledger.models import Job, Prompt


class FixedCarbon:
    """Grid conditions with one constant intensity per zone, no prices, 20 degrees C."""

    def __init__(self, by_zone: dict[str, float]) -> None:
        self.by_zone = by_zone
        self.calls = 0

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """The fixed intensity of ``zone``."""
        self.calls += 1
        return self.by_zone[zone]

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """No price data."""
        return None

    def temperature_c(self, zone: str, at: datetime) -> float:
        """A mild 20 degrees C everywhere."""
        return 20.0

    def forecast(self, zone: str, start: datetime, hours: int) -> list[tuple[datetime, float]]:
        """The same intensity every hour."""
        first = start.replace(minute=0, second=0, microsecond=0)
        return [(first + timedelta(hours=k), self.by_zone[zone]) for k in range(hours)]


def make_registry() -> Registry:
    """A fast dirty GPU, a slow clean edge box, and a CPU, in that registry order."""
    return Registry(devices=[
        Device(name="gpu", kind="nvidia", zone="DIRTY", tdp_w=300.0, pue=1.1,
               max_batch_size=32, nominal_tokens_per_s=800.0),
        Device(name="edge", kind="jetson", zone="CLEAN", tdp_w=25.0, pue=1.0,
               max_batch_size=8, nominal_tokens_per_s=60.0),
        Device(name="cpu", kind="cpu", zone="DIRTY", tdp_w=100.0, pue=1.2,
               max_batch_size=4, nominal_tokens_per_s=20.0),
    ])


@pytest.fixture
def registry() -> Registry:
    """See :func:`make_registry`."""
    return make_registry()


@pytest.fixture
def carbon() -> FixedCarbon:
    """DIRTY at 700 g/kWh, CLEAN at 20 g/kWh."""
    return FixedCarbon({"DIRTY": 700.0, "CLEAN": 20.0})


def seed_job(
    engine: Engine, client: redis.Redis | None, job_id: str, n: int, *,
    enqueued_unix_s: float, prompt_tokens: int = 20, max_tokens: int = 64,
    model: str | None = None, min_quality: float | None = None,
) -> list[PromptRef]:
    """Insert a job of ``n`` pending prompts and push their refs (when ``client`` is given);
    ``model`` and ``min_quality`` are what each prompt asks of its model."""
    refs = [PromptRef(f"{job_id}:{i}", job_id, enqueued_unix_s, prompt_tokens, max_tokens)
            for i in range(n)]
    with Session(engine) as s:
        s.add(Job(id=job_id, n_prompts=n, max_tokens=max_tokens))
        s.flush()
        s.add_all(Prompt(id=r.prompt_id, job_id=job_id, position=i, external_id=str(i),
                         prompt=f"question {i}", max_tokens=max_tokens,
                         prompt_tokens_est=prompt_tokens, model=model, min_quality=min_quality)
                  for i, r in enumerate(refs))
        s.commit()
    if client is not None:
        push_refs(client, refs)
    return refs

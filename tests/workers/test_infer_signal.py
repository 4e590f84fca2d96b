"""The device task's body (echo backend, no model) writes, on every result row, which grid
signal its carbon came from; on SQLite and PostgreSQL, with a live API served from loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from pipeline.app.context import AppContext
from pipeline.ledger.db import session_scope
from pipeline.ledger.jobs import iter_results
from pipeline.ledger.models import Batch, Job, Prompt, PromptStatus, Result
from pipeline.settings import load_settings
from tests.replay_http import Replay, replay_server
from workers.service.infer import run_batch

EM = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "carbon_api" /
                 "electricitymaps.json").read_text())


@pytest.fixture
def server() -> Iterator[tuple[str, Replay]]:
    with replay_server() as (base, replay):
        replay.set("/v3/carbon-intensity/latest", (200, EM["latest"], 0.0))
        yield base, replay


def _seed(ctx: AppContext, n: int) -> None:
    with session_scope(ctx.engine) as s:
        s.add(Job(id="j1", n_prompts=n))
        s.add(Batch(id="b1", device="cpu", size=n))
        s.flush()
        s.add_all(Prompt(id=f"j1:{i}", job_id="j1", position=i, external_id=str(i + 1),
                         prompt=f"question {i}", max_tokens=4, status=PromptStatus.BATCHED,
                         batch_id="b1") for i in range(n))


@pytest.mark.parametrize(("source", "signal"), [
    ({}, "average-lifecycle:electricitymaps-trace"),
    ({"grid_at": "2024-06-03T12:00Z"}, "average-lifecycle:electricitymaps-trace"),
    ({"carbon_api": "electricitymaps"}, "average-lifecycle:electricitymaps"),
    ({"intensity": 50.0}, "fixed:registry"),
])
def test_every_result_row_names_its_intensity_signal(
        db_url: str, tmp_path: Path, server: tuple[str, Replay], source: dict[str, object],
        signal: str) -> None:
    base, replay = server
    source = dict(source)  # parametrized values are shared by the SQLite and PostgreSQL runs
    fixed = source.pop("intensity", None)
    registry = tmp_path / "devices.toml"
    registry.write_text('[[device]]\nname = "cpu"\nkind = "cpu"\nzone = "DE-LU"\n'
                        + (f"intensity_g_per_kwh = {fixed}\n" if fixed else ""))
    settings = load_settings(database_url=db_url, devices=registry, backend="echo",
                             electricitymaps_api_key="k", electricitymaps_url=f"{base}/v3",
                             **source)
    ctx = AppContext(settings)
    _seed(ctx, 3)
    assert run_batch(ctx, "b1")["status"] == "done"
    with Session(ctx.engine) as s:
        rows = list(s.execute(select(Result)).scalars())
    assert len(rows) == 3 and {r.intensity_signal for r in rows} == {signal}
    assert {row["intensity_signal"] for row in iter_results(ctx.engine, "j1")} == {signal}
    if "carbon_api" in source:
        assert {r.intensity_g_per_kwh for r in rows} == {183.69}
        assert replay.count("/v3/carbon-intensity/latest") == 1

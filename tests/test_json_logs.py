"""ECOBATCH_LOG_FORMAT=json on real router and worker processes: every line they log is one
JSON object, and the lines about a batch name its job, batch and device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.client import Client
from pipeline.settings import load_settings
from tests.cluster import ForkedGroup, cluster_env, wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]
WAIT_S = 120.0


def _records(path: Path) -> list[dict[str, object]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AssertionError(f"{path.name} line {n} is not JSON: {line!r}") from e
    return records


def _about_batches(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if "batch_id" in r]


def test_router_and_worker_log_one_json_object_per_line(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = cluster_env(redis_url, sqlite_url, ECOBATCH_BACKEND="echo", ECOBATCH_BATCH_SIZE="2",
                      ECOBATCH_LOG_FORMAT="json")
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    with ForkedGroup(env=env, log_dir=tmp_path / "logs") as children, Client(settings) as client:
        router = children.start("router", ["router", "--loglevel", "DEBUG"])
        worker = children.start("worker", ["worker", "--device", "cpu", "--loglevel", "INFO"])
        job_id = client.submit([f"question {i}" for i in range(6)])
        client.wait(job_id, timeout_s=WAIT_S)
        wait_until("the worker's last success line", lambda: len(
            [r for r in _about_batches(_records(worker.log_path))
             if "succeeded" in str(r["message"])]) == 3, WAIT_S, poll_s=0.2)
        # read while they run: Celery prints its shutdown notice as plain text
        routed, worked = _records(router.log_path), _records(worker.log_path)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in routed + worked)
    for r in _about_batches(routed) + _about_batches(worked):
        assert r["job_id"] == job_id and r["device"] == "cpu", r
    assert len({r["batch_id"] for r in _about_batches(routed)}) == 3
    assert len({r["batch_id"] for r in _about_batches(worked)}) == 3
    assert all(r["device"] == "cpu" for r in worked)  # a worker's every line names its device
    print("\n" + "\n".join(json.dumps(r) for r in (_about_batches(routed)[:1]
                                                 + _about_batches(worked)[-2:])))

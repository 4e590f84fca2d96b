"""A router and a worker (real Celery processes, echo backend) on a live carbon API served from
loopback: the whole cluster asks the API once per zone and TTL through the Redis cache, and
every result row, its export and the report say which signal its carbon came from."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.app.cli.main import main
from pipeline.grid.hourly import hour_start
from pipeline.report.sections import COLUMNS
from tests.cluster import cluster_env, running_cluster
from tests.replay_http import Replay, replay_server

FIXTURES = Path(__file__).parent / "fixtures"
WT = json.loads((FIXTURES / "carbon_api" / "watttime.json").read_text())
MOER_1000_G_PER_KWH = 1000 * 0.45359237  # the fixture's newest point, 1000 lbs/MWh
WAIT_S = 180.0


@pytest.fixture
def watttime() -> Iterator[tuple[str, Replay]]:
    with replay_server() as (base, replay):
        replay.set("/login", (200, WT["login"], 0.0))
        replay.set("/v3/historical", (200, WT["historical"], 0.0))
        yield base, replay


def _hours(start: datetime, end: datetime) -> int:
    return int((hour_start(end) - hour_start(start)) / timedelta(hours=1)) + 1


@pytest.mark.slow
def test_cluster_shares_one_request_and_records_the_signal(
        watttime: tuple[str, Replay], redis_url: str, db_url: str, tmp_path: Path) -> None:
    base, replay = watttime
    registry = tmp_path / "devices.toml"
    registry.write_text('[[device]]\nname = "cpu"\nkind = "cpu"\nzone = "US-CAL-CISO"\n')
    env = cluster_env(redis_url, db_url, ECOBATCH_BACKEND="echo",
                      ECOBATCH_DEVICES=str(registry), ECOBATCH_CARBON_API="watttime",
                      ECOBATCH_WATTTIME_USERNAME="u", ECOBATCH_WATTTIME_PASSWORD="p",
                      ECOBATCH_WATTTIME_URL=base,
                      ECOBATCH_WATTTIME_REGIONS='{"US-CAL-CISO": "CAISO_NORTH"}')
    started = datetime.now(UTC)
    with running_cluster(env, tmp_path / "logs") as cluster:
        job_id = cluster.client.submit([f"question {i}" for i in range(12)], max_tokens=4)
        cluster.client.wait(job_id, timeout_s=WAIT_S)
        rows = cluster.client.results(job_id)
    hours = _hours(started, datetime.now(UTC))
    assert len(rows) == 12
    assert {r["intensity_signal"] for r in rows} == {"marginal:watttime"}
    assert [r["intensity_g_per_kwh"] for r in rows] == [pytest.approx(MOER_1000_G_PER_KWH)] * 12
    # Router passes (every 0.25 s) and the worker's accounting all read the zone: one
    # request per hour the test ran in, for the whole cluster (before: one per read).
    assert replay.count("/v3/historical") <= hours
    assert replay.count("/login") <= hours
    exported = CliRunner().invoke(main, ["results", job_id, "--format", "csv",
                                         "--database-url", db_url])
    assert exported.exit_code == 0, exported.output
    assert {r["intensity_signal"] for r in csv.DictReader(io.StringIO(exported.stdout))} == {
        "marginal:watttime"}
    report = CliRunner().invoke(main, ["report", job_id, "--json", "--database-url", db_url])
    assert report.exit_code == 0, report.output
    devices = json.loads(report.output)[1]
    assert dict(zip(COLUMNS, devices["rows"][0], strict=True))["intensity_signal"] == (
        "marginal:watttime")

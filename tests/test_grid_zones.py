"""Issue 11, items 2 and 3, on real processes: grid zones without data, your own grid files, and
a device's fixed intensity.

- A registry naming a zone without data is refused by every entry point (``devices``,
  ``router``, ``worker``, ``submit``, ``run``) with the device, the zone, the zones known and
  how to add one; before, the router started and every routing pass raised, so that no job,
  the GB device's included, was ever answered.
- A real router and real workers (echo backend): ``ECOBATCH_GRID_DIR`` adds zone SG, which
  routes; a device whose zone has no data at this hour is left out of every pass, with the
  reason on each batch and one warning in the router's log, and the other devices answer; a
  device with no zone and a fixed 50 g/kWh is routed and accounted at 50 g/kWh (before, it
  became DE-LU: scored at DE-LU's intensity, accounted at 50).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from pipeline.broker.alive import alive_devices
from pipeline.broker.queue import connect
from pipeline.client import Client
from pipeline.ledger.models import Batch, Result
from pipeline.settings import Settings, load_settings
from tests.cluster import QuickStopGroup, clean_env, run_cli, run_clis
from tests.gridfiles import write_em_csv

pytestmark = [pytest.mark.service, pytest.mark.slow]
GRID_AT = "2024-06-03T12:00:00+00:00"  # GB's packaged trace reads 139 g/kWh at this hour
SG_AT_GRID_AT = 412.0  # the SG file's value at GRID_AT (400 + 12 hours)
WAIT_S = 180.0
TWO_ZONES = """
[[device]]
name = "gb"
kind = "cpu"
zone = "GB"

[[device]]
name = "sg"
kind = "cpu"
zone = "SG"
"""
FOUR_DEVICES = """
[[device]]
name = "lost"     # zone XX has data for January only: none at GRID_AT
kind = "cpu"
zone = "XX"

[[device]]
name = "sg"       # zone SG comes from ECOBATCH_GRID_DIR
kind = "cpu"
zone = "SG"

[[device]]
name = "gb"
kind = "cpu"
zone = "GB"

[[device]]
name = "fixed"    # no zone: a fixed intensity
kind = "cpu"
intensity_g_per_kwh = 50.0
"""


def grid_dir(tmp_path: Path) -> Path:
    """SG for 48 hours around GRID_AT; XX for the first two days of 2024 only."""
    folder = tmp_path / "grid"
    folder.mkdir()
    write_em_csv(folder / "SG_2024_hourly.csv", "SG", datetime(2024, 6, 3),
                 [400.0 + k for k in range(48)])
    write_em_csv(folder / "XX_2024_hourly.csv", "XX", datetime(2024, 1, 1), [300.0] * 48)
    return folder


def test_every_entry_point_refuses_a_zone_without_data(redis_url: str, sqlite_url: str,
                                                        tmp_path: Path) -> None:
    registry = tmp_path / "devices.toml"
    registry.write_text(TWO_ZONES, encoding="utf-8")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n', encoding="utf-8")
    env = {**clean_env(), "ECOBATCH_DEVICES": str(registry), "ECOBATCH_REDIS_URL": redis_url,
           "ECOBATCH_DATABASE_URL": sqlite_url, "ECOBATCH_BACKEND": "echo"}
    every = (["devices"], ["router"], ["worker", "--device", "gb"], ["submit", str(prompts)],
             ["run", str(prompts), "-o", str(tmp_path / "out.jsonl")])
    for args, res in zip(every, run_clis(every, tmp_path, env=env, timeout_s=60), strict=True):
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        one_line = " ".join(res.stderr.split())
        for part in (f"device registry {registry}: device 'sg'", "grid zone 'SG' has no carbon",
                     "zones with data: AU-NSW, AU-VIC, DE-LU, GB, US-CAL-CISO",
                     "SG_<YEAR>_hourly.csv", "ECOBATCH_GRID_DIR"):
            assert part in one_line, (args, res.stderr)
    registry.write_text('[[device]]\nname = "box"\nkind = "cpu"\n', encoding="utf-8")
    res = run_cli(["devices"], tmp_path, env=env, timeout_s=60)
    assert res.returncode == 1 and "there is no default zone" in res.stderr


@contextmanager
def four_device_cluster(redis_url: str, db_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A router and one echo worker per device of FOUR_DEVICES, grid pinned at GRID_AT."""
    registry = tmp_path / "devices.toml"
    registry.write_text(FOUR_DEVICES, encoding="utf-8")
    env = {"ECOBATCH_REDIS_URL": redis_url, "ECOBATCH_DATABASE_URL": db_url,
           "ECOBATCH_DEVICES": str(registry), "ECOBATCH_GRID_DIR": str(grid_dir(tmp_path)),
           "ECOBATCH_GRID_AT": GRID_AT, "ECOBATCH_BACKEND": "echo",
           "ECOBATCH_BATCH_SIZE": "2", "ECOBATCH_MAX_WAIT_S": "0.2"}
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        names = ["lost", "sg", "gb", "fixed"]
        for name in names:
            children.start(f"worker-{name}", ["worker", "--device", name])
        settings = load_settings(redis_url=redis_url, database_url=db_url, devices=registry,
                                 grid_dir=tmp_path / "grid", grid_at=GRID_AT, batch_size=2)
        client = connect(redis_url)
        deadline = time.monotonic() + WAIT_S
        while alive_devices(client, names) != set(names):
            children.check_alive()
            assert time.monotonic() < deadline, "workers sent no heartbeat"
            time.sleep(0.2)
        yield settings


def test_user_zone_routes_failing_zone_is_left_out_fixed_intensity_is_used(
        redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    with four_device_cluster(redis_url, sqlite_url, tmp_path) as settings:
        client = Client(settings)
        rr = client.submit([f"question {i}" for i in range(12)], strategy="round_robin",
                           max_tokens=4)
        carbon = client.submit([f"green {i}" for i in range(4)], strategy="carbon", max_tokens=4)
        client.wait(rr, timeout_s=WAIT_S)
        client.wait(carbon, timeout_s=WAIT_S)
        shown = run_cli(["devices"], tmp_path, env={**clean_env(), **_env_of(settings)})
    router_log = (tmp_path / "logs" / "router.log").read_text(errors="replace")
    with Session(client.engine) as s:
        results = {r.prompt_id: r for r in s.scalars(select(Result))}
        batches = list(s.scalars(select(Batch)))
    by_job: dict[str, list[Result]] = {}
    for r in results.values():
        by_job.setdefault(r.job_id, []).append(r)
    # every prompt answered once; round robin used the three devices with data, never "lost"
    assert len(by_job[rr]) == 12 and len(by_job[carbon]) == 4
    assert {r.device for r in by_job[rr]} == {"sg", "gb", "fixed"}
    # "lost" is left out of every pass, with the reason on every batch, and warned about once
    for b in batches:
        assert "excluded lost (no grid data: carbon XX: no carbon intensity" in str(b.reason)
        assert b.scores["lost"]["carbon_g"] is None
    assert router_log.count("device lost is left out") == 1, router_log[-3000:]
    assert "Traceback" not in router_log
    # SG from your files: accounted at the file's intensity; no price data: cost unknown, not 0
    sg = [r for r in by_job[rr] if r.device == "sg"]
    assert {r.intensity_g_per_kwh for r in sg} == {SG_AT_GRID_AT}
    assert {r.cost_usd for r in sg} == {None}
    # the fixed 50 g/kWh device wins the carbon job and is accounted at 50 g/kWh
    assert {r.device for r in by_job[carbon]} == {"fixed"}
    assert {r.intensity_g_per_kwh for r in by_job[carbon]} == {50.0}
    fixed_batch = next(b for b in batches if b.device == "fixed")
    score = fixed_batch.scores["fixed"]
    assert score["carbon_g"] == pytest.approx(score["energy_j"] / 3.6e6 * 1.2 * 50.0)
    assert shown.returncode == 0, shown.stderr
    table = " ".join(shown.stdout.split())
    assert "fixed 50 g/kWh" in table and "DE-LU" not in table
    assert "│ sg │ SG │ 412.0 │ - │ - │" in table  # carbon, and price and temperature missing
    assert "│ lost │ XX │ no data: carbon XX: no carbon intensity" in table


def _env_of(settings: Settings) -> dict[str, str]:
    return {"ECOBATCH_DEVICES": str(settings.devices), "ECOBATCH_GRID_DIR": str(settings.grid_dir),
            "ECOBATCH_GRID_AT": GRID_AT, "ECOBATCH_DATABASE_URL": settings.database_url,
            "COLUMNS": "200"}

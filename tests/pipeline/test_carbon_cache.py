"""The live carbon cache a cluster shares through Redis, Retry-After, and the signal each source
names; against a real HTTP server on loopback and a real Redis, counting upstream requests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.accounting.account import BatchAccount
from pipeline.errors import DataSourceError
from pipeline.fleet.devices import Device
from pipeline.grid.carbon_api import ElectricityMapsApi, LiveCarbon, WattTimeApi
from pipeline.grid.carbon_cache import MemoryStore, RedisStore, ZoneHourCache
from pipeline.grid.clock import PinnedGrid
from pipeline.grid.hourly import ElectricityMapsFolder
from pipeline.grid.http_json import HttpJson, retry_after_s
from pipeline.grid.signal import IntensityReading, read_intensity
from pipeline.grid.trace import GridTrace
from tests.cluster import REPO_ROOT, clean_env
from tests.replay_http import Replay, replay_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EM = json.loads((FIXTURES / "carbon_api" / "electricitymaps.json").read_text())
WT = json.loads((FIXTURES / "carbon_api" / "watttime.json").read_text())
NOW = datetime(2024, 1, 1, 2, 30, tzinfo=UTC)
LATEST = "/v3/carbon-intensity/latest"
MOER_1000_G_PER_KWH = 1000 * 0.45359237  # the fixture's newest WattTime point, 1000 lbs/MWh


@pytest.fixture
def server() -> Iterator[tuple[str, Replay]]:
    with replay_server() as served:
        yield served


def watttime_routes(replay: Replay, delay_s: float = 0.0) -> None:
    replay.set("/login", (200, WT["login"], 0.0))
    replay.set("/v3/historical", (200, WT["historical"], delay_s))
    replay.set("/v3/forecast", (200, WT["forecast"], 0.0))


def http(**kw: Any) -> tuple[HttpJson, list[float]]:
    waits: list[float] = []
    return HttpJson(timeout_s=5.0, retries=3, backoff_s=0.01, sleep=waits.append, **kw), waits


READ_ONE_ZONE = """
import sys
from datetime import UTC, datetime
from pipeline.app.context import AppContext
from pipeline.grid.signal import read_intensity
from pipeline.settings import load_settings
reading = read_intensity(AppContext(load_settings()).grid, sys.argv[1], datetime.now(UTC))
print(reading.g_per_kwh, reading.signal)
"""


def read_in_processes(n: int, zone: str, env: dict[str, str]) -> list[tuple[float, str]]:
    """Start ``n`` processes at once, each reading ``zone`` through its own AppContext."""
    procs = [subprocess.Popen([sys.executable, "-c", READ_ONE_ZONE, zone], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        value, signal = stdout.split()
        out.append((float(value), signal))
    return out


API_ENV = {
    "electricitymaps": {"ECOBATCH_CARBON_API": "electricitymaps",
                        "ECOBATCH_ELECTRICITYMAPS_API_KEY": "k",
                        "ECOBATCH_ELECTRICITYMAPS_URL": "{base}/v3"},
    "watttime": {"ECOBATCH_CARBON_API": "watttime", "ECOBATCH_WATTTIME_USERNAME": "u",
                 "ECOBATCH_WATTTIME_PASSWORD": "p", "ECOBATCH_WATTTIME_URL": "{base}",
                 "ECOBATCH_WATTTIME_REGIONS": '{"US-CAL-CISO": "CAISO_NORTH"}'},
}


@pytest.mark.parametrize(("api", "zone", "path", "expected"), [
    ("electricitymaps", "DE-LU", LATEST, (183.69, "average-lifecycle:electricitymaps")),
    ("watttime", "US-CAL-CISO", "/v3/historical", (MOER_1000_G_PER_KWH, "marginal:watttime")),
])
def test_two_processes_reading_a_zone_cost_one_upstream_request(
        server: tuple[str, Replay], redis_url: str, api: str, zone: str, path: str,
        expected: tuple[float, str]) -> None:
    base, replay = server
    # A slow answer, so the second process arrives while the first is still asking.
    replay.set(LATEST, (200, EM["latest"], 0.5))
    watttime_routes(replay, delay_s=0.5)
    env = {**clean_env(), "PYTHONPATH": str(REPO_ROOT), "ECOBATCH_REDIS_URL": redis_url,
           **{k: v.replace("{base}", base) for k, v in API_ENV[api].items()}}
    readings = read_in_processes(2, zone, env)
    assert readings == [(pytest.approx(expected[0]), expected[1])] * 2
    assert replay.count(path) == 1  # before: one per process (and one per read)
    assert replay.count("/login") == (1 if api == "watttime" else 0)
    cached = redis.Redis.from_url(redis_url).keys(f"ecobatch:carbon:{api}:*")
    assert len(cached) == 1  # the answer itself; the fill lock is gone


def test_a_long_running_reader_asks_once_per_ttl_and_stays_bounded(
        server: tuple[str, Replay]) -> None:
    base, replay = server
    watttime_routes(replay)
    mono, now = [0.0], [NOW]
    store = MemoryStore(max_entries=8, clock=lambda: mono[0])
    cache = ZoneHourCache(store, ttl_s=300.0, clock=lambda: now[0])
    regions = {"US-CAL-CISO": "CAISO_NORTH"} | {f"Z{i}": f"R{i}" for i in range(50)}
    api = WattTimeApi("u", "p", regions, http()[0], base, cache)
    for _ in range(100):
        api.history("US-CAL-CISO")
        api.latest("US-CAL-CISO")
    assert replay.count("/v3/historical") == 1  # before: 200, each with a new end=now
    mono[0] = 301.0  # the TTL ran out
    api.history("US-CAL-CISO")
    now[0] = NOW + timedelta(hours=1)  # a new hour is a new key
    api.history("US-CAL-CISO")
    assert replay.count("/v3/historical") == 3
    for zone in regions:
        api.history(zone)
    assert len(store) <= 8  # least recently used zones went; before: one entry per request


def test_redis_entries_expire_with_the_ttl(server: tuple[str, Replay], redis_url: str,
                                           rclient: redis.Redis) -> None:
    base, replay = server
    replay.set(LATEST, (200, EM["latest"], 0.0))
    cache = ZoneHourCache(RedisStore(redis_url, MemoryStore()), ttl_s=120.0)
    api = ElectricityMapsApi("k", http()[0], f"{base}/v3", cache)
    assert api.latest("DE")[1] == 183.69
    keys = rclient.keys("ecobatch:carbon:*")
    assert len(keys) == 1 and 0 < rclient.ttl(keys[0]) <= 120
    assert api.latest("DE")[1] == 183.69 and replay.count(LATEST) == 1


def test_retry_after_in_seconds_is_waited_for(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/x", (429, {}, 0.0, {"Retry-After": "1"}), (200, {"ok": 1}, 0.0))
    client = HttpJson(timeout_s=5.0, retries=3, backoff_s=0.01)  # the real sleep
    assert client.get(f"{base}/x") == {"ok": 1}
    first, second = replay.requests
    assert second.at_s - first.at_s >= 1.0  # before: asked again after the 0.01 s backoff


def test_retry_after_as_an_http_date_is_waited_for(server: tuple[str, Replay]) -> None:
    base, replay = server
    when = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    replay.set("/d", (503, {}, 0.0, {"Retry-After": when}), (200, {"ok": 2}, 0.0))
    client, waits = http(wall_clock=lambda: NOW)
    assert client.get(f"{base}/d") == {"ok": 2} and waits == [7.0]
    assert retry_after_s("120", NOW) == 120.0 and retry_after_s("soon", NOW) is None
    assert retry_after_s(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0.0


def test_a_long_retry_after_pauses_the_whole_cluster(
        server: tuple[str, Replay], redis_url: str, rclient: redis.Redis) -> None:
    base, replay = server
    replay.set(LATEST, (429, {}, 0.0, {"Retry-After": "120"}))

    def client() -> tuple[ElectricityMapsApi, list[float]]:
        cache = ZoneHourCache(RedisStore(redis_url, MemoryStore()), ttl_s=300.0)
        h, waits = http()
        return ElectricityMapsApi("k", h, f"{base}/v3", cache), waits

    first, waits = client()
    with pytest.raises(DataSourceError, match="429") as err:
        first.latest("DE-LU")
    assert err.value.retry_after_s == 120.0 and waits == []  # gave up at once: no blocking
    assert replay.count(LATEST) == 1  # before: 4 requests, 1 + 2 + 4 s apart
    assert 0 < rclient.ttl("ecobatch:carbon:electricitymaps:pause") <= 120
    second, _ = client()  # another process of the cluster
    live = LiveCarbon(second, fallback=GridTrace())
    now = datetime.now(UTC)
    assert live.intensity_reading("DE-LU", now) == IntensityReading(
        GridTrace().intensity_g_per_kwh("DE-LU", now), "average-lifecycle:electricitymaps-trace")
    assert replay.count(LATEST) == 1  # paused: nobody asked again


def test_redis_away_falls_back_to_this_process(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set(LATEST, (200, EM["latest"], 0.0))
    memory = MemoryStore()
    cache = ZoneHourCache(RedisStore("redis://127.0.0.1:1/0", memory), ttl_s=300.0)
    api = ElectricityMapsApi("k", http()[0], f"{base}/v3", cache)
    assert api.latest("DE")[1] == 183.69 and api.latest("DE")[1] == 183.69
    assert replay.count(LATEST) == 1 and len(memory) == 1


class PlainCarbon:
    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        return 42.0


def test_each_source_says_which_signal_it_is(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set(LATEST, (200, EM["latest"], 0.0))
    watttime_routes(replay)
    trace = GridTrace()
    at = datetime(2024, 1, 1, 1, tzinfo=UTC)
    lifecycle_trace = "average-lifecycle:electricitymaps-trace"
    assert read_intensity(trace, "GB", at).signal == lifecycle_trace
    assert read_intensity(PinnedGrid(trace, at), "GB", NOW).signal == lifecycle_trace
    direct = ElectricityMapsFolder(FIXTURES / "hourly", basis="direct")
    assert read_intensity(direct, "DE-LU", at) == (134.17, "average-direct:electricitymaps-csv")
    em = LiveCarbon(ElectricityMapsApi("k", http()[0], f"{base}/v3"), now=lambda: NOW)
    assert em.intensity_reading("DE", NOW) == (183.69, "average-lifecycle:electricitymaps")
    wt = LiveCarbon(WattTimeApi("u", "p", {"X": "R"}, http()[0], base), now=lambda: NOW)
    assert wt.intensity_reading("X", NOW).signal == "marginal:watttime"
    assert read_intensity(PlainCarbon(), "GB", NOW) == (42.0, None)
    fixed = Device(name="d", kind="cpu", zone="GB", intensity_g_per_kwh=50.0)
    account = BatchAccount.compute(trace, fixed, 3.6e6, 1.0, at)
    assert (account.intensity_g_per_kwh, account.intensity_signal) == (50.0, "fixed:registry")
    rows = BatchAccount.compute(trace, Device(name="g", kind="cpu", zone="GB"), 1.0, 1.0,
                                at).split([1, 1])
    assert {r["intensity_signal"] for r in rows} == {lifecycle_trace}

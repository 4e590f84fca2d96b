"""Live carbon clients against a real HTTP server on loopback replaying recorded answers,
including HTTP errors, timeouts, retries with backoff, caching and the last-known fallback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, DataSourceError
from pipeline.grid.carbon_api import (
    G_PER_KWH_PER_LBS_PER_MWH,
    ElectricityMapsApi,
    LiveCarbon,
    LiveGrid,
    WattTimeApi,
    carbon_api_from_settings,
    grid_from_settings,
)
from pipeline.grid.forecast import Forecaster
from pipeline.grid.http_json import HttpJson
from pipeline.grid.trace import GridTrace
from pipeline.settings import load_settings
from tests.replay_http import Replay, replay_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "carbon_api"
EM = json.loads((FIXTURES / "electricitymaps.json").read_text())
WT = json.loads((FIXTURES / "watttime.json").read_text())
NOW = datetime(2024, 1, 1, 2, 30, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[tuple[str, Replay]]:
    with replay_server() as served:
        yield served


def http(**kw: Any) -> tuple[HttpJson, list[float]]:
    waits: list[float] = []
    client = HttpJson(timeout_s=kw.pop("timeout_s", 2.0), retries=kw.pop("retries", 2),
                      backoff_s=0.5, sleep=waits.append, **kw)
    return client, waits


def test_electricity_maps_latest_history_forecast(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/v3/carbon-intensity/latest", (200, EM["latest"], 0))
    replay.set("/v3/carbon-intensity/history", (200, EM["history"], 0))
    replay.set("/v3/carbon-intensity/forecast", (200, EM["forecast"], 0))
    api = ElectricityMapsApi("key-1", http()[0], f"{base}/v3")
    assert api.latest("DE") == (datetime(2024, 1, 1, 2, tzinfo=UTC), 183.69)
    assert [v for _, v in api.history("DE")] == [177.74, 179.08, 183.69]
    assert api.forecast("DE", 2) == [(datetime(2024, 1, 1, 3, tzinfo=UTC), 190.0),
                                     (datetime(2024, 1, 1, 4, tzinfo=UTC), 200.0)]
    first = replay.requests[0]
    assert first.query == {"zone": ["DE"], "emissionFactorType": ["lifecycle"]}
    assert first.headers["auth-token"] == "key-1"


def test_watttime_logs_in_and_converts_moer(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/login", (200, WT["login"], 0))
    replay.set("/v3/historical", (200, WT["historical"], 0))
    replay.set("/v3/forecast", (200, WT["forecast"], 0))
    api = WattTimeApi("u", "p", {"US-CAL-CISO": "CAISO_NORTH"}, http()[0], base)
    history = api.history("US-CAL-CISO")
    # 01:00 holds two 5-minute points (800, 900 lbs/MWh): mean 850 lbs/MWh = 385.5535 g/kWh
    assert history[0] == (datetime(2024, 1, 1, 1, tzinfo=UTC), pytest.approx(385.5535145))
    assert api.latest("US-CAL-CISO")[1] == pytest.approx(1000 * G_PER_KWH_PER_LBS_PER_MWH)
    assert api.forecast("US-CAL-CISO", 1)[0][1] == pytest.approx(600 * 0.45359237)
    login = next(r for r in replay.requests if r.path == "/login")
    assert login.headers["authorization"] == "Basic dTpw"  # base64("u:p")
    assert replay.count("/login") == 1  # the token is kept while valid
    data = next(r for r in replay.requests if r.path == "/v3/forecast")
    assert data.headers["authorization"] == "Bearer test-token"
    assert data.query["region"] == ["CAISO_NORTH"] and data.query["signal_type"] == ["co2_moer"]
    with pytest.raises(ConfigError, match="WattTime region"):
        api.history("GB")


def test_transient_errors_are_retried_with_backoff(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/x", (503, {}, 0), (429, {}, 0), (200, {"ok": 1}, 0))
    client, waits = http()
    assert client.get(f"{base}/x") == {"ok": 1}
    assert waits == [0.5, 1.0]  # doubled after each retry


def test_retries_give_up_and_client_errors_are_not_retried(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/down", (500, {}, 0))
    client, waits = http()
    with pytest.raises(DataSourceError, match="HTTP 500") as err:
        client.get(f"{base}/down")
    assert err.value.status == 500 and len(waits) == 2
    replay.set("/forbidden", (403, EM["forecast_forbidden"], 0))
    client, waits = http()
    with pytest.raises(DataSourceError, match="HTTP 403"):
        client.get(f"{base}/forbidden")
    assert waits == []


def test_a_slow_answer_is_a_timeout(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/slow", (200, {}, 1.0), (200, {"late": 1}, 0))
    client, waits = http(timeout_s=0.2, retries=0)
    with pytest.raises(DataSourceError, match="timed out"):
        client.get(f"{base}/slow")
    replay.set("/slow", (200, {}, 1.0), (200, {"late": 1}, 0))
    client, waits = http(timeout_s=0.2, retries=1)
    assert client.get(f"{base}/slow") == {"late": 1} and waits == [0.5]


def test_not_json_is_a_data_source_error(server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/s", (200, "just text", 0))
    client, _ = http()
    assert client.get(f"{base}/s") == "just text"
    replay.set("/v3/carbon-intensity/history", (200, ["not", "a", "dict"], 0))
    with pytest.raises(DataSourceError, match="no 'history' list"):
        ElectricityMapsApi("k", client, f"{base}/v3").history("DE")


class ConstantCarbon:
    def __init__(self, value: float) -> None:
        self.value = value

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        return self.value


def test_live_carbon_falls_back_to_the_last_known_value(
        server: tuple[str, Replay], caplog: pytest.LogCaptureFixture) -> None:
    base, replay = server
    replay.set("/v3/carbon-intensity/latest", (200, EM["latest"], 0), (500, {}, 0))
    replay.set("/v3/carbon-intensity/history", (200, EM["history"], 0))
    api = ElectricityMapsApi("k", http(retries=0)[0], f"{base}/v3")
    live = LiveCarbon(api, now=lambda: NOW)
    assert live.intensity_g_per_kwh("DE", NOW) == 183.69
    assert live.intensity_g_per_kwh("DE", datetime(2024, 1, 1, 1, 10, tzinfo=UTC)) == 179.08
    with caplog.at_level(logging.WARNING):
        assert live.intensity_g_per_kwh("DE", NOW) == 179.08  # the last value it was given
    assert "last known intensity" in caplog.text
    assert LiveCarbon(api, ConstantCarbon(99.0), now=lambda: NOW).intensity_g_per_kwh("DE", NOW) == 99.0
    with pytest.raises(DataSourceError):
        LiveCarbon(api, now=lambda: NOW).intensity_g_per_kwh("DE", NOW)


def test_forecast_from_the_api_or_offline_when_the_plan_refuses(
        server: tuple[str, Replay], caplog: pytest.LogCaptureFixture) -> None:
    base, replay = server
    replay.set("/v3/carbon-intensity/forecast", (200, EM["forecast"], 0),
               (403, EM["forecast_forbidden"], 0))
    api = ElectricityMapsApi("k", http()[0], f"{base}/v3")
    forecaster = Forecaster(ConstantCarbon(120.0), api)
    start = datetime(2024, 1, 1, 3, 20, tzinfo=UTC)
    assert [v for _, v in forecaster.forecast("DE", start, 3)] == [190.0, 200.0, 210.0]
    with caplog.at_level(logging.WARNING):
        offline = forecaster.forecast("DE", start, 24)
    assert len(offline) == 24 and {v for _, v in offline} == {120.0}
    assert "forecast unavailable" in caplog.text


def test_carbon_api_from_settings() -> None:
    assert carbon_api_from_settings(load_settings()) is None
    em = load_settings(carbon_api="electricitymaps", electricitymaps_api_key="secret-key-1")
    assert isinstance(carbon_api_from_settings(em), ElectricityMapsApi)
    assert "secret-key-1" not in repr(em)
    with pytest.raises(ConfigError, match="API_KEY"):
        carbon_api_from_settings(load_settings(carbon_api="electricitymaps"))
    with pytest.raises(ConfigError, match="unknown carbon_api"):
        carbon_api_from_settings(load_settings(carbon_api="nope"))
    wt = load_settings(carbon_api="watttime", watttime_username="u", watttime_password="p",
                       watttime_regions={"US-CAL-CISO": "CAISO_NORTH"})
    assert isinstance(carbon_api_from_settings(wt), WattTimeApi)


def test_live_grid_takes_carbon_live_and_the_rest_from_the_trace(
        server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/v3/carbon-intensity/latest", (200, EM["latest"], 0))
    trace = GridTrace()
    assert grid_from_settings(load_settings(), trace) is trace
    settings = load_settings(carbon_api="electricitymaps", electricitymaps_api_key="k",
                             electricitymaps_url=f"{base}/v3")
    grid = grid_from_settings(settings, trace)
    assert isinstance(grid, LiveGrid)
    now = datetime.now(UTC)
    replay.set("/v3/carbon-intensity/latest",
               (200, EM["latest"] | {"datetime": now.isoformat()}, 0))
    assert grid.intensity_g_per_kwh("DE-LU", now) == 183.69
    assert grid.temperature_c("DE-LU", now) == trace.temperature_c("DE-LU", now)
    assert grid.price_usd_per_kwh("DE-LU", now) == trace.price_usd_per_kwh("DE-LU", now)


def test_watttime_logs_in_again_once_when_its_token_is_refused(
        server: tuple[str, Replay]) -> None:
    base, replay = server
    replay.set("/login", (200, WT["login"], 0))
    replay.set("/v3/historical", (401, {}, 0), (200, WT["historical"], 0))
    api = WattTimeApi("u", "p", {"US-CAL-CISO": "CAISO_NORTH"}, http()[0], base)
    assert api.latest("US-CAL-CISO")[1] == pytest.approx(1000 * G_PER_KWH_PER_LBS_PER_MWH)
    assert replay.count("/login") == 2 and replay.count("/v3/historical") == 2
    replay.set("/v3/historical", (401, {}, 0))
    with pytest.raises(DataSourceError, match="HTTP 401"):
        api.history("US-CAL-CISO")
    assert replay.count("/v3/historical") == 4  # one retry with a new token, not a loop

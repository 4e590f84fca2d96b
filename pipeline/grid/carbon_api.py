"""Live grid carbon intensity from the Electricity Maps and WattTime APIs.

Both providers answer "now", the recent past and, where the plan allows, a forecast, as
``(start of the hour in UTC, gCO2e/kWh)`` points. :class:`LiveCarbon` turns one provider into a
:class:`~pipeline.grid.trace.CarbonSource`; when the service fails it answers the zone's last known
value and logs a warning, and only without any known value does it raise.

- Electricity Maps v3 (``auth-token`` header): ``/carbon-intensity/latest``, ``/history``
  (the past 24 hours) and ``/forecast``; ``emissionFactorType=lifecycle`` asks for the same
  life-cycle basis as the packaged traces.
- WattTime v3 (a token from ``/login`` with basic auth): ``/v3/historical`` and
  ``/v3/forecast`` of the ``co2_moer`` signal for a WattTime region. MOER is a *marginal*
  rate in lbs CO2/MWh, converted here to g/kWh (x 0.45359237); it is not the average intensity
  that Electricity Maps gives, so the two are not interchangeable for accounting; each API names
  its ``signal`` (:mod:`pipeline.grid.signal`) and every result row records it.

Answers are cached by source, zone and hour for the whole cluster (:mod:`pipeline.grid.carbon_cache`),
so a long-running router asks each zone once per ``API_CACHE_TTL_S`` however often it reads.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from pipeline.errors import ConfigError, DataSourceError
from pipeline.grid import signal as intensity_signal
from pipeline.grid.carbon_cache import Points, ZoneHourCache, cache_from_settings, uncached
from pipeline.grid.hourly import hour_start
from pipeline.grid.http_json import HttpJson
from pipeline.grid.signal import IntensityReading, read_intensity
from pipeline.grid.trace import CarbonSource, GridConditions

log = logging.getLogger(__name__)
G_PER_KWH_PER_LBS_PER_MWH: Final = 0.45359237
FORECAST_FETCH_H: Final = 72  # one forecast call per zone serves every horizon up to this
WATTTIME_TOKEN_S: Final = 25 * 60  # WattTime tokens last 30 minutes


def _parse_time(text: str) -> datetime:
    return hour_start(datetime.fromisoformat(text.replace("Z", "+00:00")))


class CarbonApi(Protocol):
    """A live carbon-intensity service."""

    name: str
    signal: str  # see pipeline.grid.signal

    def latest(self, zone: str) -> tuple[datetime, float]:
        """The newest hour and its gCO2e/kWh."""
        ...

    def history(self, zone: str) -> Points:
        """Recent hours (at least the past 24) in time order."""
        ...

    def forecast(self, zone: str, hours: int) -> Points:
        """The next ``hours`` hours, where the plan allows it (else DataSourceError 401/403)."""
        ...


class ElectricityMapsApi:
    """Electricity Maps API v3.

    Args:
        token: the API key (``auth-token`` header).
        http: the JSON client (timeouts, retries).
        base_url: API root.
        cache: answers by zone and hour; none kept by default.
    """

    name = "electricitymaps"
    signal = intensity_signal.ELECTRICITYMAPS_API

    def __init__(self, token: str, http: HttpJson,
                 base_url: str = "https://api.electricitymap.org/v3",
                 cache: ZoneHourCache | None = None) -> None:
        self._headers = {"auth-token": token}
        self._http, self._base = http, base_url.rstrip("/")
        self._cache = cache if cache is not None else uncached()

    def _get(self, path: str, zone: str) -> Any:
        params = {"zone": zone, "emissionFactorType": "lifecycle"}
        return self._http.get(f"{self._base}/carbon-intensity/{path}", params, self._headers)

    def _points(self, kind: str, zone: str) -> Points:
        return self._cache.points(self.name, kind, zone,
                                  lambda: _em_points(self._get(kind, zone), kind))

    def latest(self, zone: str) -> tuple[datetime, float]:
        """Newest hour of ``zone``."""
        return self._points("latest", zone)[0]

    def history(self, zone: str) -> Points:
        """The past 24 hours of ``zone``."""
        return self._points("history", zone)

    def forecast(self, zone: str, hours: int) -> Points:
        """The next ``hours`` hours of ``zone``."""
        return self._points("forecast", zone)[:hours]


def _em_points(body: Any, kind: str) -> Points:
    return [_em_point(body)] if kind == "latest" else [_em_point(p) for p in _list(body, kind)]


def _list(body: Any, key: str) -> list[Any]:
    if not isinstance(body, Mapping) or not isinstance(body.get(key), list):
        raise DataSourceError(f"carbon API answer has no {key!r} list")
    return list(body[key])


def _em_point(p: Any) -> tuple[datetime, float]:
    try:
        return _parse_time(p["datetime"]), float(p["carbonIntensity"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataSourceError(f"Electricity Maps point without datetime/carbonIntensity: {e}") from e


class WattTimeApi:
    """WattTime API v3, ``co2_moer`` signal, converted to g/kWh.

    Args:
        username: WattTime user.
        password: its password.
        regions: grid zone -> WattTime region (e.g. ``{"US-CAL-CISO": "CAISO_NORTH"}``).
        http: the JSON client.
        base_url: API root.
        cache: answers by zone and hour; none kept by default.
    """

    name = "watttime"
    signal = intensity_signal.WATTTIME_MOER

    def __init__(self, username: str, password: str, regions: Mapping[str, str], http: HttpJson,
                 base_url: str = "https://api.watttime.org",
                 cache: ZoneHourCache | None = None) -> None:
        self._basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._regions, self._http, self._base = dict(regions), http, base_url.rstrip("/")
        self._cache = cache if cache is not None else uncached()
        self._token: tuple[str, float] | None = None  # (token, monotonic expiry)

    def _region(self, zone: str) -> str:
        if zone not in self._regions:
            raise ConfigError(f"no WattTime region for zone {zone!r}: set ECOBATCH_WATTTIME_REGIONS")
        return self._regions[zone]

    def _bearer(self) -> str:
        """A token from ``/login``, kept in this process while it is valid (never in Redis)."""
        if self._token is None or time.monotonic() >= self._token[1]:
            login = self._http.get(f"{self._base}/login", None,
                                   {"Authorization": f"Basic {self._basic}"})
            token = login.get("token") if isinstance(login, Mapping) else None
            if not token:
                raise DataSourceError("WattTime login returned no token")
            self._token = (str(token), time.monotonic() + WATTTIME_TOKEN_S)
        return self._token[0]

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self._base}/v3/{path}"
        try:
            return self._http.get(url, params, {"Authorization": f"Bearer {self._bearer()}"})
        except DataSourceError as e:
            if e.status != 401:
                raise
            self._token = None  # expired early: log in again, once
            return self._http.get(url, params, {"Authorization": f"Bearer {self._bearer()}"})

    def history(self, zone: str) -> Points:
        """The past 24 hours, averaged to hours; one request per zone and cache TTL."""
        def fetch() -> Points:
            end = datetime.now(UTC)
            body = self._get("historical", {"region": self._region(zone),
                                            "signal_type": "co2_moer",
                                            "start": (end - timedelta(hours=24)).isoformat(),
                                            "end": end.isoformat()})
            return _hourly(_wt_points(body))
        return self._cache.points(self.name, "history", zone, fetch)

    def latest(self, zone: str) -> tuple[datetime, float]:
        """Newest hour."""
        points = self.history(zone)
        if not points:
            raise DataSourceError("WattTime history is empty")
        return points[-1]

    def forecast(self, zone: str, hours: int) -> Points:
        """The next ``hours`` hours (at most :data:`FORECAST_FETCH_H`), averaged to hours."""
        def fetch() -> Points:
            body = self._get("forecast", {"region": self._region(zone),
                                          "signal_type": "co2_moer",
                                          "horizon_hours": FORECAST_FETCH_H})
            return _hourly(_wt_points(body))
        return self._cache.points(self.name, "forecast", zone, fetch)[:hours]


def _wt_points(body: Any) -> Points:
    try:
        return [(_parse_time(p["point_time"]), float(p["value"]) * G_PER_KWH_PER_LBS_PER_MWH)
                for p in _list(body, "data")]
    except (KeyError, TypeError, ValueError) as e:
        raise DataSourceError(f"WattTime point without point_time/value: {e}") from e


def _hourly(points: Points) -> Points:
    buckets: dict[datetime, list[float]] = {}
    for t, v in points:
        buckets.setdefault(t, []).append(v)  # 5-minute points share their hour's start
    return [(h, sum(vs) / len(vs)) for h, vs in sorted(buckets.items())]


class LiveCarbon:
    """A :class:`CarbonSource` asking a live API, falling back to the last known value.

    The hour holding ``at`` is looked up in the latest point (the current hour), the history
    (past hours) or the forecast (future hours). When the service fails, the zone's most recent
    answered value is used and a warning logged; with none, ``fallback`` answers (e.g. the
    packaged trace), else the error is raised.

    Args:
        api: the provider.
        fallback: answers when the API fails and nothing is known yet.
        now: the clock (timezone-aware UTC).
    """

    def __init__(self, api: CarbonApi, fallback: CarbonSource | None = None,
                 now: Any = None) -> None:
        self.api, self.fallback = api, fallback
        self._now = now or (lambda: datetime.now(UTC))
        self._last: dict[str, tuple[datetime, float]] = {}

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """gCO2e/kWh of ``zone`` in the hour holding ``at``.

        Raises:
            DataSourceError: the API failed and there is neither a known value nor a fallback.
        """
        return self.intensity_reading(zone, at).g_per_kwh

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """The intensity with its signal: the API's, or the fallback's where that answered.

        Raises:
            DataSourceError: the API failed and there is neither a known value nor a fallback.
        """
        hour, current = hour_start(at), hour_start(self._now())
        try:
            value = self._ask(zone, hour, current)
        except DataSourceError as e:
            return self._fall_back(zone, at, e)
        self._last[zone] = (hour, value)
        return IntensityReading(value, self.api.signal)

    def _ask(self, zone: str, hour: datetime, current: datetime) -> float:
        if hour >= current + timedelta(hours=1):
            points = self.api.forecast(zone, int((hour - current) / timedelta(hours=1)) + 1)
        elif hour < current:
            points = self.api.history(zone)
        else:
            points = [self.api.latest(zone)]
        found = dict(points)
        if hour not in found:
            if hour == current and points:
                return points[-1][1]  # the newest point is the current hour's best estimate
            raise DataSourceError(f"{self.api.name}: no value for {zone} at {hour:%Y-%m-%dT%H}Z")
        return found[hour]

    def _fall_back(self, zone: str, at: datetime, err: DataSourceError) -> IntensityReading:
        known = self._last.get(zone)
        if known is not None:
            log.warning("%s failed (%s); using the last known intensity of %s, %.1f g/kWh "
                        "from %s", self.api.name, err, zone, known[1], f"{known[0]:%Y-%m-%dT%H}Z")
            return IntensityReading(known[1], self.api.signal)
        if self.fallback is not None:
            log.warning("%s failed (%s); no known value for %s, using the fallback source",
                        self.api.name, err, zone)
            return read_intensity(self.fallback, zone, at)
        raise err


def carbon_api_from_settings(settings: Any) -> CarbonApi | None:
    """The live API chosen by ``settings.carbon_api``, or None to use the packaged traces.

    Raises:
        ConfigError: an unknown API, or its key or user missing.
    """
    choice = settings.carbon_api
    if choice is None:
        return None
    http = HttpJson(timeout_s=settings.api_timeout_s, retries=settings.api_retries,
                    backoff_s=settings.api_backoff_s,
                    max_retry_wait_s=settings.api_max_retry_wait_s)
    if choice == "electricitymaps":
        if settings.electricitymaps_api_key is None:
            raise ConfigError("carbon_api electricitymaps needs ECOBATCH_ELECTRICITYMAPS_API_KEY")
        return ElectricityMapsApi(settings.electricitymaps_api_key.get_secret_value(), http,
                                  settings.electricitymaps_url, cache_from_settings(settings))
    if choice == "watttime":
        if not settings.watttime_username or settings.watttime_password is None:
            raise ConfigError("carbon_api watttime needs ECOBATCH_WATTTIME_USERNAME and _PASSWORD")
        return WattTimeApi(settings.watttime_username,
                           settings.watttime_password.get_secret_value(),
                           settings.watttime_regions, http, settings.watttime_url,
                           cache_from_settings(settings))
    raise ConfigError(f"unknown carbon_api {choice!r} (known: electricitymaps, watttime)")


class LiveGrid:
    """Grid conditions with live carbon and the packaged trace's price and temperature.

    Args:
        carbon: the live carbon source (a :class:`LiveCarbon`).
        rest: answers price and temperature (the packaged ``GridTrace``).
    """

    def __init__(self, carbon: CarbonSource, rest: GridConditions) -> None:
        self.carbon, self.rest = carbon, rest

    def intensity_g_per_kwh(self, zone: str, at: datetime) -> float:
        """Live gCO2e/kWh (see :class:`LiveCarbon`)."""
        return self.carbon.intensity_g_per_kwh(zone, at)

    def intensity_reading(self, zone: str, at: datetime) -> IntensityReading:
        """Live gCO2e/kWh with the signal that answered."""
        return read_intensity(self.carbon, zone, at)

    def price_usd_per_kwh(self, zone: str, at: datetime) -> float | None:
        """The trace's price."""
        return self.rest.price_usd_per_kwh(zone, at)

    def temperature_c(self, zone: str, at: datetime) -> float | None:
        """The trace's temperature."""
        return self.rest.temperature_c(zone, at)


def grid_from_settings(settings: Any, trace: GridConditions) -> GridConditions:
    """``trace`` itself, or with live carbon (falling back to ``trace``) when
    ``settings.carbon_api`` names an API."""
    api = carbon_api_from_settings(settings)
    return trace if api is None else LiveGrid(LiveCarbon(api, fallback=trace), trace)

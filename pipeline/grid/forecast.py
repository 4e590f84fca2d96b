"""Carbon-intensity forecasts for the next 24-72 hours, from an API or offline from a trace.

The offline forecast is the seasonal-naive one: each future hour is the mean of the same hour
on the ``days`` days before the forecast was made. It uses only the past, so a planner deferring
work against it is not handed the future it will be accounted at (unlike replaying the trace
itself, ``GridTrace.forecast``, which is a perfect forecast and only an upper bound).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

from pipeline.errors import DataSourceError
from pipeline.grid.carbon_api import CarbonApi, Points
from pipeline.grid.hourly import hour_start
from pipeline.grid.trace import CarbonSource

log = logging.getLogger(__name__)
MAX_HOURS: Final = 72
HOUR: Final = timedelta(hours=1)


def _check_hours(hours: int) -> None:
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"forecast hours must be 1..{MAX_HOURS}, got {hours}")


def same_hour_forecast(source: CarbonSource, zone: str, start: datetime, hours: int,
                       days: int = 7) -> Points:
    """``hours`` hourly values from the hour holding ``start``, each the mean of the same hour of
    day over the ``days`` days before that hour.

    Raises:
        ValueError: ``hours`` outside 1..72, ``days`` < 1, or a naive ``start``.
    """
    _check_hours(hours)
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    first = hour_start(start)
    out = []
    for k in range(hours):
        # The same hour of day, d days before ``first``: always in the past, for any k.
        past = [source.intensity_g_per_kwh(zone, first - timedelta(days=d) + (k % 24) * HOUR)
                for d in range(1, days + 1)]
        out.append((first + k * HOUR, sum(past) / len(past)))
    return out


class Forecaster:
    """Forecasts from a live API where the plan allows it, else from a carbon source's past.

    Args:
        history: a carbon source with past hours (the packaged trace, a CSV folder).
        api: a live API, or None to stay offline.
        days: days averaged by the offline forecast.
    """

    def __init__(self, history: CarbonSource, api: CarbonApi | None = None, days: int = 7) -> None:
        self.history, self.api, self.days = history, api, days

    def forecast(self, zone: str, start: datetime, hours: int) -> Points:
        """``hours`` hourly (UTC hour, gCO2e/kWh) values from the hour holding ``start``.

        Raises:
            ValueError: ``hours`` outside 1..72.
        """
        _check_hours(hours)
        if self.api is not None:
            try:
                points = self.api.forecast(zone, hours + 1)
                return _window(points, hour_start(start), hours)
            except DataSourceError as e:
                log.warning("%s forecast unavailable (%s); using the same hours of the past %d "
                            "days", self.api.name, e, self.days)
        return same_hour_forecast(self.history, zone, start, hours, self.days)


def _window(points: Points, first: datetime, hours: int) -> Points:
    by_hour = dict(points)
    wanted = [first + k * HOUR for k in range(hours)]
    missing = [h for h in wanted if h not in by_hour]
    if missing:
        raise DataSourceError(f"forecast lacks {len(missing)} of {hours} hours "
                              f"from {first:%Y-%m-%dT%H}Z")
    return [(h, by_hour[h]) for h in wanted]

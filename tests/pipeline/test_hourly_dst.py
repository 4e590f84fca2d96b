"""Daylight saving in local-time price files: both clock changes of every zone read right.

A file in local time has a skipped hour when clocks go forward and a repeated hour when they
go back. Every UTC hour must still get exactly its own value, in the northern and southern
hemispheres, and in the layout publishers really use (24 rows a day: a placeholder at the
skipped hour, the repeated hour given once).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.grid.hourly import PriceFolder, read_price_csv

HOURLY = Path(__file__).resolve().parents[1] / "fixtures" / "hourly"
HOUR = timedelta(hours=1)
# Northern (Berlin, London, Los Angeles) and southern hemisphere (Sydney; Santiago, whose
# clocks change at midnight, so the skipped local time is 00:00).
ZONES = ["Europe/Berlin", "Europe/London", "America/Los_Angeles", "Australia/Sydney",
         "America/Santiago"]


def local_time_file(zone: ZoneInfo, first: datetime, hours: int) -> str:
    """A price CSV with one row per UTC hour, written at its naive local wall time; the value
    is the hour's index, so every read-back can be checked exactly."""
    rows = ["Datetime,Price (EUR/MWh)"]
    for k in range(hours):
        wall = (first + k * HOUR).astimezone(zone).replace(tzinfo=None)
        rows.append(f"{wall:%Y-%m-%d %H:%M:%S},{k}")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("name", ZONES)
def test_every_utc_hour_of_a_year_in_local_time_reads_back_exactly(name: str) -> None:
    zone = ZoneInfo(name)
    first = datetime(2024, 1, 1, tzinfo=UTC)
    hours = 366 * 24
    text = local_time_file(zone, first, hours)
    series, _ = read_price_csv(text, zone)
    assert len(series.values) == hours
    wrong = [k for k in range(hours) if series.at(first + k * HOUR) != k]
    assert wrong == []


@pytest.mark.parametrize(("name", "day", "local_rows"), [
    ("Europe/Berlin", "2024-03-31", 23), ("Europe/Berlin", "2024-10-27", 25),
    ("Australia/Sydney", "2024-04-07", 25), ("Australia/Sydney", "2024-10-06", 23),
])
def test_the_transition_days_themselves(name: str, day: str, local_rows: int) -> None:
    """On the day clocks change, the local file has 23 or 25 rows; all map to distinct hours."""
    zone = ZoneInfo(name)
    start = datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(UTC)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC)
    hours = int((end - start) / HOUR)
    assert hours == local_rows
    series, _ = read_price_csv(local_time_file(zone, start, hours), zone)
    assert [series.at(start + k * HOUR) for k in range(hours)] == list(range(hours))


def test_berlin_as_published_every_utc_hour_has_a_price(tmp_path: Path) -> None:
    """The real DE-LU file: 24 rows a day, a placeholder at the skipped 02:00 of March 31 and a
    single row for the repeated 02:00 of October 27 (01:00Z used to be missing, and the repeat
    was read as 00:00Z)."""
    (tmp_path / "DE-LU_2024.csv").write_bytes((HOURLY / "DE-LU_2024_dst_prices.csv").read_bytes())
    prices = PriceFolder(tmp_path, {"DE-LU": ZoneInfo("Europe/Berlin")}, usd_per={"EUR": 1000.0})
    # usd_per 1000 makes USD/kWh read as EUR/MWh, so the figures compare with the file's
    for day in ("2024-03-31", "2024-10-27"):
        first = datetime.fromisoformat(day).replace(tzinfo=UTC) - 2 * HOUR
        got = [prices.price_usd_per_kwh("DE-LU", first + k * HOUR) for k in range(26)]
        assert None not in got
    at = datetime(2024, 10, 27, tzinfo=UTC)
    # 01:00 CEST = 23:00Z; the repeated 02:00 (81.33) is both 00:00Z and 01:00Z; 03:00 CET = 02:00Z
    assert [prices.price_usd_per_kwh("DE-LU", at + k * HOUR) for k in range(-1, 3)] == \
        pytest.approx([84.0, 81.33, 81.33, 79.41])
    spring = datetime(2024, 3, 31, tzinfo=UTC)
    # 01:00 CET = 00:00Z (66.71); the placeholder 02:00 names no instant; 03:00 CEST = 01:00Z
    assert [prices.price_usd_per_kwh("DE-LU", spring + k * HOUR) for k in range(-1, 3)] == \
        pytest.approx([75.7, 66.71, 64.98, 60.48])


def test_timestamps_with_an_offset_are_taken_as_written() -> None:
    text = ("Datetime,Price (EUR/MWh)\n2024-10-27T02:00:00+02:00,1\n"
            "2024-10-27T02:00:00+01:00,2\n")
    series, _ = read_price_csv(text, ZoneInfo("Australia/Sydney"))
    assert series.values == {datetime(2024, 10, 27, 0, tzinfo=UTC): 1.0,
                             datetime(2024, 10, 27, 1, tzinfo=UTC): 2.0}

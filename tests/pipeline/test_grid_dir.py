"""ECOBATCH_GRID_DIR: your own grid files add zones to the packaged ones; a device's grid
conditions come from one function; a registry is checked against the data when loaded."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry, load_registry
from pipeline.grid.data import GridData, check_registry, checked_registry
from pipeline.grid.trace import GridTrace, device_conditions
from pipeline.settings import load_settings
from tests.gridfiles import (
    packaged_layout_rows,
    write_em_csv,
    write_open_meteo,
    write_price_csv,
    write_rows,
)

JUNE = datetime(2024, 6, 3, 12, tzinfo=UTC)
NO_LIVE = lambda zone: False  # noqa: E731


def sg_dir(tmp_path: Path) -> Path:
    """SG carbon for 48 hours from 2024-06-03 00:00 UTC: 400 + hour index; no price, no weather."""
    folder = tmp_path / "grid"
    folder.mkdir(exist_ok=True)
    write_em_csv(folder / "SG_2024_hourly.csv", "SG", datetime(2024, 6, 3),
                 [400.0 + k for k in range(48)])
    return folder


def test_a_user_zone_is_added_next_to_the_packaged_ones(tmp_path: Path) -> None:
    grid = GridData(sg_dir(tmp_path))
    assert grid.zones() == ["AU-NSW", "AU-VIC", "DE-LU", "GB", "SG", "US-CAL-CISO"]
    assert grid.intensity_g_per_kwh("SG", JUNE) == 412.0
    # replayed for any year, as the packaged traces are: 2026-06-03 12:00 reads 2024's hour
    assert grid.intensity_g_per_kwh("SG", JUNE.replace(year=2026)) == 412.0
    # carbon but no price or temperature: missing (None), never zero
    assert grid.price_usd_per_kwh("SG", JUNE) is None and grid.temperature_c("SG", JUNE) is None
    assert grid.intensity_g_per_kwh("GB", JUNE) == GridTrace().intensity_g_per_kwh("GB", JUNE)
    with pytest.raises(ConfigError, match=r"carbon SG: no carbon intensity for 2024-06-06T12"):
        grid.intensity_g_per_kwh("SG", datetime(2024, 6, 6, 12, tzinfo=UTC))


def test_user_files_override_a_packaged_series_one_by_one(tmp_path: Path) -> None:
    folder = tmp_path / "grid"
    folder.mkdir()
    write_em_csv(folder / "GB_2024_hourly.csv", "GB", datetime(2024, 6, 3), [10.0] * 24)
    write_price_csv(folder / "GB_2024.csv", "EUR", datetime(2024, 6, 3), [100.0] * 24)
    write_open_meteo(folder / "SG_2024.json", 8 * 3600, datetime(2024, 6, 3, 8), [30.0] * 24)
    grid = GridData(folder)
    assert grid.intensity_g_per_kwh("GB", JUNE) == 10.0  # yours
    assert grid.price_usd_per_kwh("GB", JUNE) == pytest.approx(100.0 * 1.08 / 1000)  # yours
    assert grid.temperature_c("GB", JUNE) == GridTrace().temperature_c("GB", JUNE)  # packaged
    assert grid.temperature_c("SG", JUNE) == 30.0  # Open-Meteo local 20:00 at +8 is 12:00Z
    assert "SG" not in grid.zones()  # weather alone routes nothing: no carbon
    assert "SG" in grid.zones("temperature")


def test_the_packaged_layout_in_your_folder_reads_blank_cells_as_missing(tmp_path: Path) -> None:
    folder = tmp_path / "grid"
    folder.mkdir()
    trace = GridTrace().trace("GB")
    rows = packaged_layout_rows(lambda k: k == 0)
    write_rows(folder / "grid_XX.csv", rows)
    grid = GridData(folder)
    first = datetime(2024, 1, 1, tzinfo=UTC)
    assert grid.temperature_c("XX", first) is None  # blank: missing, not an error
    assert grid.intensity_g_per_kwh("XX", first) == trace.carbon_g_per_kwh[0]
    assert grid.price_usd_per_kwh("XX", first) is None
    rows[4] = rows[4].replace(f",{trace.carbon_g_per_kwh[3]},", ",abc,")  # file line 5
    write_rows(folder / "grid_XX.csv", rows)
    with pytest.raises(ConfigError, match=r"grid_XX\.csv line 5: could not convert"):
        GridData(folder).intensity_g_per_kwh("XX", first)


def test_errors_in_your_files_name_the_file_and_line(tmp_path: Path) -> None:
    folder = sg_dir(tmp_path)
    (folder / "SG_2024_hourly.csv").write_text(
        (folder / "SG_2024_hourly.csv").read_text().replace("412.0", "4l2"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"SG_2024_hourly\.csv line 14: could not convert"):
        GridData(folder).intensity_g_per_kwh("SG", JUNE)
    (folder / "XX_2024.csv").write_text("when,what\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"XX_2024\.csv line 1: not a layout"):
        GridData(folder).zones()


def test_no_default_zone_a_device_has_a_zone_or_a_fixed_intensity(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "box"\nkind = "cpu"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(
            "device #1 ('box'): needs a grid zone (e.g. zone = \"GB\") or a fixed "
            "intensity_g_per_kwh: there is no default zone")):
        load_registry(path)
    path.write_text('[[device]]\nname = "box"\nkind = "cpu"\nintensity_g_per_kwh = 50\n',
                    encoding="utf-8")
    box = load_registry(path).devices[0]
    assert box.zone is None and box.grid_label == "fixed 50 g/kWh"


def test_one_function_gives_a_devices_conditions() -> None:
    grid = GridTrace()
    fixed = Device(name="f", kind="cpu", intensity_g_per_kwh=50.0)
    assert device_conditions(grid, fixed, JUNE).intensity_g_per_kwh == 50.0
    assert device_conditions(grid, fixed, JUNE).price_usd_per_kwh is None
    both = Device(name="b", kind="cpu", zone="DE-LU", intensity_g_per_kwh=50.0)
    c = device_conditions(grid, both, JUNE)
    assert c.intensity_g_per_kwh == 50.0  # fixed wins over DE-LU's trace
    assert c.price_usd_per_kwh == grid.price_usd_per_kwh("DE-LU", JUNE)
    assert c.temperature_c == grid.temperature_c("DE-LU", JUNE)
    assert both.grid_label == "fixed 50 g/kWh, zone DE-LU"


def test_the_registry_check_names_device_zone_known_zones_and_the_fix(tmp_path: Path) -> None:
    reg = Registry(devices=[Device(name="gb", kind="cpu", zone="GB"),
                            Device(name="sg", kind="cpu", zone="SG")])
    with pytest.raises(ConfigError) as caught:
        check_registry(reg, GridData(), NO_LIVE, "device registry r.toml")
    message = str(caught.value)
    for part in ("device registry r.toml: device 'sg'", "grid zone 'SG' has no carbon data",
                 "AU-NSW, AU-VIC, DE-LU, GB, US-CAL-CISO", "SG_<YEAR>_hourly.csv",
                 "ECOBATCH_GRID_DIR", "intensity_g_per_kwh"):
        assert part in message
    check_registry(reg, GridData(sg_dir(tmp_path)), NO_LIVE, "r")  # now known
    check_registry(reg, GridData(), lambda zone: zone == "SG", "r")  # a live API answers SG


def test_a_fixed_device_may_name_a_zone_only_for_price_and_temperature(tmp_path: Path) -> None:
    typo = Registry(devices=[Device(name="f", kind="cpu", zone="G8", intensity_g_per_kwh=5.0)])
    with pytest.raises(ConfigError, match="device 'f': grid zone 'G8' has no price or temp"):
        check_registry(typo, GridData(), NO_LIVE, "r")


def test_checked_registry_reads_the_settings_and_refuses_a_bad_file(tmp_path: Path) -> None:
    folder = sg_dir(tmp_path)
    path = tmp_path / "devices.toml"
    path.write_text('[[device]]\nname = "sg"\nkind = "cpu"\nzone = "SG"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="device 'sg': grid zone 'SG' has no carbon data"):
        checked_registry(load_settings(devices=path, grid_dir=None))
    assert checked_registry(load_settings(devices=path, grid_dir=folder)).names == ["sg"]
    (folder / "SG_2024.csv").write_text("Datetime,Price (EUR/MWh)\n2024-06-03 00:00:00,x\n")
    with pytest.raises(ConfigError, match=r"zone 'SG': .*SG_2024\.csv line 2"):
        checked_registry(load_settings(devices=path, grid_dir=folder))
    with pytest.raises(ConfigError, match="setting 'grid_dir'"):
        load_settings(grid_dir=tmp_path / "absent")

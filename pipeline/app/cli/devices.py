"""``ecobatch bench`` and ``ecobatch devices``: benchmark a device, list the registry.

An entry point: it may import ``pipeline``, ``router`` and ``workers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from pipeline.app.cli.common import (
    build_settings,
    database_url_option,
    devices_option,
    handle_errors,
    make_console,
)
from pipeline.app.context import AppContext
from pipeline.errors import ConfigError, EcobatchError
from pipeline.fleet.devices import Device, Registry, load_registry
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.fleet.servedmodels import BUNDLED_MODELS
from pipeline.grid.trace import GridConditions, device_conditions
from pipeline.ledger.db import make_engine
from pipeline.settings import Settings
from router.predict.profiled import profile_status, recommended_batch_size
from workers.backends.factory import build_backend
from workers.bench.run import (
    ProfileRow,
    default_prompts,
    describe_energy_source,
    load_prompts,
    run_bench,
    store_profile,
)
from workers.meters import make_meter

DEFAULT_BATCH_SIZES = "1,2,4,8,16"
MIB = 1024**2
GIB = 1024**3


def parse_batch_sizes(
    _ctx: click.Context | None, _param: click.Parameter | None, value: str
) -> list[int]:
    """Parse ``"1,2,4"`` into ``[1, 2, 4]`` (duplicates dropped, order kept).

    Raises:
        click.BadParameter: an entry is not a positive integer, or the list is empty.
    """
    sizes: list[int] = []
    for part in value.split(","):
        text = part.strip()
        if not text.isdigit() or int(text) < 1:
            raise click.BadParameter(f"{text!r} is not a positive integer")
        if int(text) not in sizes:
            sizes.append(int(text))
    return sizes


def check_batch_sizes(device: Device, sizes: Sequence[int]) -> None:
    """Refuse batch sizes the device's registry entry does not allow.

    Raises:
        ConfigError: a size exceeds ``device.max_batch_size``.
    """
    too_big = [s for s in sizes if s > device.max_batch_size]
    if too_big:
        raise ConfigError(
            f"batch size {too_big[0]} exceeds max_batch_size {device.max_batch_size} of device "
            f"{device.name!r}; use smaller --batch-sizes or raise max_batch_size in the registry"
        )


def pick_device(registry: Registry, name: str | None) -> Device:
    """The device called ``name``, or the only device when no name is given.

    Raises:
        UnknownDeviceError: no device has that name.
        ConfigError: no name was given and the registry has several devices.
    """
    if name is not None:
        return registry.get(name)
    if len(registry.devices) == 1:
        return registry.devices[0]
    raise ConfigError(f"several devices; choose one with --device ({', '.join(registry.names)})")


def _bench_device(settings: Settings, device_name: str | None, model: Path | None) -> Device:
    """The device to bench, with the one model file it will load: ``--model`` (a GGUF file,
    or the name of one of the device's served models), else the device's first model."""
    device = pick_device(load_registry(settings.devices), device_name)
    served = {**BUNDLED_MODELS, **{m.name: m for m in device.served_models(settings.model)}}
    if model is not None and not model.is_file() and str(model) in served:
        path = served[str(model)].resolve(device.model or settings.model)
    elif model is not None:
        # An explicit --model wins over the registry, unlike ECOBATCH_MODEL.
        path = resolve_model_path(model)
    else:
        path = device.served_models(settings.model)[0].resolve(device.model or settings.model)
    return device.model_copy(update={"model": path, "models": None})


def _run_with_progress(console: Console, settings: Settings, device: Device,
                       prompts: list[str], sizes: list[int], repeats: int,
                       max_tokens: int) -> tuple[str, list[ProfileRow]]:
    with console.status(f"loading model for {device.name}"):
        backend = build_backend(device, settings)
        meter = make_meter(device)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"bench {device.name}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        rows = run_bench(backend, meter, prompts, sizes, repeats, max_tokens, progress=advance)
    return Path(backend.model_path).name, rows


def profile_table(title: str, rows: Sequence[ProfileRow]) -> Table:
    """A rich table of profile rows, one line per batch size, captioned with the energy source."""
    caption = ", ".join(sorted({describe_energy_source(r.energy_source, r.energy_measured)
                                for r in rows}))
    table = Table(title=title, caption=f"energy {caption}" if rows else None)
    for header in ("batch", "TTFT s", "latency s", "tok/s", "J/batch", "J/token", "W",
                   "peak MiB"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("energy source")
    for r in rows:
        table.add_row(
            str(r.batch_size), f"{r.ttft_s:.3f}", f"{r.latency_s:.2f}", f"{r.tokens_per_s:.1f}",
            f"{r.energy_j:.1f}", f"{r.j_per_token:.4f}", f"{r.avg_power_w:.1f}",
            f"{r.peak_memory_bytes / MIB:.0f}", r.energy_source,
        )
    return table


@click.command()
@click.option("--device", "device_name", metavar="NAME",
              help="Device to benchmark, by registry name (default: the only device).")
@click.option("--batch-sizes", default=DEFAULT_BATCH_SIZES, show_default=True,
              callback=parse_batch_sizes, help="Comma-separated batch sizes, in prompts per batch.")
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Prompt file: one prompt per line, or JSONL with a 'prompt' "
              "field (default: 32 short built-in questions).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Passes over the prompt set at each batch size (count).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="New-token limit per prompt, in tokens.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG chart of J/token and tokens/s against batch size here.")
@database_url_option
@devices_option
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="GGUF model file, or the name of a served or bundled model (gemma3-270m); "
              "overrides the device's model [default: the registry's first, else "
              "ECOBATCH_MODEL, else SmolLM2-135M]. Profiles are stored per model file.")
@handle_errors
def bench(device_name: str | None, batch_sizes: list[int], prompts_file: Path | None,
          repeats: int, max_tokens: int, plot_path: Path | None, database_url: str | None,
          devices: Path | None, model: Path | None) -> None:
    """Measure latency, throughput and energy of a device at each batch size.

    Stores one profile row per batch size in the ledger (replacing the device's older profile
    for the same model); the router predicts from these rows.
    """
    settings = build_settings(database_url=database_url, devices=devices)
    device = _bench_device(settings, device_name, model)
    check_batch_sizes(device, batch_sizes)
    prompts = load_prompts(prompts_file) if prompts_file else default_prompts()
    engine = make_engine(settings.database_url)
    console = make_console()
    model_name, rows = _run_with_progress(
        console, settings, device, prompts, batch_sizes, repeats, max_tokens
    )
    console.print(profile_table(f"{device.name} - {model_name}", rows))
    store_profile(engine, device.name, model_name, rows)
    console.print(f"stored profile of {device.name} ({len(rows)} batch sizes)")
    if plot_path is not None:
        from workers.bench.plot import plot_profile  # matplotlib is slow to import; only when asked

        plot_profile(rows, plot_path, device=device.name, model=model_name)
        console.print(f"wrote {plot_path}")


def _meter_label(device: Device) -> str:
    try:
        meter = make_meter(device)
    except EcobatchError as e:
        return f"unavailable here ({e})"
    return f"{meter.source} ({'measured' if meter.measured else 'estimated'})"


def devices_table(engine: Engine, registry: Registry, latency_target_s: float, *,
                  detected: bool = False) -> Table:
    """A rich table of every device with its grid (zone or fixed intensity), meter, profile
    status and recommended batch size.

    The recommended size is the benchmarked one with the least J/token whose batch latency
    meets ``latency_target_s``. ``detected`` marks the zone of a detected device as assumed.
    """
    status = profile_status(engine, registry)
    table = Table(title="devices")
    for header in ("name", "kind", "grid", "meter", "memory GiB", "TDP W", "profile"):
        table.add_column(header, no_wrap=header not in ("meter", "profile"))
    table.add_column(f"best batch (latency <= {latency_target_s:g} s)", justify="right")
    for d in registry.devices:
        recommended = recommended_batch_size(engine, d, latency_target_s)
        label = f"{d.grid_label} (assumed: no registry)" if detected else d.grid_label
        table.add_row(
            d.name, d.kind, label, _meter_label(d), f"{d.memory_bytes / GIB:.1f}",
            f"{d.tdp_w:.0f}", status.get(d.name) or "nominal (no profile)",
            "-" if recommended is None else str(recommended),
        )
    return table


def models_table(registry: Registry, default_model: Path | None) -> Table:
    """Every served model of every device: its file or package, quality score and the score's
    source (what a job's ``min_quality`` is compared with)."""
    table = Table(title="models")
    for header in ("device", "model", "file", "quality", "quality source"):
        table.add_column(header, no_wrap=header in ("device", "model", "quality"))
    for d in registry.devices:
        for m in d.served_models(default_model):
            where = (f"package {m.package}" if m.package
                     else str(m.path or default_model or "the default model"))
            table.add_row(d.name, m.name, where, "unknown" if m.quality is None
                          else f"{m.quality:g}", m.quality_source or "-")
    return table


def grid_table(registry: Registry, grid: GridConditions, at: datetime) -> Table:
    """Each device's grid figures at ``at`` as routing prices and workers account them
    (:func:`~pipeline.grid.trace.device_conditions`): '-' where a figure is missing, and why where
    none can be read."""
    table = Table(title=f"grid now ({at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    for header in ("name", "grid", "gCO2e/kWh", "USD/kWh", "temperature C"):
        table.add_column(header, justify="left" if header in ("name", "grid") else "right")
    for d in registry.devices:
        try:
            c = device_conditions(grid, d, at)
        except EcobatchError as e:
            table.add_row(d.name, d.grid_label, f"no data: {e}", "-", "-")
            continue
        table.add_row(d.name, d.grid_label, f"{c.intensity_g_per_kwh:.1f}",
                      "-" if c.price_usd_per_kwh is None else f"{c.price_usd_per_kwh:.4f}",
                      "-" if c.temperature_c is None else f"{c.temperature_c:.1f}")
    return table


@click.command()
@devices_option
@database_url_option
@handle_errors
def devices(devices: Path | None, database_url: str | None) -> None:
    """List the devices: kind, grid (zone, or fixed gCO2e/kWh), energy meter, memory, TDP and
    benchmark profile; then each device's grid intensity (gCO2e/kWh), price (USD/kWh) and
    temperature (C) now, as the router reads them ('-' where missing); then the models each
    serves with their quality score (0-100) and its source.

    The registry is checked against the grid data (ECOBATCH_GRID_DIR adds zones). The last
    column is the benchmarked batch size (prompts) with the least energy per token whose batch
    latency meets ECOBATCH_LATENCY_TARGET_S (seconds); '-' without a profile.
    """
    ctx = AppContext(build_settings(database_url=database_url, devices=devices))
    registry = ctx.registry  # a bad registry is refused before the ledger is created
    engine = make_engine(ctx.settings.database_url)
    console = make_console()
    console.print(devices_table(engine, registry, ctx.settings.latency_target_s,
                                detected=ctx.settings.devices is None))
    # With ECOBATCH_GRID_AT every process reads the grid as at that hour: so does this table.
    console.print(grid_table(registry, ctx.grid, ctx.settings.grid_at or datetime.now(UTC)))
    console.print(models_table(registry, ctx.settings.model))

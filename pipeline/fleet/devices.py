"""The device registry: devices read from TOML, or the local machine detected.

A registry file holds one ``[[device]]`` table per device::

    [[device]]
    name = "ada2000"          # queue device.ada2000
    kind = "nvidia"           # nvidia | jetson | cpu
    index = 0                 # GPU index (nvidia, as nvidia-smi numbers it), ignored otherwise
    uuid = "GPU-8f6b..."      # or the GPU's UUID (nvidia-smi -L), which wins over index
    host = "edge-1"           # informational
    memory_gb = 16.0
    tdp_w = 70.0
    zone = "DE-LU"            # grid zone of the carbon/price/weather data (required unless
                              # intensity_g_per_kwh fixes the intensity; there is no default)
    pue = 1.2                 # fixed PUE, or pue_curve = [[temp_c, pue], ...]
    wue_l_per_kwh = 0.5       # site water use per kWh of IT energy
    embodied_kgco2e = 150.0
    lifetime_years = 5.0
    model = "/models/x.gguf"  # optional, overrides ECOBATCH_MODEL
    # or several models: bundled names and/or [[device.models]] tables with a quality score
    # models = ["smollm2-135m-instruct", "gemma3-270m"]  (see pipeline/fleet/servedmodels.py)
    n_gpu_layers = -1
    max_batch_size = 16
    nominal_tokens_per_s = 400.0   # used until a benchmark profile exists
    # optional accounting fields: intensity_g_per_kwh (fixed), pue_model / wue_model /
    # wue_curve (temperature models), embodied_parts, host_share, host_tdp_w
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

import psutil
from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError, UnknownDeviceError
from pipeline.fleet.servedmodels import (
    BUNDLED_MODELS,
    ServedModel,
    bundled_model,
    single_model,
)

DeviceKind = Literal["nvidia", "jetson", "cpu"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def device_queue(device_name: str) -> str:
    """The Celery queue a device's worker consumes, by device name: ``device.<name>``."""
    return f"device.{device_name}"


class Device(BaseModel):
    """One inference device and the site it sits in."""

    model_config = {"frozen": True, "extra": "forbid"}

    name: str
    kind: DeviceKind
    index: int = 0
    uuid: str | None = Field(default=None, pattern=r"^GPU-[0-9A-Fa-f-]+$")  # wins over index
    host: str = "localhost"
    memory_gb: PositiveFloat = 8.0
    tdp_w: PositiveFloat = 65.0
    zone: str | None = None  # required unless intensity_g_per_kwh is set: no default zone
    pue: PositiveFloat = 1.2
    pue_curve: list[tuple[float, float]] | None = None
    wue_l_per_kwh: float = Field(default=0.5, ge=0)
    embodied_kgco2e: float = Field(default=100.0, ge=0)
    lifetime_years: PositiveFloat = 5.0
    model: Path | None = None
    models: tuple[ServedModel, ...] | None = None  # several models; bundled ones by name
    n_gpu_layers: int = 0
    max_batch_size: PositiveInt = 16
    nominal_tokens_per_s: PositiveFloat = 50.0
    # Sustainability accounting (all optional; see pipeline/accounting/site.py and
    # pipeline/accounting/embodied.py).
    intensity_g_per_kwh: float | None = Field(default=None, ge=0)  # fixed, instead of the zone's
    pue_model: str | None = None  # a documented PUE(temperature) model of pipeline/accounting/site.py
    wue_model: str | None = None  # a documented WUE(temperature) model of pipeline/accounting/site.py
    wue_curve: list[tuple[float, float]] | None = None  # [[temp_c, L/kWh], ...]
    embodied_parts: list[str] | None = None  # e.g. ["cpu:genoa-80c", "dram:ddr5-64gb"]
    host_share: float = Field(default=1.0, ge=0, le=1)  # of the host's RAPL energy, GPU devices
    host_tdp_w: PositiveFloat | None = None  # host CPU TDP for the host estimate (GPU devices)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _bundled_by_name(cls, v: object) -> object:
        if not isinstance(v, list):
            return v
        try:
            return [_served_entry(m) for m in v]
        except ConfigError as e:
            raise ValueError(str(e)) from e

    @model_validator(mode="after")
    def _models_distinct(self) -> Device:
        if self.models is None:
            return self
        if self.model is not None:
            raise ValueError("give model (one file) or models (several), not both")
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"models must be distinct and not empty, got {names}")
        return self

    def served_models(self, default: Path | None = None) -> list[ServedModel]:
        """The models this device serves: its ``models``, else its one ``model`` (or
        ``default``, ``ECOBATCH_MODEL``; else the bundled SmolLM2)."""
        if self.models is not None:
            return list(self.models)
        return [single_model(self.model or default)]

    def served_model(self, name: str | None, default: Path | None = None) -> ServedModel:
        """The served model called ``name`` (None: the first).

        Raises:
            ConfigError: the device does not serve it.
        """
        served = self.served_models(default)
        if name is None:
            return served[0]
        for m in served:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in served)
        raise ConfigError(f"device {self.name} does not serve model {name!r} (it serves {known})")

    @model_validator(mode="after")
    def _zone_or_fixed_intensity(self) -> Device:
        if self.zone is None and self.intensity_g_per_kwh is None:
            raise ValueError("needs a grid zone (e.g. zone = \"GB\") or a fixed "
                             "intensity_g_per_kwh: there is no default zone")
        return self

    @property
    def grid_label(self) -> str:
        """Where the device's grid figures come from: ``"GB"``, ``"fixed 50 g/kWh"`` or
        ``"fixed 50 g/kWh, zone GB"`` (the zone then gives only price and temperature)."""
        if self.intensity_g_per_kwh is None:
            return str(self.zone)
        fixed = f"fixed {self.intensity_g_per_kwh:g} g/kWh"
        return fixed if self.zone is None else f"{fixed}, zone {self.zone}"

    @property
    def queue(self) -> str:
        """Celery queue this device's worker consumes (see :func:`device_queue`)."""
        return device_queue(self.name)

    @property
    def memory_bytes(self) -> int:
        """Device memory in bytes."""
        return int(self.memory_gb * 1024**3)


def _served_entry(entry: object) -> object:
    """A ``models`` entry as :class:`ServedModel` takes it: a bundled model's name is that
    model; a table naming a bundled model without a file of its own overrides its fields
    (say, its ``nominal_tokens_per_s`` on this device)."""
    if isinstance(entry, str):
        return bundled_model(entry)
    if isinstance(entry, dict) and "path" not in entry and "package" not in entry:
        name = entry.get("name")
        if isinstance(name, str) and name in BUNDLED_MODELS:
            return {**BUNDLED_MODELS[name].model_dump(exclude_none=True), **entry}
    return entry


class Registry(BaseModel):
    """All devices, in registry order (the order ``greedy`` tries them in)."""

    devices: list[Device]

    def get(self, name: str) -> Device:
        """Return the device called ``name``.

        Raises:
            UnknownDeviceError: no such device; the message lists the known ones.
        """
        for d in self.devices:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.devices) or "none"
        raise UnknownDeviceError(f"unknown device {name!r} (known: {known})")

    @property
    def names(self) -> list[str]:
        """Device names in registry order."""
        return [d.name for d in self.devices]


def read_device_tables(path: Path | str, what: str) -> list[object]:
    """The ``[[device]]`` tables of a TOML file (a registry, a simulated fleet).

    Raises:
        ConfigError: unreadable, not TOML, or no ``[[device]]`` table; the message starts with
            ``what`` and the path.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{what} {path}: {e}") from e
    entries = raw.get("device", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{what} {path}: no [[device]] tables")
    return entries


def load_registry(path: Path | None) -> Registry:
    """Read a TOML registry, or detect the local machine when ``path`` is None.

    Raises:
        ConfigError: the file is missing, not TOML, or a device does not validate.
    """
    if path is None:
        return Registry(devices=detect_local())
    entries = read_device_tables(path, "device registry")
    devices = [_parse_device(path, i, e) for i, e in enumerate(entries)]
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"device registry {path}: duplicate device names in {names}")
    return Registry(devices=devices)


def _parse_device(path: Path, i: int, entry: object) -> Device:
    try:
        return Device.model_validate(entry)
    except ValidationError as e:
        raise ConfigError(f"device registry {path}: {device_error(i, entry, e)}") from e


def device_error(i: int, entry: object, err: ValidationError) -> str:
    """``device #N field 'f': why`` for the ``i``-th (0-based) ``[[device]]`` table, or
    ``device #N ('name'): why`` for a rule across fields."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f" field {field!r}" if field else f" ({name!r})" if isinstance(name, str) else ""
    return f"device #{i + 1}{where}: {first['msg'].removeprefix('Value error, ')}"


DETECTED_ZONE = "DE-LU"
"""Grid zone given to a detected device (there is no registry to name one); ``ecobatch
devices`` says it is assumed, and a registry names the real zone."""


def detect_local() -> list[Device]:
    """Detect NVIDIA GPUs (NVML), else a Jetson (jetson-stats), else the CPU, in zone
    :data:`DETECTED_ZONE`."""
    return _detect_nvidia() or _detect_jetson() or [_cpu_device()]


def _detect_nvidia() -> list[Device]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # NVML absent or no driver: not an NVIDIA machine
        return []
    devices = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
        try:
            tdp_w = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
        except pynvml.NVMLError:
            tdp_w = 300.0
        devices.append(
            Device(name=f"gpu{i}", kind="nvidia", index=i, zone=DETECTED_ZONE,
                   uuid=str(pynvml.nvmlDeviceGetUUID(h)),
                   memory_gb=mem / 1024**3, tdp_w=tdp_w,
                   n_gpu_layers=-1, max_batch_size=64, nominal_tokens_per_s=800.0,
                   embodied_kgco2e=150.0, pue=1.12)
        )
    return devices


def _detect_jetson() -> list[Device]:
    if not Path("/etc/nv_tegra_release").exists():
        return []
    mem_gb = psutil.virtual_memory().total / 1024**3
    return [Device(name="jetson", kind="jetson", zone=DETECTED_ZONE, memory_gb=mem_gb,
                   tdp_w=25.0, n_gpu_layers=-1,
                   max_batch_size=8, nominal_tokens_per_s=60.0, embodied_kgco2e=30.0, pue=1.0)]


def _cpu_device() -> Device:
    mem_gb = psutil.virtual_memory().total / 1024**3
    cores = os.cpu_count() or 1
    # 10 W per core is a conservative nominal figure for a server core under load.
    return Device(name="cpu", kind="cpu", zone=DETECTED_ZONE, memory_gb=mem_gb,
                  tdp_w=10.0 * cores,
                  max_batch_size=16, nominal_tokens_per_s=20.0 * cores, embodied_kgco2e=300.0)

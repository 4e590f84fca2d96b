"""A simulated fleet: the device registry format plus counts, profiles and model memory.

A fleet file is a device registry (see :mod:`pipeline.fleet.devices`) whose ``[[device]]`` tables may
carry four keys the simulator reads and the registry does not:

- ``count``: how many identical devices the table describes (default 1); they are named
  ``NAME-001``, ``NAME-002``, ... (or just ``NAME`` when the count is 1);
- ``profile``: where latency and power come from: ``"nominal"`` (the registry figures, the
  default), ``"mlenergy:MODEL:GPU"`` (ML.ENERGY leaderboard measurements packaged in
  ``router/data``, e.g. ``"mlenergy:qwen3-8b:H100"``) or ``"bench:DEVICE"`` (the rows that
  ``ecobatch bench --device DEVICE`` stored in the profiles database);
- ``model_gb`` and ``kv_kib_per_token``: weights and KV cache per token of the served model,
  for the memory limit; without ``model_gb`` memory is not checked.

Every device of a table shares one fitted curve, so the predictor is the live
:class:`~router.predict.profiled.ProfilePredictor` with its nominal fallback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError
from sqlalchemy import Engine

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry, device_error, read_device_tables
from pipeline.ledger.models import DeviceProfile
from router.predict.predictor import BatchShape, Predictor
from router.predict.profiled import DeviceCurve, ProfilePredictor, fit_curve, load_profiles

SIM_KEYS = ("count", "profile", "model_gb", "kv_kib_per_token")
MLENERGY_MODELS = {"qwen3-8b": "mlenergy_qwen3_8b.json", "qwen3-14b": "mlenergy_qwen3_14b.json",
                   "qwen3-32b": "mlenergy_qwen3_32b.json"}
GIB = 1024**3
MemoryNeed = Callable[[Device, BatchShape], int | None]
T = TypeVar("T", int, NDArray[np.int64])


@dataclass(frozen=True)
class DeviceClass:
    """Identical devices from one ``[[device]]`` table.

    Attributes:
        members: the devices, in registry order.
        profile: the profile spec (``nominal``, ``mlenergy:...``, ``bench:...``).
        model_bytes: weights of the served model; None skips the memory limit.
        kv_bytes_per_token: KV cache per context token.
    """

    members: tuple[Device, ...]
    profile: str = "nominal"
    model_bytes: int | None = None
    kv_bytes_per_token: int = 0

    def need_bytes(self, tokens: T) -> T | None:
        """Memory a batch of ``tokens`` (prompt + new; a number or an array) needs on a
        member: weights plus KV cache; None when the model size is unknown."""
        if self.model_bytes is None:
            return None
        return self.model_bytes + self.kv_bytes_per_token * tokens


@dataclass
class Fleet:
    """Registry, predictor and device classes of a simulated fleet."""

    registry: Registry
    predictor: Predictor
    classes: list[DeviceClass] = field(default_factory=list)

    def memory_need(self) -> MemoryNeed | None:
        """Bytes a batch needs on a device (weights + KV of its tokens); None when unknown."""
        by_name = {d.name: c for c in self.classes for d in c.members}
        if all(c.model_bytes is None for c in self.classes):
            return None

        def need(device: Device, shape: BatchShape) -> int | None:
            return by_name[device.name].need_bytes(shape.prompt_tokens + shape.max_new_tokens)

        return need


def load_fleet(path: Path, profiles_engine: Engine | None = None) -> Fleet:
    """Read a fleet file and fit each table's profile.

    Args:
        path: the fleet TOML.
        profiles_engine: the database holding ``ecobatch bench`` profiles, for ``bench:`` specs.

    Raises:
        ConfigError: unreadable file, a bad device table (named by number and field), an
            unknown profile, or a ``bench:`` profile without rows.
    """
    entries = read_device_tables(path, "fleet")
    classes = [_parse_class(path, i, e) for i, e in enumerate(entries)]
    return build_fleet(classes, profiles_engine, str(path))


def build_fleet(classes: list[DeviceClass], profiles_engine: Engine | None = None,
                where: str = "fleet") -> Fleet:
    """Assemble a :class:`Fleet` from device classes, fitting their profiles.

    Raises:
        ConfigError: duplicate device names, an unknown profile or one without rows.
    """
    devices = [d for c in classes for d in c.members]
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: duplicate device names")
    curves: dict[str, DeviceCurve] = {}
    for cls in classes:
        curve = _curve_for(cls, profiles_engine, where)
        if curve is not None:
            curves.update({d.name: curve for d in cls.members})
    return Fleet(Registry(devices=devices), ProfilePredictor(curves), classes)


def _parse_class(path: Path, i: int, entry: Any) -> DeviceClass:
    if not isinstance(entry, dict):
        raise ConfigError(f"fleet {path}: device #{i + 1} is not a table")
    fields = {k: v for k, v in entry.items() if k not in SIM_KEYS}
    count = entry.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"fleet {path}: device #{i + 1} field 'count': must be an integer >= 1")
    try:
        base = Device.model_validate(fields)
        members = tuple(
            base if count == 1 else base.model_copy(update={"name": f"{base.name}-{k:03d}"})
            for k in range(1, count + 1))
    except ValidationError as e:
        raise ConfigError(f"fleet {path}: {device_error(i, entry, e)}") from e
    model_gb = entry.get("model_gb")
    kv_kib = entry.get("kv_kib_per_token", 0)
    return DeviceClass(members, str(entry.get("profile", "nominal")),
                       None if model_gb is None else int(float(model_gb) * GIB),
                       int(float(kv_kib) * 1024))


def _curve_for(cls: DeviceClass, engine: Engine | None, where: str) -> DeviceCurve | None:
    kind, _, rest = cls.profile.partition(":")
    device = cls.members[0]
    if kind == "nominal":
        return None
    if kind == "mlenergy":
        model, _, gpu = rest.partition(":")
        rows = mlenergy_rows(model, gpu or "H100")
    elif kind == "bench":
        rows = _bench_rows(device.model_copy(update={"name": rest or device.name}), engine, where)
    else:
        raise ConfigError(f"{where}: device {device.name!r}: unknown profile {cls.profile!r} "
                          "(use nominal, mlenergy:MODEL:GPU or bench:DEVICE)")
    curve = fit_curve(device, rows)
    if curve is None:
        raise ConfigError(f"{where}: device {device.name!r}: profile {cls.profile!r} has no "
                          "usable rows")
    return curve


def _bench_rows(probe: Device, engine: Engine | None, where: str) -> list[DeviceProfile]:
    """``ecobatch bench`` rows of the device named like ``probe``."""
    name = probe.name
    if engine is None:
        raise ConfigError(f"{where}: profile 'bench:{name}' needs a profiles database "
                          "(--profiles-db or ECOBATCH_DATABASE_URL)")
    rows = load_profiles(engine, Registry(devices=[probe])).get(name, [])
    if not rows:
        raise ConfigError(f"{where}: no `ecobatch bench` profile rows for device {name!r}")
    return rows


def mlenergy_rows(model: str, gpu: str) -> list[DeviceProfile]:
    """Profile rows from the packaged ML.ENERGY measurements of ``model`` on one ``gpu``.

    Each single-GPU configuration becomes a row at its mean batch size, with its measured
    output throughput (tokens/s over the batch) and average GPU power. The leaderboard reports
    no TTFT, so prefill falls back to the predictor's nominal prefill speed-up. These energies
    were measured by ML.ENERGY (GPU only, vLLM), not by ecobatch.

    Raises:
        ConfigError: unknown model, or no single-GPU configuration on ``gpu``.
    """
    file = MLENERGY_MODELS.get(model.lower())
    if file is None:
        raise ConfigError(f"unknown ML.ENERGY model {model!r} (known: {', '.join(MLENERGY_MODELS)})")
    data = json.loads(files("router").joinpath("data", file).read_text(encoding="utf-8"))
    rows = [
        DeviceProfile(device=f"mlenergy-{gpu}", model=str(data["model_id"]),
                      batch_size=max(1, round(c["avg_batch_size"])),
                      tokens_per_s=float(c["output_throughput_tokens_per_sec"]),
                      avg_power_w=float(c["avg_power_watts"]),
                      j_per_token=float(c["energy_per_token_joules"]),
                      energy_source="ML.ENERGY leaderboard (GPU, measured)", energy_measured=True)
        for c in data["configurations"]
        if str(c["gpu_model"]).lower() == gpu.lower() and int(c["num_gpus"]) == 1
    ]
    if not rows:
        raise ConfigError(f"ML.ENERGY {model}: no single-GPU configuration on {gpu!r}")
    return rows

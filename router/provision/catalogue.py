"""A catalogue of candidate hardware for ``ecobatch provision``: sites, device types, owned fleet.

A catalogue is a TOML file with three kinds of tables::

    [[site]]                 # where devices may go: a grid zone and its cooling
    name = "de"              # default: the zone
    zone = "DE-LU"
    pue = 1.2                # or pue_curve / pue_model, wue_l_per_kwh / wue_curve / wue_model

    [[device]]               # a device type: the fleet format (pipeline.fleet.devices.Device fields plus
    name = "h100"            # profile, model_gb, kv_kib_per_token; see router/sim/fleet.py) plus:
    kind = "nvidia"
    profile = "mlenergy:qwen3-8b:H100"
    gpu_embodied = "gpu:h100-sxm"   # key of router/data/hardware (or embodied_gpu_kgco2e = 150)
    host_embodied = "host:hgx-8gpu" # (or embodied_host_kgco2e = 5000); CPU servers: host only
    gpus_per_host = 8        # devices sharing one host (its embodied carbon, power and CPUs)
    price_usd = 30000        # per device, its host share included
    idle_power_w = 90        # the device idle
    host_power_w = 120       # the host's draw per device while powered
    host_cpu_tokens_per_s = 40      # offline tokens/s one host's CPUs add (Reduce); 0: none
    host_cpu_power_w = 200   # extra host watts while its CPUs serve
    lifetime_years = 5       # amortisation period
    max_lifetime_years = 8   # how long Recycle may keep one
    lean = false             # a lean-host variant, only offered with Reduce
    sites = ["de"]           # where it may go (default: every site)

    [[owned]]                # devices already owned (Reuse, Recycle)
    type = "v100"
    site = "de"
    count = 4
    age_years = 4

Embodied figures by key come from :mod:`router.provision.hardware`; a number in the file
overrides them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from router.provision.hardware import load_gpus, load_hosts
from router.sim.fleet import GIB, SIM_KEYS

SITE_KEYS = ("pue", "pue_curve", "pue_model", "wue_l_per_kwh", "wue_curve", "wue_model",
             "intensity_g_per_kwh")
PROVISION_KEYS = ("gpu_embodied", "embodied_gpu_kgco2e", "host_embodied", "embodied_host_kgco2e",
                  "gpus_per_host", "price_usd", "idle_power_w", "host_power_w",
                  "host_cpu_tokens_per_s", "host_cpu_power_w", "max_lifetime_years", "lean",
                  "sites")


@dataclass(frozen=True)
class Site:
    """A place devices may go: a grid zone and its cooling (Device fields that override)."""

    name: str
    zone: str
    cooling: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceType:
    """One candidate device type and everything provisioning needs about it.

    Attributes:
        device: the device as a registry would hold it (zone set per site later).
        profile: ``nominal``, ``mlenergy:MODEL:GPU`` or ``bench:DEVICE``.
        model_bytes, kv_bytes_per_token: the served model's memory, None for unchecked.
        gpu_kgco2e: the accelerator's embodied carbon (0 for a CPU server).
        host_kgco2e: embodied carbon of one whole host.
        gpus_per_host: devices sharing one host.
        price_usd: purchase price per device, its host share included.
        idle_power_w: device watts while idle.
        host_power_w: host watts per device while powered.
        host_cpu_tokens_per_s: offline tokens/s a host's CPUs can add (Reduce).
        host_cpu_power_w: extra host watts while its CPUs serve.
        max_lifetime_years: longest life Recycle may give a device.
        lean: a lean-host variant (offered only with Reduce).
        sites: site names it may go to; None for all.
        embodied_source: keys or "given" for the two embodied figures.
    """

    device: Device
    profile: str
    model_bytes: int | None
    kv_bytes_per_token: int
    gpu_kgco2e: float
    host_kgco2e: float
    gpus_per_host: int
    price_usd: float
    idle_power_w: float
    host_power_w: float
    host_cpu_tokens_per_s: float
    host_cpu_power_w: float
    max_lifetime_years: float
    lean: bool = False
    sites: tuple[str, ...] | None = None
    embodied_source: str = ""

    @property
    def name(self) -> str:
        """The type's name."""
        return self.device.name

    @property
    def embodied_kgco2e(self) -> float:
        """Embodied carbon per device: the GPU plus its share of the host."""
        return self.gpu_kgco2e + self.host_kgco2e / self.gpus_per_host

    @property
    def lifetime_years(self) -> float:
        """Amortisation period of embodied carbon and price."""
        return self.device.lifetime_years


@dataclass(frozen=True)
class OwnedGroup:
    """Devices of one type already owned at one site, all of one age."""

    type_name: str
    site: str
    count: int
    age_years: float


@dataclass(frozen=True)
class Catalogue:
    """Sites, candidate types and the owned fleet."""

    sites: list[Site]
    types: list[DeviceType]
    owned: list[OwnedGroup]
    where: str = "catalogue"

    def type_named(self, name: str) -> DeviceType:
        """The type called ``name``.

        Raises:
            ConfigError: no such type.
        """
        for t in self.types:
            if t.name == name:
                return t
        raise ConfigError(f"{self.where}: unknown device type {name!r}")


def load_catalogue(path: Path) -> Catalogue:
    """Read a catalogue file.

    Raises:
        ConfigError: unreadable, a bad table (named by kind, number and field), an unknown
            embodied key, site or type.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"catalogue {path}: {e}") from e
    where = f"catalogue {path}"
    sites = [_site(where, i, t) for i, t in enumerate(_tables(raw, "site", where))]
    types = [_device_type(where, i, t) for i, t in enumerate(_tables(raw, "device", where))]
    owned = [_owned(where, i, t) for i, t in enumerate(raw.get("owned", []))]
    cat = Catalogue(sites, types, owned, where)
    _check_names(cat)
    return cat


def _tables(raw: dict[str, Any], kind: str, where: str) -> list[Any]:
    tables = raw.get(kind, [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where}: no [[{kind}]] tables")
    return tables


def _site(where: str, i: int, t: Any) -> Site:
    if not isinstance(t, dict) or "zone" not in t:
        raise ConfigError(f"{where}: site #{i + 1} field 'zone': required")
    unknown = set(t) - {"name", "zone", *SITE_KEYS}
    if unknown:
        raise ConfigError(f"{where}: site #{i + 1}: unknown field(s) {sorted(unknown)}")
    cooling = {k: v for k, v in t.items() if k in SITE_KEYS}
    return Site(str(t.get("name", t["zone"])), str(t["zone"]), cooling)


def _number(where: str, label: str, t: dict[str, Any], key: str, default: float) -> float:
    value = t.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: {label} field {key!r}: must be a number >= 0")
    return float(value)


PER_SITE_ZONE = "(per site)"
"""The zone a device type is validated with; :func:`site_device` replaces it with a site's."""


def _device_type(where: str, i: int, t: Any) -> DeviceType:
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: device #{i + 1} is not a table")
    label = f"device #{i + 1}"
    fields = {k: v for k, v in t.items() if k not in SIM_KEYS and k not in PROVISION_KEYS}
    try:
        # a type has no zone of its own: site_device() gives it each site's
        device = Device.model_validate({"zone": PER_SITE_ZONE, **fields})
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{where}: {label} field {'.'.join(map(str, err['loc']))!r}: "
                          f"{err['msg']}") from e
    gpu_kg, gpu_src = _embodied(where, label, t, "gpu", load_gpus)
    host_kg, host_src = _embodied(where, label, t, "host", load_hosts)
    num = lambda key, default: _number(where, label, t, key, default)  # noqa: E731
    gpus_per_host = int(num("gpus_per_host", 1))
    if gpus_per_host < 1:
        raise ConfigError(f"{where}: {label} field 'gpus_per_host': must be >= 1")
    model_gb = t.get("model_gb")
    sites = t.get("sites")
    return DeviceType(
        device, str(t.get("profile", "nominal")),
        None if model_gb is None else int(float(model_gb) * GIB),
        int(num("kv_kib_per_token", 0) * 1024), gpu_kg, host_kg, gpus_per_host,
        num("price_usd", 0), num("idle_power_w", 0.3 * device.tdp_w), num("host_power_w", 0),
        num("host_cpu_tokens_per_s", 0), num("host_cpu_power_w", 0),
        max(num("max_lifetime_years", device.lifetime_years), device.lifetime_years),
        bool(t.get("lean", False)), None if sites is None else tuple(str(s) for s in sites),
        f"{gpu_src} + {host_src}")


def _embodied(where: str, label: str, t: dict[str, Any], part: str,
              loader: Any) -> tuple[float, str]:
    given = t.get(f"embodied_{part}_kgco2e")
    if given is not None:
        return _number(where, label, t, f"embodied_{part}_kgco2e", 0), "given"
    key = t.get(f"{part}_embodied")
    if key is None:
        return 0.0, "none"
    table = loader()
    if key not in table:
        raise ConfigError(f"{where}: {label} field '{part}_embodied': unknown key {key!r} "
                          f"(known: {', '.join(sorted(table))})")
    figure = table[key]
    return figure.kgco2e, f"{key} ({figure.basis})"


def _owned(where: str, i: int, t: Any) -> OwnedGroup:
    label = f"owned #{i + 1}"
    if not isinstance(t, dict) or "type" not in t or "site" not in t:
        raise ConfigError(f"{where}: {label}: needs 'type' and 'site'")
    count = t.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}: {label} field 'count': must be an integer >= 1")
    return OwnedGroup(str(t["type"]), str(t["site"]), count,
                      _number(where, label, t, "age_years", 0))


def _check_names(cat: Catalogue) -> None:
    site_names = [s.name for s in cat.sites]
    type_names = [t.name for t in cat.types]
    for kind, names in (("site", site_names), ("device type", type_names)):
        if len(set(names)) != len(names):
            raise ConfigError(f"{cat.where}: duplicate {kind} names in {names}")
    for t in cat.types:
        for s in t.sites or ():
            if s not in site_names:
                raise ConfigError(f"{cat.where}: device {t.name!r}: unknown site {s!r}")
    for g in cat.owned:
        cat.type_named(g.type_name)
        if g.site not in site_names:
            raise ConfigError(f"{cat.where}: owned {g.type_name!r}: unknown site {g.site!r}")


def site_device(t: DeviceType, site: Site, name: str | None = None) -> Device:
    """The type's device placed at ``site``: its zone and cooling, optionally renamed."""
    update: dict[str, Any] = {"zone": site.zone, **site.cooling}
    if name is not None:
        update["name"] = name
    try:
        return Device.model_validate({**t.device.model_dump(exclude_unset=True), **update})
    except ValidationError as e:
        raise ConfigError(f"site {site.name!r} cooling for {t.name!r}: {e.errors()[0]['msg']}") from e

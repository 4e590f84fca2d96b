"""Site PUE and WUE as functions of ambient temperature.

A site's overhead and water rise with the outside temperature: below the temperature at which
outside air (or water) alone can cool the room, the cooling plant idles and PUE and WUE sit at
their floor; above it chillers, fans and evaporative cooling work harder. The models here have
that shape, a floor up to ``threshold_c`` and a straight line above it, so they need three
numbers each; a device chooses one by name (``pue_model`` / ``wue_model`` in the registry), or
gives its own piecewise curve (``pue_curve`` / ``wue_curve``), or fixed numbers (``pue`` /
``wue_l_per_kwh``).

The floors are published figures (sources on each model). The thresholds and slopes are
assumptions of this project, stated here so that nobody mistakes them for measurements: the
threshold is the lower end of ASHRAE TC 9.9's recommended server inlet range (18 C), the point
below which air-side economisers need no mechanical cooling, and the slopes are chosen so that
a 35 C day adds about 0.17 to PUE and about 1.4 L/kWh to WUE, the order of the summer/winter
differences that hyperscalers' per-site reports show. Replace them with a site's own data
(``pue_curve``, ``wue_curve``) wherever it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class LinearAboveThreshold:
    """``floor`` up to ``threshold_c``, then ``slope_per_c`` more per degree above it.

    Attributes:
        floor: value at or below ``threshold_c`` (PUE, or WUE in L/kWh).
        threshold_c: ambient temperature where the rise starts, degrees C.
        slope_per_c: rise per degree C above the threshold.
        source: where the numbers come from, assumptions named as such.
    """

    floor: float
    threshold_c: float
    slope_per_c: float
    source: str

    def at(self, ambient_c: float) -> float:
        """The modelled value at ``ambient_c``."""
        return self.floor + self.slope_per_c * max(0.0, ambient_c - self.threshold_c)


_ASHRAE = "threshold: ASHRAE TC 9.9 recommended inlet range lower bound (18 C); slope assumed"

PUE_MODELS: Final[dict[str, LinearAboveThreshold]] = {
    # Azure's design PUE, as used by the GreenSKU carbon model (params.yaml in its data).
    "hyperscale-economizer": LinearAboveThreshold(
        1.12, 18.0, 0.01, "floor: Azure PUE 1.12 (GreenSKU-Framework params.yaml); " + _ASHRAE),
    # Uptime Institute Global Data Center Survey 2023: average annual PUE 1.58.
    "enterprise-average": LinearAboveThreshold(
        1.58, 18.0, 0.01, "floor: Uptime Institute 2023 survey average PUE 1.58; " + _ASHRAE),
    "edge-no-cooling": LinearAboveThreshold(
        1.0, 18.0, 0.0, "an edge box in open air has no facility overhead: PUE 1.0"),
}

WUE_MODELS: Final[dict[str, LinearAboveThreshold]] = {
    # Evaporative (cooling-tower) sites use little water when cold and most in summer.
    "evaporative": LinearAboveThreshold(
        0.2, 18.0, 0.08, "floor assumed (little evaporation when cold); " + _ASHRAE),
    # Closed-loop dry coolers evaporate nothing on site.
    "dry-cooler": LinearAboveThreshold(
        0.0, 18.0, 0.0, "closed-loop dry coolers evaporate no water on site: WUE 0"),
}


def model(kind: str, name: str) -> LinearAboveThreshold:
    """The PUE (``kind="pue"``) or WUE (``kind="wue"``) model called ``name``.

    Raises:
        ConfigError: no such model; the message lists the known ones.
    """
    models = PUE_MODELS if kind == "pue" else WUE_MODELS
    if name not in models:
        raise ConfigError(f"unknown {kind}_model {name!r} (known: {', '.join(sorted(models))})")
    return models[name]

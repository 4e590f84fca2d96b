"""A multi-objective allocation instance with model choice, and its exact objective evaluation.

An instance is an allocation :class:`~router.allocation.lp.Scenario` (sites x hours, per-token energy,
PUE, intensity, price, water, latency, renewables) plus what SLIT adds and the LP cannot hold:

- models: each site offers some of a menu of models, each with a quality score and its
  speed and energy relative to the site's base model;
- a fixed charge: a site that serves anything in an hour draws its static (idle) power for the
  hour, one that serves nothing can be idle-parked (EcoServe and SLIT both count idle power);
- queueing: time to first token grows as ``1 / (1 - utilisation)`` at a site.

A solution is the tokens each (site, model) serves each hour (see :func:`decode` for the
genes); the demand is always met and only capacity can be violated (``utilisation <= 1``, a
constraint). Objectives, all minimised, in :data:`OBJECTIVES` order: ``-quality``
(token-weighted mean score), TTFT (token-weighted mean, s), carbon (g), water (L) and cost (USD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from router.allocation.lp import Scenario

OBJECTIVES = ("neg_quality", "ttft_s", "carbon_g", "water_l", "cost_usd")
MAX_UTILISATION_IN_TTFT = 0.95


@dataclass(frozen=True)
class ModelOption:
    """One model of the menu.

    Attributes:
        name: model name.
        quality: score in [0, 1], higher is better.
        quality_source: where the score comes from (a benchmark, an evaluation, a proxy).
        speed: tokens/s relative to the site's base rate (1 for the base model).
        energy: J/token relative to the site's base figure.
        figures_source: where speed and energy come from, measured or an estimate.
    """

    name: str
    quality: float
    quality_source: str
    speed: float = 1.0
    energy: float = 1.0
    figures_source: str = ""


# Qwen3 8B/14B/32B on one H100 with vLLM at max_num_seqs 32 (ML.ENERGY leaderboard, packaged in
# router/data): output tokens/s 2928 / 2023 / 961 and J/token 0.163 / 0.244 / 0.624, relative
# to the 8B. The quality is a PROXY (log10 of the parameter count over that of the 32B), not a
# benchmark score: replace it with a measured one where one exists.
_MLENERGY = "measured: ML.ENERGY leaderboard, Qwen3 on one H100 (vLLM), relative to the 8B"
DEFAULT_MENU = (
    ModelOption("qwen3-8b", 0.600, "proxy: log10(params) / log10(32e9)", 1.0, 1.0, _MLENERGY),
    ModelOption("qwen3-14b", 0.761, "proxy: log10(params) / log10(32e9)", 0.691, 1.497,
                _MLENERGY),
    ModelOption("qwen3-32b", 1.000, "proxy: log10(params) / log10(32e9)", 0.328, 3.828,
                _MLENERGY),
)


@dataclass(frozen=True)
class MooInstance:
    """A scenario, a model menu, which site offers which model, and the non-linear parts.

    Attributes:
        scenario: the allocation scenario (sites x hours).
        models: the menu.
        offers: (S, M) booleans, which site offers which model.
        static_kwh_per_h: (S,) IT energy a site draws in an hour in which it serves anything.
        ttft_base_s: (S,) time to first token of a request at an idle site for the base model.
        queueing: whether TTFT grows with utilisation (False: the LP's linear delay).
    """

    scenario: Scenario
    models: tuple[ModelOption, ...]
    offers: NDArray[np.bool_]
    static_kwh_per_h: NDArray[np.float64]
    ttft_base_s: NDArray[np.float64]
    queueing: bool = True

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The offered (site, model) pairs, in gene order."""
        return [(int(s), int(m)) for s, m in zip(*np.nonzero(self.offers), strict=True)]

    @property
    def n_var(self) -> int:
        """Genes: a priority and a cap per offered pair and hour."""
        return 2 * len(self.pairs) * self.scenario.shape[1]


def decode(inst: MooInstance, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Tokens per (individual, pair, hour) from genes of shape (P, 2 * pairs * hours).

    The first half of the genes are priorities, the second caps: each hour the pairs are filled
    in priority order, each up to its cap (a share of what its site has left, at its model's
    speed), until the hour's demand is met; what the caps leave unmet is then filled to full
    capacity in the same order, and any rest goes to the last pair (a capacity violation).
    Every linear objective's optimum is such a greedy fill, so these genes reach the LP's
    vertices as well as the allocations in between that the fixed charge and queueing favour.
    """
    n_pop, n_h = x.shape[0], inst.scenario.shape[1]
    half = x.shape[1] // 2
    priority = x[:, :half].reshape(n_pop, -1, n_h)
    cap = x[:, half:].reshape(n_pop, -1, n_h)
    site = np.array([s for s, _ in inst.pairs])
    speed = np.array([inst.models[m].speed for _, m in inst.pairs])
    tokens = np.zeros_like(priority)
    rows = np.arange(n_pop)
    for h in range(n_h):
        order = np.argsort(-priority[:, :, h], axis=1, kind="stable")
        left = np.repeat(inst.scenario.capacity[None, :], n_pop, axis=0)  # base-model tokens
        need = np.full(n_pop, float(inst.scenario.demand[h]))
        for caps in (cap[:, :, h], np.ones_like(cap[:, :, h])):
            for k in range(order.shape[1]):
                pair = order[:, k]
                take = np.minimum(need, left[rows, site[pair]] * speed[pair] * caps[rows, pair])
                tokens[rows, pair, h] += take
                left[rows, site[pair]] -= take / speed[pair]
                need -= take
        tokens[rows, order[:, -1], h] += need
    return tokens


def encode(inst: MooInstance, tokens: NDArray[np.float64]) -> NDArray[np.float64]:
    """Genes that :func:`decode` turns back into allocations (P, pairs, H), e.g. the LP's.

    Each hour the pairs are ranked by tokens served (largest first) and each cap is the share
    of what its site has left at that point that the allocation uses.
    """
    n_pop, n_pairs, n_h = tokens.shape
    site = np.array([s for s, _ in inst.pairs])
    speed = np.array([inst.models[m].speed for _, m in inst.pairs])
    priority, cap = np.zeros_like(tokens), np.ones_like(tokens)
    rows = np.arange(n_pop)
    for h in range(n_h):
        order = np.argsort(-tokens[:, :, h], axis=1, kind="stable")
        left = np.repeat(inst.scenario.capacity[None, :], n_pop, axis=0)
        for k in range(n_pairs):
            pair = order[:, k]
            priority[rows, pair, h] = 1.0 - k / n_pairs
            avail = left[rows, site[pair]] * speed[pair]
            used = tokens[rows, pair, h]
            cap[rows, pair, h] = np.where(avail > 0, np.clip(used / np.maximum(avail, 1e-12),
                                                             0.0, 1.0), 1.0)
            left[rows, site[pair]] -= used / speed[pair]
    return np.concatenate([priority.reshape(n_pop, -1), cap.reshape(n_pop, -1)], axis=1)


def evaluate(inst: MooInstance, tokens: NDArray[np.float64]
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Objectives (P, 5) and capacity violations (P, S*H) of allocations (P, pairs, H)."""
    sc, pairs = inst.scenario, inst.pairs
    site = np.array([s for s, _ in pairs])
    speed = np.array([inst.models[m].speed for _, m in pairs])
    energy = np.array([inst.models[m].energy for _, m in pairs])
    quality = np.array([inst.models[m].quality for _, m in pairs])
    n_s = sc.shape[0]
    load = _per_site(tokens / speed[None, :, None], site, n_s) / sc.capacity[None, :, None]
    it_kwh = _per_site(tokens * (sc.kwh_per_token[site] * energy)[None, :, None], site, n_s)
    active = _per_site(tokens, site, n_s) > 0
    it_kwh = it_kwh + active * inst.static_kwh_per_h[None, :, None]
    grid_kwh = np.maximum(it_kwh * sc.pue[None] - sc.renewables()[None], 0.0)
    total = tokens.sum(axis=(1, 2))
    rho = np.minimum(load, MAX_UTILISATION_IN_TTFT) if inst.queueing else np.zeros_like(load)
    wait = inst.ttft_base_s[site][None, :, None] / speed[None, :, None] / (1.0 - rho[:, site, :])
    ttft = (tokens * (sc.latency_s[site][None, :, None] + wait)).sum(axis=(1, 2)) / total
    f = np.stack([-(tokens * quality[None, :, None]).sum(axis=(1, 2)) / total, ttft,
                  (grid_kwh * sc.intensity_g_per_kwh[None]).sum(axis=(1, 2)),
                  (it_kwh * sc.water_l_per_kwh[None]).sum(axis=(1, 2)),
                  (grid_kwh * sc.price_usd_per_kwh[None]).sum(axis=(1, 2))], axis=1)
    return f, (load - 1.0).reshape(load.shape[0], -1)


def _per_site(values: NDArray[np.float64], site: NDArray[np.int64], n_sites: int
              ) -> NDArray[np.float64]:
    """Sum (P, pairs, H) over the pairs of each site -> (P, S, H)."""
    one_hot = np.eye(n_sites)[site]  # (pairs, S)
    return np.asarray(np.einsum("pkh,ks->psh", values, one_hot), np.float64)


def instance_from_scenario(sc: Scenario, models: tuple[ModelOption, ...] = DEFAULT_MENU, *,
                           offers: NDArray[np.bool_] | None = None,
                           static_fraction: float = 0.3, ttft_base_s: float = 0.1,
                           queueing: bool = True) -> MooInstance:
    """An instance over ``sc``: site ``s`` offers model ``m`` where ``offers[s, m]`` (None:
    when ``s % (m + 1) == 0``: every site the first model, every second site the second, ...),
    and draws ``static_fraction`` of its full-load IT power in every hour in which it serves
    anything (an assumption: idle power of accelerators is commonly 20-40% of their peak).

    Raises:
        ValueError: ``offers`` is not (sites, models) or leaves a site without a model.
    """
    n_s = sc.shape[0]
    if offers is None:
        offers = np.array([[s % (m + 1) == 0 for m in range(len(models))] for s in range(n_s)])
    elif offers.shape != (n_s, len(models)) or not offers.any(axis=1).all():
        raise ValueError(f"offers of shape {offers.shape} for {n_s} sites and {len(models)} "
                         "models, or a site offers none")
    static = static_fraction * sc.capacity * sc.kwh_per_token
    return MooInstance(sc, models, offers, static, np.full(n_s, ttft_base_s), queueing)


def linear_instance(sc: Scenario) -> MooInstance:
    """``sc`` as the LP sees it: one model, no fixed charge, no queueing."""
    one = (ModelOption("base", 1.0, "single model"),)
    return MooInstance(sc, one, np.ones((sc.shape[0], 1), dtype=bool), np.zeros(sc.shape[0]),
                       np.zeros(sc.shape[0]), queueing=False)

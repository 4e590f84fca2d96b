"""Request arrivals for the simulator: the Azure LLM inference trace, rescaled, or Poisson.

An :class:`Arrivals` holds three aligned arrays sorted by time: seconds since the start of the
simulation, prompt (context) tokens and generated tokens of each request. The generated-token
count of the trace is used as the request's ``max_tokens``, the budget the router predicts from.

The packaged trace is the conversation trace of the Azure LLM inference dataset (19,366 requests
over one hour, 2023-11-16; Patel et al., "Splitwise", ISCA 2024; CC-BY 4.0; see
``router/data/SOURCES.md``). Replaying it over more hours repeats the hour, compressed or
stretched in time by the rate scale.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError

TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PACKAGED_TRACE = "azure_llm_conv_2023.csv"


@dataclass(frozen=True)
class Arrivals:
    """Requests in arrival order.

    Attributes:
        t_s: arrival time, seconds since the simulation start, ascending.
        prompt_tokens: context tokens of each request.
        max_tokens: generated tokens of each request (its new-token budget).
    """

    t_s: NDArray[np.float64]
    prompt_tokens: NDArray[np.int64]
    max_tokens: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.t_s.shape[0])

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last arrival (0 for fewer than two requests)."""
        return float(self.t_s[-1] - self.t_s[0]) if len(self) > 1 else 0.0


def read_trace(path: Path | None = None) -> Arrivals:
    """Read a trace in the Azure LLM inference layout, times relative to its first request.

    Args:
        path: a CSV with columns ``TIMESTAMP, ContextTokens, GeneratedTokens``; the packaged
            conversation trace when None.

    Raises:
        ConfigError: missing file, wrong header, or a bad row (the message names the line).
    """
    try:
        if path is None:
            text = files("router").joinpath("data", PACKAGED_TRACE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"arrival trace {path}: {e}") from e
    return _parse_trace(str(path or PACKAGED_TRACE), text)


def _parse_trace(name: str, text: str) -> Arrivals:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header[:3]) != TRACE_COLUMNS:
        raise ConfigError(f"arrival trace {name}: line 1 must be {','.join(TRACE_COLUMNS)}")
    times, prompt, gen = [], [], []
    for line_no, row in enumerate(rows, start=2):
        try:
            times.append(_unix_s(row[0]))
            prompt.append(int(row[1]))
            gen.append(int(row[2]))
        except (ValueError, IndexError) as e:
            raise ConfigError(f"arrival trace {name}: line {line_no}: {e}") from e
        if prompt[-1] < 0 or gen[-1] < 0:
            raise ConfigError(f"arrival trace {name}: line {line_no}: negative token count")
    if not times:
        raise ConfigError(f"arrival trace {name}: no requests")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    return Arrivals(t, np.asarray(prompt, np.int64)[order],
                    np.maximum(np.asarray(gen, np.int64)[order], 1))


def _unix_s(stamp: str) -> float:
    # The trace writes 7 fractional digits and no zone; only differences matter here, so the
    # times are read as UTC (no daylight-saving jumps) and cut to microseconds.
    at = datetime.fromisoformat(stamp.strip()[:26])
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def replay(trace: Arrivals, hours: float, rate_scale: float = 1.0) -> Arrivals:
    """Repeat ``trace`` to fill ``hours``, its arrival rate multiplied by ``rate_scale``.

    Times are divided by ``rate_scale`` (2.0 doubles the rate); the scaled trace is then laid end
    to end until the horizon, each copy starting one mean inter-arrival gap after the last.

    Raises:
        ConfigError: ``hours`` or ``rate_scale`` is not positive, or the trace is empty.
    """
    if hours <= 0 or rate_scale <= 0 or len(trace) == 0:
        raise ConfigError(f"replay needs hours > 0, rate_scale > 0 and requests "
                          f"(got {hours}, {rate_scale}, {len(trace)})")
    horizon_s = hours * 3600.0
    t = trace.t_s / rate_scale
    gap_s = (t[-1] / max(len(t) - 1, 1)) if len(t) > 1 else 1.0 / rate_scale
    period_s = float(t[-1]) + gap_s
    copies = max(1, math.ceil(horizon_s / period_s))
    offsets = np.repeat(np.arange(copies) * period_s, len(t))
    t_all = np.tile(t, copies) + offsets
    keep = t_all < horizon_s
    return Arrivals(t_all[keep], np.tile(trace.prompt_tokens, copies)[keep],
                    np.tile(trace.max_tokens, copies)[keep])


def scale_for_requests(trace: Arrivals, hours: float, n_requests: int) -> float:
    """The ``rate_scale`` that makes :func:`replay` of ``trace`` hold about ``n_requests``."""
    per_hour = len(trace) / max(trace.span_s / 3600.0, 1e-9)
    return n_requests / (per_hour * hours)


def poisson(rate_per_s: float, hours: float, seed: int, tokens_from: Arrivals | None = None) -> Arrivals:
    """A Poisson arrival process, token counts drawn from a trace's requests.

    Args:
        rate_per_s: mean arrivals per second.
        hours: length of the process.
        seed: the random seed; equal seeds give equal arrivals.
        tokens_from: requests whose (prompt, generated) token pairs are sampled with
            replacement; the packaged trace when None.

    Raises:
        ConfigError: a non-positive rate or length.
    """
    if rate_per_s <= 0 or hours <= 0:
        raise ConfigError(f"poisson arrivals need rate_per_s > 0 and hours > 0, "
                          f"got {rate_per_s}, {hours}")
    source = tokens_from if tokens_from is not None else read_trace()
    rng = np.random.default_rng(seed)
    horizon_s = hours * 3600.0
    n = int(rng.poisson(rate_per_s * horizon_s))
    # Given their count, the times of a Poisson process are independent uniforms.
    t = np.sort(rng.uniform(0.0, horizon_s, n))
    pick = rng.integers(0, len(source), n)
    return Arrivals(t, source.prompt_tokens[pick], source.max_tokens[pick])


DIURNAL_PEAK_HOUR_UTC = 14.0


def diurnal(mean_rate_per_s: float, hours: float, seed: int, *, start_hour_utc: float = 0.0,
            swing: float = 0.8, tokens_from: Arrivals | None = None) -> Arrivals:
    """Poisson arrivals whose rate follows the day: ``mean x (1 + swing x cos)``, peaking at
    14:00 UTC and lowest at 02:00 UTC, token counts drawn from a trace's requests.

    Args:
        mean_rate_per_s: the rate averaged over a day, requests/s.
        hours: length of the process.
        seed: the random seed; equal seeds give equal arrivals.
        start_hour_utc: the UTC hour of day at time 0 (e.g. 10.5 for 10:30).
        swing: relative amplitude of the daily swing, in [0, 1].
        tokens_from: requests whose token pairs are sampled; the packaged trace when None.

    Raises:
        ConfigError: a non-positive rate or length, or a swing outside [0, 1].
    """
    if not 0.0 <= swing <= 1.0:
        raise ConfigError(f"diurnal arrivals need 0 <= swing <= 1, got {swing}")
    # Thinning (Lewis and Shedler): a Poisson process at the peak rate, each arrival kept with
    # probability rate(t) / peak.
    peak = poisson(mean_rate_per_s * (1.0 + swing), hours, seed, tokens_from)
    hour_of_day = start_hour_utc + peak.t_s / 3600.0
    rate = 1.0 + swing * np.cos((hour_of_day - DIURNAL_PEAK_HOUR_UTC) / 24.0 * 2.0 * np.pi)
    keep = np.random.default_rng(seed + 1).uniform(0.0, 1.0 + swing, len(peak)) < rate
    return Arrivals(peak.t_s[keep], peak.prompt_tokens[keep], peak.max_tokens[keep])

"""Shared parts of the meters: a power-integrating sampler and the ``metered`` block."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.errors import EcobatchError, MeterError
from workers.energy import EnergyMeter, EnergyReading


class PowerSampler:
    """Integrates a power reading over time in a background thread (trapezoid rule).

    Args:
        read_power_w: returns the current power in watts; called from the sampling thread.
        interval_s: time between samples.
    """

    def __init__(self, read_power_w: Callable[[], float], interval_s: float) -> None:
        self._read = read_power_w
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_j = 0.0
        self._last: tuple[float, float] = (0.0, 0.0)
        self._error: MeterError | None = None

    def start(self) -> None:
        """Take the first sample and start sampling."""
        self._energy_j, self._error = 0.0, None
        self._last = (time.monotonic(), self._read_w())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sampling, take a last sample and return the joules integrated since start.

        Raises:
            MeterError: a sample failed, or the sampler was not started.
        """
        if self._thread is None:
            raise MeterError("power sampler stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        self._sample()
        return self._energy_j

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._sample()
            except MeterError as e:  # reported by stop(), on the caller's thread
                self._error = e
                return

    def _read_w(self) -> float:
        try:
            return self._read()
        except MeterError:
            raise
        except Exception as e:  # vendor errors (NVMLError, jtop's) become MeterError here
            raise MeterError(f"power reading failed: {e}") from e

    def _sample(self) -> None:
        now, power_w = time.monotonic(), self._read_w()
        t0, p0 = self._last
        self._energy_j += (p0 + power_w) / 2.0 * (now - t0)
        self._last = (now, power_w)


@dataclass
class MeterHolder:
    """What :func:`metered` yields; ``reading`` is set when the block exits."""

    reading: EnergyReading | None = None


@contextmanager
def metered(meter: EnergyMeter) -> Iterator[MeterHolder]:
    """Meter the block: ``with metered(m) as h: ...`` then ``h.reading``.

    The meter is stopped even when the block raises; a meter error then does not hide the
    block's own exception.
    """
    holder = MeterHolder()
    meter.start()
    try:
        yield holder
    except BaseException:
        with contextlib.suppress(EcobatchError):  # the block's own exception matters more
            holder.reading = meter.stop()
        raise
    holder.reading = meter.stop()

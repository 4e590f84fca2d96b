"""Every ecobatch metric, defined once (the names are a contract: the README's "Metrics,
dashboards and health probes" lists them).

Names follow Prometheus conventions: the ``ecobatch_`` prefix, base units in the name
(``_seconds``, ``_joules``, ``_grams``, ``_litres``), ``_total`` on counters. The one exception
is the grid intensity, in grams per kWh: the unit every grid source publishes and the ledger's
``intensity_g_per_kwh`` column uses. Cost is in US dollars, as the ledger's ``cost_usd``.

The metric objects belong to a :class:`Metrics` instance that each process builds once (a
field of the router's ``RouterState`` and of the worker's ``WorkerState``); none is registered
in prometheus_client's global registry. In a process served with multiprocess mode
(``pipeline.metrics.serve``) every value is written to the process group's
``PROMETHEUS_MULTIPROC_DIR`` and read from there at scrape time.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A gauge is set by one process at a time (the router's pool child): the latest value wins.
_GAUGE_MODE: Final[Literal["mostrecent"]] = "mostrecent"


class Metrics:
    """The counters, histograms and gauges of one process.

    Args:
        registry: where to register them; None (the default) registers nowhere, which is what
            a process in multiprocess mode wants. Tests pass a private ``CollectorRegistry``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._counters(registry)
        self._histograms(registry)
        self._gauges(registry)

    def _counters(self, r: CollectorRegistry | None) -> None:
        dz = ["device", "zone"]
        self.prompts = Counter("ecobatch_prompts_total", "Prompts finished, by outcome "
                               "(done, dead).", ["outcome"], registry=r)
        self.batches = Counter("ecobatch_batches_total", "Batches finished, by device and "
                               "outcome (done, dead).", ["device", "outcome"], registry=r)
        self.prompt_tokens = Counter("ecobatch_prompt_tokens_total", "Prompt tokens decoded.",
                                     ["device"], registry=r)
        self.completion_tokens = Counter("ecobatch_completion_tokens_total",
                                         "Completion tokens generated.", ["device"], registry=r)
        self.energy = Counter("ecobatch_energy_joules_total", "IT energy by device, meter, "
                              "method (measured or estimated) and part (device, or a GPU's "
                              "host share).", ["device", "meter", "method", "part"], registry=r)
        self.carbon = Counter("ecobatch_carbon_grams_total", "gCO2e by device, grid zone and "
                              "kind (operational, embodied).", [*dz, "kind"], registry=r)
        self.water = Counter("ecobatch_water_litres_total", "Water, on-site and off-site.", dz,
                             registry=r)
        self.cost = Counter("ecobatch_cost_usd_total", "Electricity cost in US dollars (zones "
                            "with price data only).", dz, registry=r)

    def _histograms(self, r: CollectorRegistry | None) -> None:
        self.prompt_latency = Histogram("ecobatch_prompt_latency_seconds", "A prompt's decode "
                                        "latency within its batch.", ["device"],
                                        buckets=LATENCY_BUCKETS_S, registry=r)
        self.ttft = Histogram("ecobatch_time_to_first_token_seconds", "A prompt's time to "
                              "first token.", ["device"], buckets=TTFT_BUCKETS_S, registry=r)
        self.batch_duration = Histogram("ecobatch_batch_duration_seconds", "Wall time of a "
                                        "batch's decode.", ["device"],
                                        buckets=LATENCY_BUCKETS_S, registry=r)

    def _gauges(self, r: CollectorRegistry | None) -> None:
        def gauge(name: str, doc: str, labels: list[str] | None = None) -> Gauge:
            return Gauge(name, doc, labels or [], registry=r, multiprocess_mode=_GAUGE_MODE)

        self.pending = gauge("ecobatch_pending_prompts", "Prompts waiting for the router.")
        self.backlog_batches = gauge("ecobatch_device_backlog_batches", "Batches dispatched "
                                     "to or running on a device.", ["device"])
        self.backlog_seconds = gauge("ecobatch_device_backlog_seconds", "Predicted seconds of "
                                     "work dispatched to or running on a device.", ["device"])
        self.intensity = gauge("ecobatch_grid_carbon_intensity_grams_per_kwh", "A zone's grid "
                               "carbon intensity now, as the router reads it.", ["zone"])
        self.heartbeat_age = gauge("ecobatch_worker_heartbeat_age_seconds", "Seconds since a "
                                   "device's worker last beat; +Inf when none is alive.",
                                   ["device"])
        self.dead_batches = gauge("ecobatch_dead_letter_batches", "Batches in the dead-letter "
                                  "state in the ledger.")
        self.deferred_jobs = gauge("ecobatch_deferred_jobs", "Jobs deferred to a low-carbon "
                                   "window, not yet released.")

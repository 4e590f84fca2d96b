"""The metrics module on its own: counters from ledger rows, names by Prometheus conventions,
the port rule, the fleet gauges read from a real Redis and ledger, and the HTTP endpoints of a
real server (``/metrics``, ``/healthz``, ``/readyz``) in this process.

The cluster test (tests/test_metrics_cluster.py) scrapes real router and worker processes.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.app.context import AppContext
from pipeline.broker.alive import beat
from pipeline.broker.queue import PromptRef, push_refs
from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.ledger.models import Batch, BatchStatus, Job, JobStatus
from pipeline.metrics.defs import Metrics
from pipeline.metrics.gauges import FleetState, read_broker, read_ledger, set_gauges
from pipeline.metrics.probes import readiness
from pipeline.metrics.record import count_dead, count_done, count_rejected
from pipeline.metrics.serve import MetricsServer, serve, worker_port
from pipeline.settings import load_settings

DE = Device(name="de", kind="cpu", zone="DE-LU")
UNITS = ("_total", "_seconds", "_joules", "_grams", "_litres", "_usd", "_prompts", "_batches",
         "_jobs", "_grams_per_kwh")


def _rows() -> list[dict[str, object]]:
    return [{"prompt_tokens": 5 + i, "completion_tokens": 7 * i, "ttft_s": 0.01 * i,
             "latency_s": 0.2 + i, "energy_j": 1.5 * i, "host_energy_j": None,
             "carbon_g": 0.125 * i, "embodied_carbon_g": 0.5, "water_l": 0.001 * i,
             "cost_usd": None if i == 0 else 0.01 * i} for i in range(3)]


def _batch() -> dict[str, object]:
    return {"latency_s": 3.5, "energy_j": 4.5, "energy_source": "estimate:tdp*cpu-util",
            "energy_measured": False}


def test_a_done_batch_counts_the_sums_of_its_rows() -> None:
    registry = CollectorRegistry()
    count_done(Metrics(registry), DE, _batch(), _rows())
    got = registry.get_sample_value
    dz = {"device": "de", "zone": "DE-LU"}
    assert got("ecobatch_batches_total", {"device": "de", "outcome": "done"}) == 1
    assert got("ecobatch_prompts_total", {"outcome": "done"}) == 3
    assert got("ecobatch_prompt_tokens_total", {"device": "de"}) == 18
    assert got("ecobatch_completion_tokens_total", {"device": "de"}) == 21
    assert got("ecobatch_energy_joules_total", {"device": "de", "meter": "estimate:tdp*cpu-util",
                                                "method": "estimated", "part": "device"}) == 4.5
    assert got("ecobatch_carbon_grams_total", {**dz, "kind": "operational"}) == 0.375
    assert got("ecobatch_carbon_grams_total", {**dz, "kind": "embodied"}) == 1.5
    assert got("ecobatch_water_litres_total", dz) == pytest.approx(0.003)
    assert got("ecobatch_cost_usd_total", dz) == pytest.approx(0.03)  # the None row adds 0
    assert got("ecobatch_prompt_latency_seconds_count", {"device": "de"}) == 3
    assert got("ecobatch_prompt_latency_seconds_sum", {"device": "de"}) == pytest.approx(3.6)
    assert got("ecobatch_batch_duration_seconds_sum", {"device": "de"}) == 3.5


def test_dead_letters_count_batches_and_prompts() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    count_dead(metrics, "de", 4)
    count_rejected(metrics, 2)
    count_rejected(metrics, 0)
    assert registry.get_sample_value("ecobatch_batches_total", {"device": "de",
                                                                 "outcome": "dead"}) == 1
    assert registry.get_sample_value("ecobatch_prompts_total", {"outcome": "dead"}) == 6


def test_names_follow_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    families = list(registry.collect())
    assert len(families) == 18
    for family in families:
        assert family.name.startswith("ecobatch_"), family.name
        assert family.documentation, family.name
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name.endswith(UNITS), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name


def test_one_metrics_object_per_process_context() -> None:
    ctx = AppContext(load_settings())
    assert ctx.worker_state.metrics is ctx.worker_state.metrics
    assert ctx.router_state.metrics is ctx.router_state.metrics


def test_each_worker_on_a_host_gets_its_own_port() -> None:
    registry = Registry(devices=[DE, Device(name="gb", kind="cpu", zone="GB")])
    on = load_settings(metrics_port=9470)
    assert [worker_port(on, registry, d) for d in registry.devices] == [9471, 9472]
    assert worker_port(load_settings(), registry, DE) == 0  # unset: off


def test_gauges_read_the_ledger_and_the_broker(engine: Engine, rclient: redis.Redis) -> None:
    with Session(engine) as s:
        s.add(Job(id="j1", status=JobStatus.DEFERRED))
        s.add(Batch(id="b1", device="de", status=BatchStatus.DEAD))
        s.add(Batch(id="b2", device="de", status=BatchStatus.DISPATCHED, predicted_latency_s=2.5))
        s.add(Batch(id="b3", device="de", status=BatchStatus.RUNNING, predicted_latency_s=1.0))
        s.commit()
    push_refs(rclient, [PromptRef(f"j1:{i}", "j1", 0.0, 3, 8) for i in range(5)])
    beat(rclient, "de", 15.0, "host:1:ab")
    state = FleetState()
    read_ledger(engine, state, ["de", "gb"])
    read_broker(rclient, state, ["de", "gb"], ttl_s=15.0)
    assert (state.dead_batches, state.deferred_jobs, state.pending_prompts) == (1, 1, 5)
    assert state.backlog == {"de": (2, 3.5), "gb": (0, 0.0)}
    assert 0 <= state.heartbeat_age_s["de"] < 2 and state.heartbeat_age_s["gb"] == math.inf
    registry = CollectorRegistry()
    set_gauges(Metrics(registry), state)
    assert registry.get_sample_value("ecobatch_device_backlog_seconds", {"device": "de"}) == 3.5
    assert registry.get_sample_value("ecobatch_pending_prompts") == 5


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def server_of() -> Iterator[list[MetricsServer]]:
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.close()


def test_http_endpoints_live_ready_and_metrics(redis_url: str, sqlite_url: str,
                                               server_of: list[MetricsServer]) -> None:
    registry = CollectorRegistry()
    count_dead(Metrics(registry), "de", 1)
    settings = load_settings(redis_url=redis_url, database_url=sqlite_url)
    server = serve(registry, readiness(settings), 0, "127.0.0.1")
    server_of.append(server)
    base = f"http://127.0.0.1:{server.port}"
    assert _get(base + "/healthz") == (200, '{"live": true}\n')
    assert _get(base + "/readyz") == (200, '{"ready": true}\n')
    code, text = _get(base + "/metrics")
    assert code == 200 and 'ecobatch_batches_total{device="de",outcome="dead"} 1.0' in text


def test_not_ready_while_the_broker_is_away(sqlite_url: str,
                                            server_of: list[MetricsServer]) -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", database_url=sqlite_url)
    server = serve(CollectorRegistry(), readiness(settings), 0, "127.0.0.1")
    server_of.append(server)
    code, text = _get(f"http://127.0.0.1:{server.port}/readyz")
    body = json.loads(text)
    assert code == 503 and body["ready"] is False
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in body["broker"]
    assert "ledger" not in body
    assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200  # still live


def test_a_taken_port_is_refused_clearly(sqlite_url: str, server_of: list[MetricsServer]) -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", database_url=sqlite_url)
    first = serve(CollectorRegistry(), readiness(settings), 0, "127.0.0.1")
    server_of.append(first)
    with pytest.raises(ConfigError, match="--metrics-port"):
        serve(CollectorRegistry(), readiness(settings), first.port, "127.0.0.1")

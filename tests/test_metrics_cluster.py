"""Metrics, dashboard and probes on real processes (issue 15): a router and a worker per device
(real Redis, real llama.cpp, SQLite and PostgreSQL) serve ``/metrics``, ``/healthz`` and
``/readyz``; after a real job every counter scraped equals the sum of the same ledger column,
and every metric a panel of the Grafana dashboard queries is in the scrape.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from pipeline.broker.alive import alive_devices
from pipeline.broker.queue import connect
from pipeline.client import Client
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Batch, BatchStatus, Prompt, PromptStatus, Result
from pipeline.settings import load_settings
from tests.cluster import REPO_ROOT, ForkedGroup, cluster_env, wait_until
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.service]
PROMPTS20 = Path(__file__).parent / "fixtures" / "prompts20.jsonl"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "ecobatch.json"
WAIT_S = 300.0
DEVICES = ("de", "gb")  # DE-LU has prices, GB has none: cost counts DE-LU only
REGISTRY = """
[[device]]
name = "de"
kind = "cpu"
zone = "DE-LU"

[[device]]
name = "gb"
kind = "cpu"
zone = "GB"
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass
class Scraped:
    """The endpoints' base URLs, their scrapes after the job, and the ledger."""

    urls: dict[str, str]
    text: dict[str, str]
    samples: Samples
    engine: Engine


@pytest.fixture
def after_a_job(redis_url: str, db_url: str, tmp_path: Path) -> Iterator[Scraped]:
    registry = tmp_path / "devices.toml"
    registry.write_text(REGISTRY)
    # Ports the kernel hands out (two test processes never get the same one at once), given
    # to each process explicitly: a fixed base raced with the other parametrisation of this
    # test in the other test process.
    ports = {name: free_port() for name in ("router", *DEVICES)}
    env = cluster_env(redis_url, db_url, ECOBATCH_DEVICES=str(registry),
                      ECOBATCH_METRICS_PORT=str(ports["router"]),
                      ECOBATCH_METRICS_ADDR="127.0.0.1", ECOBATCH_STRATEGY="round_robin")
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with ForkedGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])
        for d in DEVICES:
            children.start(f"worker-{d}", ["worker", "--device", d,
                                           "--metrics-port", str(ports[d])])
        _run_job(urls, redis_url, db_url, registry, children)
        text = {name: get(url + "/metrics")[1] for name, url in urls.items()}
        samples: Samples = {}
        for t in text.values():  # Prometheus tells the processes apart by `instance`; add up
            for key, value in parse(t).items():
                samples[key] = samples.get(key, 0.0) + value
        yield Scraped(urls, text, samples, make_engine(db_url))


def _run_job(urls: dict[str, str], redis_url: str, db_url: str, registry: Path,
             children: ForkedGroup) -> None:
    def ready() -> bool:
        children.check_alive()
        return all(get(u + "/readyz")[0] == 200 for u in urls.values())

    wait_until("every process ready", ready, WAIT_S, poll_s=0.5)
    with closing(connect(redis_url)) as rclient:  # ready is not yet consuming: wait for both
        def beating() -> bool:
            children.check_alive()
            return alive_devices(rclient, DEVICES) == set(DEVICES)

        wait_until("both workers' heartbeats", beating, WAIT_S, poll_s=0.2)
    settings = load_settings(redis_url=redis_url, database_url=db_url, devices=registry,
                             strategy="round_robin")
    with Client(settings) as client:
        job_id = client.submit_file(str(PROMPTS20), max_tokens=8)
        client.wait(job_id, timeout_s=WAIT_S)

    def gauges_fresh() -> bool:  # the router refreshes them every GAUGES_EVERY_S
        s = parse(get(urls["router"] + "/metrics")[1])
        return total(s, "ecobatch_device_backlog_batches") == 0 and bool(s)

    wait_until("the router's gauges after the job", gauges_fresh, 30, poll_s=0.5)


def _ledger(engine: Engine, device: str) -> dict[str, float]:
    r, b = Result.__table__.c, Batch.__table__.c  # type: ignore[attr-defined]
    cols = ("prompt_tokens", "completion_tokens", "energy_j", "carbon_g", "embodied_carbon_g",
            "water_l", "cost_usd", "latency_s", "ttft_s")
    with Session(engine) as s:
        sums = s.execute(select(func.count(), *(func.coalesce(func.sum(r[c]), 0.0) for c in cols))
                         .where(r.device == device)).one()
        n_batches, batch_s = s.execute(
            select(func.count(), func.coalesce(func.sum(b.latency_s), 0.0))
            .where(b.device == device, b.status == BatchStatus.DONE)).one()
    return {"results": sums[0], **dict(zip(cols, map(float, sums[1:]), strict=True)),
            "batches": n_batches, "batch_s": float(batch_s)}


def _same(got: Samples, sql: dict[str, float], name: str, column: str, **labels: str) -> None:
    scraped = total(got, name, **labels)
    assert scraped == pytest.approx(sql[column], rel=1e-9, abs=1e-12), (name, labels)


def check_counters(got: Samples, engine: Engine) -> None:
    """Every counter equals the sum of its ledger column, per device."""
    with Session(engine) as s:
        done = s.execute(select(func.count()).select_from(Prompt).where(
            Prompt.status == PromptStatus.DONE)).scalar_one()  # type: ignore[arg-type]
    assert done == 20 and total(got, "ecobatch_prompts_total", outcome="done") == 20
    for device, zone in (("de", "DE-LU"), ("gb", "GB")):
        sql, d = _ledger(engine, device), {"device": device}
        assert sql["batches"] > 0, f"round robin sent no batch to {device}"
        for name, column, labels in (
                ("ecobatch_batches_total", "batches", {"outcome": "done"}),
                ("ecobatch_prompt_tokens_total", "prompt_tokens", {}),
                ("ecobatch_completion_tokens_total", "completion_tokens", {}),
                ("ecobatch_energy_joules_total", "energy_j", {"part": "device"}),
                ("ecobatch_carbon_grams_total", "carbon_g", {"kind": "operational", "zone": zone}),
                ("ecobatch_carbon_grams_total", "embodied_carbon_g", {"kind": "embodied"}),
                ("ecobatch_water_litres_total", "water_l", {}),
                ("ecobatch_cost_usd_total", "cost_usd", {}),
                ("ecobatch_prompt_latency_seconds_sum", "latency_s", {}),
                ("ecobatch_prompt_latency_seconds_count", "results", {}),
                ("ecobatch_time_to_first_token_seconds_sum", "ttft_s", {}),
                ("ecobatch_batch_duration_seconds_sum", "batch_s", {}),
                ("ecobatch_batch_duration_seconds_count", "batches", {})):
            _same(got, sql, name, column, **labels, **d)
        assert total(got, "ecobatch_energy_joules_total", method="estimated", **d) > 0
    assert _ledger(engine, "de")["cost_usd"] > 0 and _ledger(engine, "gb")["cost_usd"] == 0


def check_gauges(got: Samples) -> None:
    """The router shows the fleet's state after the job."""
    assert total(got, "ecobatch_pending_prompts") == 0
    assert total(got, "ecobatch_dead_letter_batches") == 0
    assert total(got, "ecobatch_deferred_jobs") == 0
    for device in DEVICES:
        assert 0 <= total(got, "ecobatch_worker_heartbeat_age_seconds", device=device) < 15
    for zone in ("DE-LU", "GB"):
        assert total(got, "ecobatch_grid_carbon_intensity_grams_per_kwh", zone=zone) > 0


def panel_metrics(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Each panel's title and the ecobatch metric names its queries use."""
    found = {}
    for panel in dashboard["panels"]:
        exprs = " ".join(t["expr"] for t in panel.get("targets", []))
        found[panel["title"]] = set(re.findall(r"\becobatch_[a-z0-9_]+", exprs))
    return found


def check_dashboard(scraped: set[str], panels: dict[str, set[str]]) -> None:
    """Every metric a panel queries is in the scrape."""
    for title, names in panels.items():
        assert names, f"panel {title!r} queries no ecobatch metric"
        assert names <= scraped, f"panel {title!r}: {sorted(names - scraped)} not in the scrape"


def test_the_dashboard_check_catches_a_metric_the_code_lacks() -> None:
    panels = panel_metrics({"panels": [{"title": "p", "targets": [
        {"expr": "sum(rate(ecobatch_prompts_total[5m])) / sum(ecobatch_nope_total)"}]}]})
    assert panels == {"p": {"ecobatch_prompts_total", "ecobatch_nope_total"}}
    with pytest.raises(AssertionError, match="ecobatch_nope_total"):
        check_dashboard({"ecobatch_prompts_total"}, panels)


def test_a_real_job_scraped(after_a_job: Scraped) -> None:
    """Counters against SQL, gauges, the dashboard against the scrape, probes: one job."""
    check_counters(after_a_job.samples, after_a_job.engine)
    check_gauges(after_a_job.samples)
    panels = panel_metrics(json.loads(DASHBOARD.read_text()))
    assert len(panels) >= 10
    check_dashboard({name for name, _ in after_a_job.samples}, panels)
    for url in after_a_job.urls.values():
        assert get(url + "/healthz") == (200, '{"live": true}\n')
        assert get(url + "/readyz") == (200, '{"ready": true}\n')
    print("\n".join(f"panel {t!r}: {sorted(n)}" for t, n in panels.items()))
    for name, text in after_a_job.text.items():
        print(f"--- {name}")
        print("\n".join(line for line in text.splitlines()
                        if line.startswith("ecobatch_") and "_bucket" not in line))


def test_a_router_whose_ledger_is_away_is_live_but_not_ready(redis_url: str,
                                                              tmp_path: Path) -> None:
    port = free_port()
    env = cluster_env(redis_url, "postgresql+psycopg://postgres@127.0.0.1:1/none",
                      ECOBATCH_METRICS_PORT=str(port), ECOBATCH_METRICS_ADDR="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    with ForkedGroup(env=env, log_dir=tmp_path / "logs") as children:
        children.start("router", ["router"])

        def answers() -> bool:
            children.check_alive()
            return get(url + "/healthz")[0] == 200

        wait_until("the router's /healthz", answers, 120, poll_s=0.5)
        code, text = get(url + "/readyz")
    body = json.loads(text)
    assert code == 503 and body["ready"] is False and "broker" not in body
    assert body["ledger"].startswith("cannot reach the ledger: OperationalError")

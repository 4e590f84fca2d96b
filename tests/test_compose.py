"""compose.yaml has the services docs/architecture.md names, each with a healthcheck, and the
Prometheus and Grafana provisioning it mounts agrees with the metrics ports (no Docker engine here
to run `docker compose`; tests/test_metrics_cluster.py checks the dashboard against a real scrape)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:  # type: ignore[type-arg]
    data: dict = yaml.safe_load((ROOT / "compose.yaml").read_text())  # type: ignore[type-arg]
    return data


def test_compose_has_broker_ledger_router_workers_and_flower() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "router", "flower"} <= set(services)
    assert "noeviction" in services["redis"]["command"]


def test_one_worker_service_per_registered_device_with_gpu_reservations() -> None:
    services = _compose()["services"]
    registry = tomllib.loads((ROOT / "examples" / "compose-devices.toml").read_text())
    for device in registry["device"]:
        svc = services[f"worker-{device['name']}"]
        assert svc["command"][:3] == ["worker", "--device", device["name"]]
        reservations = svc.get("deploy", {}).get("resources", {}).get("reservations", {})
        if device["kind"] == "nvidia":
            assert reservations["devices"][0]["capabilities"] == ["gpu"]
        else:
            assert not reservations


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in _compose()["services"].items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def _metrics_ports() -> dict[str, int]:
    """Each ecobatch service's metrics port by the rule: the router on ECOBATCH_METRICS_PORT,
    the worker of the registry's Nth device (from 0) on that port + 1 + N."""
    base = int(_compose()["x-ecobatch-env"]["ECOBATCH_METRICS_PORT"])
    registry = tomllib.loads((ROOT / "examples" / "compose-devices.toml").read_text())
    return {"router": base, **{f"worker-{d['name']}": base + 1 + i
                               for i, d in enumerate(registry["device"])}}


def test_router_and_workers_are_probed_and_scraped_on_their_metrics_ports() -> None:
    services = _compose()["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    for name, port in _metrics_ports().items():
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert f"{name}:{port}" in targets
    assert "flower:5555" in targets


def test_prometheus_and_grafana_are_provisioned_from_files_in_the_repo() -> None:
    services = _compose()["services"]
    assert {"prometheus", "grafana"} <= set(services)
    mounts = [v.split(":")[0] for s in ("prometheus", "grafana") for v in services[s]["volumes"]
              if v.startswith("./")]
    assert mounts and all((ROOT / m).exists() for m in mounts)
    sources = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
                              / "prometheus.yml").read_text())["datasources"]
    assert sources[0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "ecobatch.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {sources[0]["uid"]}
    provider = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "dashboards"
                               / "ecobatch.yml").read_text())["providers"][0]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in \
        services["grafana"]["volumes"]

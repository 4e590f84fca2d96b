"""compose.yaml has the services docs/architecture.md names (no Docker engine here to run it)."""

from __future__ import annotations

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

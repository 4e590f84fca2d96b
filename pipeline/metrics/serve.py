"""The HTTP side of a long-running process: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/metrics``: the Prometheus text format of the whole process group. A router or worker is a
  Celery main process whose prefork pool children do the work, so the metrics run in
  prometheus_client's multiprocess mode: :func:`use_multiprocess_dir` gives the group a fresh
  private ``PROMETHEUS_MULTIPROC_DIR`` (under ``$PROMETHEUS_MULTIPROC_DIR`` when set, else the
  system's temporary folder; removed at exit) before the pool forks, and the main process
  serves what every member wrote there.
- ``/healthz``: live, 200 while the process answers.
- ``/readyz``: ready, 200 when the broker and the ledger both answer within
  :data:`PROBE_TIMEOUT_S`, else 503; the JSON body says which failed and why.

Ports: the router serves ``ECOBATCH_METRICS_PORT``, the worker of the registry's device N
(from 0) that port + 1 + N (:func:`worker_port`), so a worker per device on one host never
collides; ``--metrics-port`` overrides either. 0 turns the server off.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess, values
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device, Registry
from pipeline.metrics.probes import readiness
from pipeline.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
Ready = Callable[[], dict[str, str]]
StartResponse = Callable[..., Any]


class _Quiet(WSGIRequestHandler):
    """No access log line per probe or scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


@dataclass
class MetricsServer:
    """A running metrics server; :meth:`close` stops it."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (useful after binding port 0 in tests)."""
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


def worker_port(settings: Settings, registry: Registry, device: Device) -> int:
    """The metrics port of ``device``'s worker: ``metrics_port + 1 + N`` for the registry's
    Nth device, 0 (off) when ``metrics_port`` is 0."""
    if not settings.metrics_port:
        return 0
    return settings.metrics_port + 1 + registry.names.index(device.name)


def use_multiprocess_dir() -> Path:
    """Make a fresh multiprocess folder for this process and the children it forks, and
    switch prometheus_client to multiprocess values (also if it was imported already)."""
    owner = os.getpid()
    path = Path(tempfile.mkdtemp(prefix=f"ecobatch-metrics-{owner}-",
                                 dir=os.environ.get(MULTIPROC_ENV) or None))
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.get_value_class()
    # Pool children inherit the handler; only the process that made the folder removes it.
    atexit.register(_remove_if_owner, path, owner)
    return path


def _remove_if_owner(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def group_registry() -> CollectorRegistry:
    """A registry reading every process's values from the multiprocess folder."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def health_app(registry: Collector, ready: Ready) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/healthz``, ``/readyz``, and the metrics of ``registry`` elsewhere."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _reply(start_response, 200, {"live": True})
        if path == "/readyz":
            problems = ready()
            return _reply(start_response, 503 if problems else 200,
                          {"ready": not problems, **problems})
        return metrics(environ, start_response)

    return app


def _reply(start_response: StartResponse, code: int, body: dict[str, Any]) -> list[bytes]:
    status = {200: "200 OK", 503: "503 Service Unavailable"}[code]
    data = (json.dumps(body) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]


def serve(registry: Collector, ready: Ready, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve :func:`health_app` on ``addr:port`` from a daemon thread.

    Raises:
        ConfigError: the port cannot be bound (taken by another process, say).
    """
    try:
        httpd = make_server(addr, port, health_app(registry, ready), ThreadingWSGIServer,
                            handler_class=_Quiet)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {e}; give each process on "
                          "a host its own port (ECOBATCH_METRICS_PORT, --metrics-port)") from e
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)


def start_metrics(settings: Settings, port: int) -> MetricsServer | None:
    """Serve this process group's metrics and probes on ``port``; None when ``port`` is 0.

    Call it in the main process before the pool forks.

    Raises:
        ConfigError: the port cannot be bound.
    """
    if not port:
        return None
    use_multiprocess_dir()
    return serve(group_registry(), readiness(settings), port, settings.metrics_addr)

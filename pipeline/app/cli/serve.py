"""``ecobatch serve``: the OpenAI-compatible Files and Batches HTTP service."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from pipeline.app.cli.common import build_settings, database_url_option, handle_errors, redis_url_option
from pipeline.errors import ConfigError

DEFAULT_SWEEP_INTERVAL_S = 10.0

DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_FILE_LINES = 50_000


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--files-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("ecobatch-files"), show_default=True,
              help="Folder of uploaded files, batch records and output files; every host "
                   "serving the same cluster must share it.")
@click.option("--max-file-bytes", type=click.IntRange(1), default=DEFAULT_MAX_FILE_BYTES,
              show_default=True, help="Largest upload, in bytes (larger: HTTP 413).")
@click.option("--max-file-lines", type=click.IntRange(1), default=DEFAULT_MAX_FILE_LINES,
              show_default=True, help="Most lines in an upload (more: HTTP 400).")
@click.option("--defer/--no-defer", default=False, show_default=True,
              help="Hold each batch for the lowest-carbon window within its completion window "
                   "(a batch's metadata 'ecobatch_defer' overrides it).")
@click.option("--sweep-interval-s", type=click.FloatRange(0.1), default=DEFAULT_SWEEP_INTERVAL_S,
              show_default=True,
              help="Seconds between sweeps over open batches: a batch whose completion window "
                   "has passed is expired, and an ended one gets its files, unread.")
@redis_url_option
@database_url_option
@handle_errors
def serve(host: str, port: int, files_dir: Path, max_file_bytes: int, max_file_lines: int,
          defer: bool, sweep_interval_s: float, redis_url: str | None,
          database_url: str | None) -> None:
    """Serve OpenAI's /v1/files and /v1/batches so the openai SDK works unchanged.

    API keys come from ECOBATCH_API_KEYS (comma-separated; kept only as hashes). Each key is
    a client of the submit rate limit (ECOBATCH_SUBMIT_RATE_PER_MIN batches a minute; past it,
    HTTP 429). A deferred batch's object shows its planned window and the CO2e deferral saves
    (estimated) under the key 'ecobatch'. Without
    ECOBATCH_REDIS_URL it starts its own Redis, router and workers as `run` does; with it, it
    joins that cluster. A batch is an ecobatch job: `ecobatch status BATCH_ID` shows it.
    """
    import uvicorn

    from pipeline.app.context import AppContext
    from pipeline.app.run import local_cluster
    from pipeline.app.serve.api import create_app
    from pipeline.app.serve.auth import KeyRing
    from pipeline.app.serve.batches import BatchService
    from pipeline.app.serve.store import FileLimits, Store

    keys = [k for k in os.environ.get("ECOBATCH_API_KEYS", "").split(",") if k.strip()]
    if not keys:
        raise ConfigError("set ECOBATCH_API_KEYS to one or more comma-separated API keys")
    settings = build_settings(redis_url=redis_url, database_url=database_url)
    with contextlib.ExitStack() as stack:
        settings = local_cluster(settings, stack, spawn=not settings.redis_url)
        svc = BatchService(AppContext(settings), Store(files_dir.resolve()), defer)
        app = create_app(svc, KeyRing(keys), FileLimits(max_file_bytes, max_file_lines),
                         sweep_interval_s)
        click.echo(f"ecobatch serve on http://{host}:{port}/v1", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")

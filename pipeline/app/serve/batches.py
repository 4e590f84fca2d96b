"""Batches: create one as an ecobatch job, and show it as OpenAI's batch object.

The status is derived from the job on each read; when the job has ended, the output and error
files are written once (``write_openai_paths``) and their ids kept in the batch record.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.app.serve.extension import batch_extension
from pipeline.app.serve.store import Store
from pipeline.errors import InputError, NotFoundError
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.intake.limits import line_limit, take_submit_token
from pipeline.intake.parse import read_stream
from pipeline.intake.submit import JobOptions, SubmitContext, check_job, submit_checked
from pipeline.ledger.jobs import JobStatusView, cancel, iter_results, job_status
from pipeline.ledger.models import JobStatus
from pipeline.ledger.state import EXPIRED_REASON
from pipeline.report.openai_files import EXTENSION_KEY, write_openai_paths

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
WINDOW_UNITS_S = {"s": 1, "m": 60, "h": 3600}
MAX_WINDOW_S = 7 * 24 * 3600


@dataclass
class BatchService:
    """What the batch endpoints need: the submission context, the store, the deferral default.

    ``lock`` serialises the changes to batch records in this process (expiry, cancel,
    finalising), which the request handlers and the expiry sweeper both make.
    """

    ctx: SubmitContext
    store: Store
    defer: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def api_client(owner: str) -> str:
    """The client an API key is for the submit rate limit (its owner folder name, a hash)."""
    return f"api-key:{owner}"


def create_batch(svc: BatchService, owner: str, body: dict[str, Any]) -> dict[str, Any]:
    """Validate the request, then submit its file as a job; a bad file gives a failed batch.

    Raises:
        RateLimitError: this key created more batches this minute than the submit rate limit
            (``ECOBATCH_SUBMIT_RATE_PER_MIN``) allows (HTTP 429).
        InputError: a bad endpoint or window (HTTP 400).
        NotFoundError: the input file is not this key's.
    """
    take_submit_token(svc.ctx.redis, api_client(owner), svc.ctx.settings.submit_rate_per_min)
    endpoint, window, window_s = _checked_request(body)
    svc.store.file(owner, str(body.get("input_file_id", "")))
    now = int(time.time())
    record = {"id": "", "input_file_id": body["input_file_id"], "endpoint": endpoint,
              "completion_window": window, "metadata": body.get("metadata") or None,
              "created_at": now, "expires_at": now + window_s,
              "ecobatch_deferred": _deferred(svc, body.get("metadata") or {})}
    try:
        record["id"] = _submit(svc, owner, record)
    except InputError as e:
        record.update(id=f"batch_failed_{uuid.uuid4().hex}", failed_at=now,
                      errors={"object": "list", "data": [_line_error(e)]})
    svc.store.save_batch(owner, record)
    return batch_object(svc, owner, record)


def _checked_request(body: dict[str, Any]) -> tuple[str, str, int]:
    endpoint, window = body.get("endpoint"), str(body.get("completion_window"))
    if endpoint not in ENDPOINTS:
        raise InputError(f"endpoint {endpoint!r} is not supported; use one of "
                         f"{', '.join(ENDPOINTS)}", field="endpoint")
    return str(endpoint), window, window_seconds(window)


def window_seconds(window: str) -> int:
    """A completion window in seconds: OpenAI's ``24h``, or any ``<N>h``, ``<N>m`` or ``<N>s``
    up to a week (an ecobatch extension; the SDK passes the string through).

    Raises:
        InputError: another form, zero, or longer than a week.
    """
    n, unit = window[:-1], window[-1:]
    if not n.isdigit() or unit not in WINDOW_UNITS_S or not 0 < int(n) * WINDOW_UNITS_S[unit] <= MAX_WINDOW_S:
        raise InputError(f"completion_window {window!r} is not supported; use '24h' (or <N>h, "
                         "<N>m, <N>s up to a week)", field="completion_window")
    return int(n) * WINDOW_UNITS_S[unit]


def _submit(svc: BatchService, owner: str, record: dict[str, Any]) -> str:
    settings = svc.ctx.settings
    path = svc.store.content_path(owner, record["input_file_id"])
    with path.open("rb") as fh:
        records = read_stream(fh, "openai", line_limit(settings, svc.ctx.tokenizer))
    _check_urls(records, record["endpoint"])
    deadline = datetime.fromtimestamp(record["expires_at"], UTC)
    options = JobOptions(deadline=deadline, deferred=record["ecobatch_deferred"])
    job = check_job(records, settings, svc.ctx.tokenizer, source=f"api:{record['input_file_id']}",
                    options=options)
    return submit_checked(svc.ctx.engine, svc.ctx.redis, job).job_id


def _check_urls(records: list[Any], endpoint: str) -> None:
    for i, r in enumerate(records, 1):
        url = r.metadata["openai"].get("url") if isinstance(r.metadata, dict) else None
        if url not in (None, endpoint):
            raise InputError(f"url {url!r} differs from the batch's endpoint {endpoint!r}",
                             line=i, field="url")


def _deferred(svc: BatchService, metadata: dict[str, Any]) -> bool:
    flag = metadata.get("ecobatch_defer") if isinstance(metadata, dict) else None
    return svc.defer if flag is None else str(flag).lower() in ("1", "true", "yes")


def _line_error(e: InputError) -> dict[str, Any]:
    return {"code": "invalid_request", "message": str(e), "param": e.field, "line": e.line}


def batch_object(svc: BatchService, owner: str, record: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's batch object of a record, its status read from the job; a batch whose window
    has passed is expired, and one that has ended is finalised (once) on the way."""
    if "failed_at" in record:
        return {**_base_object(record), "status": "failed"}
    view = job_status(svc.ctx.engine, record["id"])
    if _late(record, view) or (view.finished and "finalizing_at" not in record):
        with svc.lock:
            record, view = _settle(svc, owner, record["id"])
    return {**_base_object(record), "status": _status(record, view),
            "request_counts": _counts(view), "in_progress_at": record["created_at"],
            EXTENSION_KEY: batch_extension(svc.ctx.engine, record)}


def _late(record: dict[str, Any], view: JobStatusView) -> bool:
    return not view.finished and "expired_at" not in record and time.time() >= record["expires_at"]


def _settle(svc: BatchService, owner: str, batch_id: str) -> tuple[dict[str, Any], JobStatusView]:
    """Expire the batch if it is late, finalise it if it has ended; under ``svc.lock``, on the
    record as it is now (another thread may have settled it meanwhile)."""
    record = svc.store.batch(owner, batch_id)
    view = job_status(svc.ctx.engine, batch_id)
    if _late(record, view):
        record["expired_at"] = int(time.time())
        svc.store.save_batch(owner, record)
        view = cancel(svc.ctx.engine, batch_id, EXPIRED_REASON)
    if view.finished and "finalizing_at" not in record:
        _finalise(svc, owner, record)
    return record, view


def _base_object(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "endpoint", "input_file_id", "completion_window", "created_at", "expires_at",
            "metadata", "errors", "output_file_id", "error_file_id", "failed_at", "expired_at",
            "cancelling_at", "cancelled_at", "completed_at", "finalizing_at")
    return {"object": "batch", **{k: record.get(k) for k in keys},
            "request_counts": {"total": 0, "completed": 0, "failed": 0}}


def _counts(view: JobStatusView) -> dict[str, int]:
    return {"total": view.total, "completed": view.n_results, "failed": view.n_failed}


def _status(record: dict[str, Any], view: JobStatusView) -> str:
    if "expired_at" in record:
        return "expired" if view.finished else "cancelling"
    if view.status == JobStatus.CANCELED:
        return "cancelled" if view.finished else "cancelling"
    return "completed" if view.finished else "in_progress"


def cancel_batch(svc: BatchService, owner: str, batch_id: str) -> dict[str, Any]:
    """Cancel a batch's job (idempotent); return the batch object."""
    with svc.lock:
        record = svc.store.batch(owner, batch_id)
        if "failed_at" not in record:
            cancel(svc.ctx.engine, batch_id)
            record.setdefault("cancelling_at", int(time.time()))
            svc.store.save_batch(owner, record)
    return batch_object(svc, owner, record)


def _finalise(svc: BatchService, owner: str, record: dict[str, Any]) -> None:
    now = int(time.time())
    out_id, err_id = f"file-{record['id']}-output", f"file-{record['id']}-errors"
    out_path = svc.store.content_path(owner, out_id)
    err_path = svc.store.content_path(owner, err_id)
    model = resolve_model_path(svc.ctx.settings.model).stem
    rows = iter_results(svc.ctx.engine, record["id"])
    # written aside, then moved in place: a serve on another host finalising the same batch
    # at once writes the same answers, and a reader never sees a half-written file
    out_tmp, err_tmp = (p.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                        for p in (out_path, err_path))
    n_out, n_err = write_openai_paths(rows, out_tmp, err_tmp, model)
    out_tmp.replace(out_path)
    err_tmp.replace(err_path)
    record["output_file_id"] = _add(svc, owner, out_id, "batch_output", n_out)
    record["error_file_id"] = _add(svc, owner, err_id, "batch_output", n_err)
    record["finalizing_at"] = now
    key = {"cancelling_at": "cancelled_at", "expired_at": "expired_at"}
    done_key = next((key[k] for k in key if k in record), "completed_at")
    record[done_key] = record.get(done_key) or now
    svc.store.save_batch(owner, record)


def _add(svc: BatchService, owner: str, file_id: str, purpose: str, n_lines: int) -> str | None:
    path = svc.store.content_path(owner, file_id)
    if n_lines == 0:
        path.unlink(missing_ok=True)
        return None
    svc.store.add_file(owner, file_id, path.name, purpose, path.stat().st_size)
    return file_id


def list_batches(svc: BatchService, owner: str, after: str | None, limit: int) -> dict[str, Any]:
    """A page of a key's batches, newest first, starting after the id ``after``."""
    records = svc.store.batches(owner)
    ids = [r["id"] for r in records]
    if after is not None and after not in ids:
        raise NotFoundError(f"no batch with id {after!r}")
    start = ids.index(after) + 1 if after is not None else 0
    page = [batch_object(svc, owner, r) for r in records[start:start + limit]]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(records)}

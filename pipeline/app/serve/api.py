"""The FastAPI app: OpenAI's ``/v1/files`` and ``/v1/batches``, errors in OpenAI's shape."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile

from pipeline.app.serve.auth import AuthError, KeyRing
from pipeline.app.serve.batches import BatchService, batch_object, cancel_batch, create_batch, list_batches
from pipeline.app.serve.store import FileLimits, UploadTooLarge
from pipeline.app.serve.sweeper import Sweeper
from pipeline.errors import EcobatchError, InputError, NotFoundError, RateLimitError

Auth = Annotated[str | None, Header()]
_STATUS = [(AuthError, 401, "authentication_error"), (NotFoundError, 404, "invalid_request_error"),
           (UploadTooLarge, 413, "invalid_request_error"), (RateLimitError, 429, "requests"),
           (InputError, 400, "invalid_request_error")]
_CODES = {401: "invalid_api_key", 404: "not_found", 413: "file_too_large",
          429: "rate_limit_exceeded"}


def error_response(e: EcobatchError) -> JSONResponse:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``; a rate limit
    also says in ``Retry-After`` when the key may submit again (the SDK waits that long)."""
    status, kind = next(((s, k) for cls, s, k in _STATUS if isinstance(e, cls)),
                        (500, "server_error"))
    param = getattr(e, "field", None)
    headers = ({"Retry-After": str(e.retry_after_s)} if isinstance(e, RateLimitError) else None)
    return JSONResponse({"error": {"message": str(e), "type": kind, "param": param,
                                   "code": _CODES.get(status)}}, status_code=status,
                        headers=headers)


def _ecobatch_error(_request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, EcobatchError)
    return error_response(e)


def _invalid(_request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    first = e.errors()[0] if e.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return error_response(InputError(str(first.get("msg", "invalid request")), field=param))


def create_app(svc: BatchService, keys: KeyRing, limits: FileLimits,
               sweep_interval_s: float) -> FastAPI:
    """The app over one batch service, key ring and upload limits; while it runs, the expiry
    sweeper settles open batches every ``sweep_interval_s``."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = Sweeper(svc, sweep_interval_s)
        sweeper.start()
        try:
            yield
        finally:
            sweeper.stop()

    app = FastAPI(title="ecobatch", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_exception_handler(EcobatchError, _ecobatch_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.get("/healthz")(_healthz)
    _file_routes(app, svc, keys, limits)
    _batch_routes(app, svc, keys)
    return app


def _healthz() -> dict[str, str]:
    """Liveness for probes (no key needed)."""
    return {"status": "ok"}


def _file_routes(app: FastAPI, svc: BatchService, keys: KeyRing, limits: FileLimits) -> None:
    @app.post("/v1/files")
    async def upload(request: Request, authorization: Auth = None) -> dict[str, Any]:
        owner = keys.owner(authorization)
        _refuse_declared_size(request, limits)
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch":
            raise InputError(f"purpose {purpose!r} is not supported; use 'batch'", field="purpose")
        if not isinstance(upload, UploadFile):
            raise InputError("no file given", field="file")
        return await svc.store.save_upload(owner, _chunks(upload), upload.filename or "upload",
                                           "batch", limits)

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str, authorization: Auth = None) -> dict[str, Any]:
        return svc.store.file(keys.owner(authorization), file_id)

    @app.get("/v1/files/{file_id}/content")
    def content(file_id: str, authorization: Auth = None) -> FileResponse:
        owner = keys.owner(authorization)
        svc.store.file(owner, file_id)
        return FileResponse(svc.store.content_path(owner, file_id),
                            media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}")
    def delete(file_id: str, authorization: Auth = None) -> dict[str, Any]:
        svc.store.delete_file(keys.owner(authorization), file_id)
        return {"id": file_id, "object": "file", "deleted": True}


MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _refuse_declared_size(request: Request, limits: FileLimits) -> None:
    """Refuse, before reading it, a body whose declared length is past the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise UploadTooLarge(f"file larger than the limit of {limits.max_bytes} bytes "
                             "(ecobatch serve --max-file-bytes)", field="file")


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 16):
        yield chunk


def _batch_routes(app: FastAPI, svc: BatchService, keys: KeyRing) -> None:
    @app.post("/v1/batches")
    async def create(request: Request, authorization: Auth = None) -> dict[str, Any]:
        owner = keys.owner(authorization)
        return create_batch(svc, owner, await _json_body(request))

    @app.get("/v1/batches/{batch_id}")
    def get(batch_id: str, authorization: Auth = None) -> dict[str, Any]:
        owner = keys.owner(authorization)
        return batch_object(svc, owner, svc.store.batch(owner, batch_id))

    @app.get("/v1/batches")
    def listing(authorization: Auth = None, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        return list_batches(svc, keys.owner(authorization), after, limit)

    @app.post("/v1/batches/{batch_id}/cancel")
    def cancel(batch_id: str, authorization: Auth = None) -> dict[str, Any]:
        return cancel_batch(svc, keys.owner(authorization), batch_id)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body

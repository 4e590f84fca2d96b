"""The files folder: uploads streamed to disk, their metadata and the batch records, per key.

Layout: ``<root>/<owner>/files/<file_id>.jsonl`` with ``<file_id>.json`` beside it, and
``<root>/<owner>/batches/<batch_id>.json``. ``owner`` is the hash of the caller's API key, so
one key's objects are not even addressable by another (their lookups are 404).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, NotFoundError

CHUNK_BYTES = 1 << 16


class UploadTooLarge(InputError):
    """An upload passed the configured size limit (HTTP 413)."""


@dataclass(frozen=True)
class FileLimits:
    """Upload limits: bytes of a file and lines in it."""

    max_bytes: int
    max_lines: int


class Store:
    """Files and batch records of every key under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, owner: str, kind: str) -> Path:
        path = self.root / owner / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def content_path(self, owner: str, file_id: str) -> Path:
        """Where a file's bytes are (checked to exist by :meth:`file`)."""
        return self._dir(owner, "files") / f"{_safe(file_id)}.jsonl"

    async def save_upload(self, owner: str, chunks: AsyncIterator[bytes], filename: str,
                          purpose: str, limits: FileLimits) -> dict[str, Any]:
        """Stream ``chunks`` to a new file, refusing it past ``limits``; return its object."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self.content_path(owner, file_id)
        try:
            size = await _copy_limited(chunks, path, limits)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self.add_file(owner, file_id, filename, purpose, size)

    def add_file(self, owner: str, file_id: str, filename: str, purpose: str,
                 size: int) -> dict[str, Any]:
        """Record the metadata of a file whose bytes are in place."""
        obj = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        _write_json(self._dir(owner, "files") / f"{file_id}.json", obj)
        return obj

    def file(self, owner: str, file_id: str) -> dict[str, Any]:
        """A file's object. Raises NotFoundError: not this key's file."""
        return _read_json(self._dir(owner, "files") / f"{_safe(file_id)}.json", "file", file_id)

    def delete_file(self, owner: str, file_id: str) -> None:
        """Remove a file and its metadata. Raises NotFoundError: not this key's file."""
        self.file(owner, file_id)
        self.content_path(owner, file_id).unlink(missing_ok=True)
        (self._dir(owner, "files") / f"{file_id}.json").unlink()

    def save_batch(self, owner: str, record: dict[str, Any]) -> None:
        """Write a batch record (atomically: a reader sees the old or the new one)."""
        _write_json(self._dir(owner, "batches") / f"{record['id']}.json", record)

    def batch(self, owner: str, batch_id: str) -> dict[str, Any]:
        """A batch record. Raises NotFoundError: not this key's batch."""
        return _read_json(self._dir(owner, "batches") / f"{_safe(batch_id)}.json", "batch",
                          batch_id)

    def owners(self) -> list[str]:
        """Every key that has stored anything (its owner folder name)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def batches(self, owner: str) -> list[dict[str, Any]]:
        """Every batch record of a key, newest first."""
        records = [json.loads(p.read_text()) for p in self._dir(owner, "batches").glob("*.json")]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)


async def _copy_limited(chunks: AsyncIterator[bytes], path: Path, limits: FileLimits) -> int:
    size = lines = 0
    with path.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            lines += chunk.count(b"\n")
            if size > limits.max_bytes:
                raise UploadTooLarge(f"file larger than the limit of {limits.max_bytes} bytes "
                                     "(ecobatch serve --max-file-bytes)", field="file")
            if lines > limits.max_lines:
                raise InputError(f"file has more than the limit of {limits.max_lines} lines "
                                 "(ecobatch serve --max-file-lines)", field="file")
            out.write(chunk)
    return size


def _safe(object_id: str) -> str:
    """Refuse an id that could leave the folder (it then names nothing: 404)."""
    if not object_id.replace("-", "").replace("_", "").isalnum():
        raise NotFoundError(f"no such object: {object_id!r}")
    return object_id


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path, kind: str, object_id: str) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise NotFoundError(f"no {kind} with id {object_id!r}") from None

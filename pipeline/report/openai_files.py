"""A job's results as OpenAI batch output and error files.

Each answered prompt becomes an output line ``{"id", "custom_id", "response": {"status_code":
200, "request_id", "body"}, "error": null}`` whose body is a complete ``chat.completion`` (or
``text_completion``) object with ``usage`` and the ``model`` that really answered (the served
model's registry name, which may differ from the alias the line asked for); ecobatch's own
figures, the model's quality score among them, sit under the body's ``ecobatch`` key. Each
dead-lettered prompt becomes an error line with its reason. The export rows are those of
:func:`pipeline.ledger.jobs.iter_results`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pipeline.ledger.rows import ExportRow
from pipeline.ledger.state import EXPIRED_REASON

CHAT_URL = "/v1/chat/completions"
EXTENSION_KEY = "ecobatch"
_FIGURES = ("device", "model_quality", "batch_id", "energy_j", "energy_source", "energy_measured",
            "host_energy_j", "host_energy_source", "host_energy_measured", "carbon_g",
            "embodied_carbon_g", "water_l", "cost_usd", "intensity_g_per_kwh",
            "intensity_signal", "ttft_s", "latency_s")


def write_openai_files(rows: Iterable[ExportRow], out: TextIO, errors: TextIO,
                       default_model: str) -> tuple[int, int]:
    """Write answered rows to ``out`` and dead ones to ``errors``; return both counts.

    Args:
        rows: export rows in input order.
        out: the output file.
        errors: the error file.
        default_model: the model named for a prompt whose batch did not record its model and
            that did not come from an OpenAI line.
    """
    counts = [0, 0]
    created = int(time.time())
    for row in rows:
        answered = row.get("output") is not None
        line = answer_line(row, default_model, created) if answered else error_line(row)
        (out if answered else errors).write(json.dumps(line, ensure_ascii=False) + "\n")
        counts[0 if answered else 1] += 1
    return counts[0], counts[1]


def error_path_for(output: Path) -> Path:
    """The error file beside an output file: ``out.jsonl`` -> ``out.errors.jsonl``."""
    return output.with_name(f"{output.stem}.errors{output.suffix or '.jsonl'}")


def write_openai_paths(rows: Iterable[ExportRow], output: Path, errors: Path | None,
                       default_model: str) -> tuple[int, int]:
    """:func:`write_openai_files` to files (``errors`` None: :func:`error_path_for`)."""
    err_path = errors or error_path_for(output)
    with output.open("w", encoding="utf-8") as out, err_path.open("w", encoding="utf-8") as err:
        return write_openai_files(rows, out, err, default_model)


def _request_of(row: ExportRow, default_model: str) -> tuple[str, str]:
    """The url a row was asked with (its OpenAI line's, else by its shape) and the model that
    answered it: the served model its batch ran, else (a batch routed before models were
    chosen) the model its line named, else ``default_model``."""
    meta = (row.get("metadata") or {}).get("openai")
    if isinstance(meta, dict):
        return str(meta.get("url")), row.get("model") or str(meta.get("model"))
    url = CHAT_URL if row.get("messages") is not None else "/v1/completions"
    return url, row.get("model") or default_model


def _line_id(row: ExportRow) -> str:
    return "batch_req_" + hashlib.sha256(row["prompt_id"].encode()).hexdigest()[:24]


def answer_line(row: ExportRow, default_model: str, created: int) -> dict[str, Any]:
    """The output line of one answered row."""
    url, model = _request_of(row, default_model)
    body = _chat_body(row) if url == CHAT_URL else _text_body(row)
    body.update(id=("chatcmpl-" if url == CHAT_URL else "cmpl-") + _line_id(row)[10:],
                created=created, model=model, usage=_usage(row))
    body[EXTENSION_KEY] = {name: row.get(name) for name in _FIGURES}
    return {"id": _line_id(row), "custom_id": row["id"], "error": None,
            "response": {"status_code": 200, "request_id": row["prompt_id"], "body": body}}


def _chat_body(row: ExportRow) -> dict[str, Any]:
    message = {"role": "assistant", "content": row["output"], "refusal": None}
    return {"object": "chat.completion", "choices": [
        {"index": 0, "message": message, "finish_reason": row["finish_reason"], "logprobs": None}]}


def _text_body(row: ExportRow) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [
        {"index": 0, "text": row["output"], "finish_reason": row["finish_reason"], "logprobs": None}]}


def _usage(row: ExportRow) -> dict[str, int]:
    prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def error_line(row: ExportRow) -> dict[str, Any]:
    """The error-file line of one dead-lettered row, with its reason."""
    reason = row.get("error") or "dead-lettered"
    code = "batch_expired" if reason == EXPIRED_REASON else "request_failed"  # OpenAI's codes
    return {"id": _line_id(row), "custom_id": row["id"], "response": None,
            "error": {"code": code, "message": reason}}

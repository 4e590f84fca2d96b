"""OpenAI batch input lines, turned into ecobatch records.

A line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions",
"body": {...}}`` becomes the record ``{"id": custom_id, "messages" | "prompt", "max_tokens",
sampling fields..., "metadata": {"openai": {"url", "model", "line"}}}``, which the usual record
validation then checks. A body field ecobatch cannot honour is refused by name, never ignored.
The model each line names is checked against what the fleet serves by :func:`check_models`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.fleet.devices import load_registry
from pipeline.fleet.modelfile import resolve_model_path
from pipeline.intake.sampling import SAMPLING_FIELDS
from pipeline.settings import Settings

URLS = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}
LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})
_PASSED = frozenset(SAMPLING_FIELDS)
# Fields with a value that asks for nothing ecobatch does not do; any other value is refused.
# ``user`` and ``metadata`` label a request and change no answer: any value is accepted.
_HARMLESS: dict[str, tuple[Any, ...] | None] = {
    "n": (1,), "logprobs": (False, None), "stream": (False, None), "echo": (False,),
    "best_of": (1,), "parallel_tool_calls": (None,), "tools": (None, []),
    "user": None, "store": (False, None), "metadata": None,
}


def is_openai_line(obj: object) -> bool:
    """Whether a parsed JSONL object is an OpenAI batch line (it has a ``custom_id``)."""
    return isinstance(obj, Mapping) and "custom_id" in obj


def openai_record(obj: object, line: int, url_seen: list[str]) -> dict[str, Any]:
    """The ecobatch record of one OpenAI batch line.

    Args:
        obj: the parsed line.
        line: its 1-based line number, for errors and for :func:`check_models`.
        url_seen: the url of the file's first line (filled by the first call); every line
            must use the same one, as OpenAI's Batch API requires.

    Raises:
        InputError: not an OpenAI line, a bad ``method``/``url``, or an unsupported body
            field (names the line and field).
    """
    if not isinstance(obj, Mapping) or not is_openai_line(obj):
        raise InputError("expected an OpenAI batch line with 'custom_id', 'method', 'url' and "
                         "'body' (the file's first line is one)", line=line)
    extra = sorted(set(obj) - LINE_KEYS)
    if extra:
        raise InputError("unknown field in an OpenAI batch line", line=line, field=extra[0])
    url = _checked_url(obj, line, url_seen)
    body = obj.get("body")
    if not isinstance(body, Mapping):
        raise InputError("'body' must be a JSON object", line=line, field="body")
    record = _body_fields(body, URLS[url], line)
    record["id"] = obj["custom_id"]
    record["model"] = body["model"]  # the served model that answers it (see "Several models")
    record["metadata"] = {"openai": {"url": url, "model": body.get("model"), "line": line}}
    return record


def _checked_url(obj: Mapping[str, Any], line: int, url_seen: list[str]) -> str:
    if obj.get("method") != "POST":
        raise InputError(f"method must be POST (got {obj.get('method')!r})", line=line,
                         field="method")
    url = obj.get("url")
    if url not in URLS:
        raise InputError(f"url {url!r} is not supported; use one of {', '.join(URLS)}",
                         line=line, field="url")
    if not url_seen:
        url_seen.append(url)
    elif url != url_seen[0]:
        raise InputError(f"url {url!r} differs from the first line's {url_seen[0]!r}; one "
                         "file holds requests of one endpoint", line=line, field="url")
    return str(url)


def _body_fields(body: Mapping[str, Any], text_key: str, line: int) -> dict[str, Any]:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InputError("body needs the model's name", line=line, field="body.model")
    record: dict[str, Any] = {}
    for key, value in body.items():
        if key == "model":
            continue
        if key == text_key or key in _PASSED:
            record[key] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            if "max_tokens" in record:
                raise InputError("give max_tokens or max_completion_tokens, not both",
                                 line=line, field=f"body.{key}")
            record["max_tokens"] = value
        elif not _harmless(key, value):
            raise InputError(f"{key!r} is not supported by ecobatch", line=line,
                             field=f"body.{key}")
    if text_key not in record:
        raise InputError(f"body needs {text_key!r}", line=line, field=f"body.{text_key}")
    return record


def _harmless(key: str, value: Any) -> bool:
    """Whether ``key: value`` asks for nothing beyond what ecobatch does (``n: 1``, say)."""
    if key not in _HARMLESS:
        return False
    allowed = _HARMLESS[key]
    return allowed is None or value in allowed


def served_names(model_paths: Collection[Path]) -> set[str]:
    """Names a line's ``model`` may use: each served GGUF file's name and stem."""
    return {name for p in model_paths for name in (p.name, p.stem)}


def served_models(settings: Settings) -> set[str]:
    """What the fleet serves: the model of each registry device, else ``ECOBATCH_MODEL`` (or
    the bundled one), by file name and stem (``SmolLM2-135M-Instruct.Q4_1``); a device listing
    several models adds each one's name (``gemma3-270m``) and file name.

    Raises:
        ConfigError: the registry or a model file is unreadable.
    """
    default = resolve_model_path(settings.model)
    if settings.devices is None:
        return served_names([default])
    devices = load_registry(settings.devices).devices
    listed = {name for d in devices if d.models is not None for m in d.models
              for name in (m.name, m.profile_name, (m.profile_name or "").removesuffix(".gguf"))
              if name}
    singles = [default if d.model is None else d.model for d in devices if d.models is None]
    return served_names(singles) | listed


def is_openai_record(record: Any) -> bool:
    """Whether a validated record came from an OpenAI batch line."""
    return isinstance(record.metadata, dict) and isinstance(record.metadata.get("openai"), dict)


def check_models(records: Sequence[Any], served: Collection[str]) -> None:
    """Refuse the first OpenAI record whose ``model`` the fleet does not serve.

    Args:
        records: validated records (:class:`pipeline.intake.parse.PromptIn`).
        served: accepted names (:func:`served_names`).

    Raises:
        InputError: names the line, the model and what is served.
    """
    for record in records:
        meta = (record.metadata or {}).get("openai")
        if isinstance(meta, dict) and meta.get("model") not in served:
            raise InputError(
                f"model {meta.get('model')!r} is not served here; use one of "
                f"{', '.join(sorted(served))}", line=meta.get("line"), field="body.model")

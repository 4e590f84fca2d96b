"""Parse and validate prompt input: JSONL, CSV or plain text, from a file or stdin.

The whole input is parsed and validated before anything is written, so one bad line means
nothing of that input is enqueued. Input is read line by line (:mod:`pipeline.intake.lines`), never
whole, and a line longer than the caller's limit is refused before the rest of it is read.
Every error is an :class:`~pipeline.errors.InputError` naming the 1-based line of the file
(for CSV, the file line where the record starts) and, where it applies, the field.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from typing_extensions import TypedDict

from pipeline.errors import InputError
from pipeline.intake.lines import (
    BOM,
    LineLimit,
    csv_lines,
    decoded_lines,
    nonblank_lines,
    starts_with_brace,
)
from pipeline.intake.openai_batch import is_openai_line, openai_record
from pipeline.intake.sampling import SAMPLING_FIELDS, Sampling

InputFormat = Literal["jsonl", "csv", "text", "openai"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("jsonl", "csv", "text", "openai")
MAX_TOKENS_CAP = 8192
MAX_ID_CHARS = 200
MAX_MODEL_CHARS = 200
_EXTENSIONS: dict[str, InputFormat] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "text",
}
_CSV_FIELDS = ("prompt", "id", "max_tokens")
_SAMPLING_KEYS = frozenset(SAMPLING_FIELDS)


class Message(TypedDict):
    """One chat message; ``role`` is system, user or assistant."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    role: Literal["system", "user", "assistant"]
    content: str


class PromptIn(BaseModel):
    """One validated input record: exactly one of ``prompt`` or ``messages``.

    A record gives its sampling fields (``temperature``, ``seed``, ``response_format``, ...)
    beside ``prompt``; :func:`validate_records` and the file readers gather them into
    ``sampling``.

    Attributes:
        prompt: plain prompt text (not empty or whitespace-only).
        messages: chat messages, at least one.
        id: the user's id (an int is turned into its decimal string); unique within one input.
        max_tokens: new-token limit for this prompt, in tokens; None uses the job default.
        metadata: free JSON object stored with the prompt and exported with its result.
        sampling: how this prompt is sampled; None: every default.
        model: the served model that must answer it, by name; None: the job's, else any.
        min_quality: the lowest model quality score it accepts (the registry's scale, 0-100);
            None: the job's, else any.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] | None = None
    max_tokens: Annotated[int, Field(gt=0, le=MAX_TOKENS_CAP)] | None = None
    metadata: dict[str, JsonValue] | None = None
    sampling: Sampling | None = None
    model: Annotated[str, Field(min_length=1, max_length=MAX_MODEL_CHARS)] | None = None
    min_quality: Annotated[float, Field(ge=0, le=100)] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _int_id_to_str(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("id")
    @classmethod
    def _id_storable(cls, value: str | None) -> str | None:
        if value is not None:
            _check_text(value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None:
            _check_text(value)
            if not value.strip():
                raise ValueError("prompt is empty or whitespace-only")
        return value

    @field_validator("messages")
    @classmethod
    def _messages_not_blank(cls, value: list[Message] | None) -> list[Message] | None:
        if value is not None:
            for m in value:
                _check_text(m["content"])
            if not any(m["content"].strip() for m in value):
                raise ValueError("every message content is empty or whitespace-only")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_storable(cls, value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        if value is not None:
            try:
                json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (ValueError, UnicodeEncodeError) as e:
                raise ValueError(f"not storable as JSON: {e}") from e
        return value


def _check_text(value: str) -> None:
    """Reject text that SQL cannot store: NUL characters (PostgreSQL) and lone surrogates."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    if value.isascii():  # O(1) in CPython; only non-ASCII text can hold a surrogate
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("contains a lone UTF-16 surrogate (bad \\u escape)") from e


def storable_text(value: str) -> str:
    """Return ``value`` if SQL can store it (no NUL, no lone surrogate).

    Raises:
        ValueError: it cannot be stored (pydantic turns this into a field error).
    """
    _check_text(value)
    return value


def external_id(record: PromptIn, position: int) -> str:
    """The id results are exported under: the user's id, else the 1-based position."""
    return record.id if record.id is not None else str(position)


def detect_format(path: str | Path) -> InputFormat:
    """Format from the file extension: .jsonl/.ndjson/.json, .csv, anything else text."""
    return _EXTENSIONS.get(Path(path).suffix.lower(), "text")


def sniff_format(data: bytes) -> InputFormat:
    """Format of a stream with no name: JSONL if the first non-blank byte is ``{``, else text."""
    head = data.removeprefix(BOM).lstrip()
    return "jsonl" if head.startswith(b"{") else "text"


def read_input(
    path: str | Path, fmt: str | None = None, *, stdin: BinaryIO | None = None,
    limit: LineLimit | None = None,
) -> list[PromptIn]:
    """Read and validate a whole prompt file; ``-`` reads ``stdin`` (binary).

    The file is read line by line, never whole, and no line longer than ``limit`` is held.

    Args:
        path: file path, or ``-`` for standard input.
        fmt: explicit format; None picks it from the extension (stdin is sniffed).
        stdin: binary stream to read for ``-``; None uses ``sys.stdin.buffer``.
        limit: the longest line accepted (see :func:`pipeline.intake.limits.line_limit`); None
            accepts any.

    Raises:
        InputError: the file cannot be read, a line is too long or any record is invalid.
    """
    try:
        if str(path) == "-":
            return read_stream(sys.stdin.buffer if stdin is None else stdin, fmt, limit)
        with Path(path).open("rb") as fh:
            return read_stream(fh, fmt or detect_format(path), limit)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e


def read_stream(stream: BinaryIO, fmt: str | None = None,
                limit: LineLimit | None = None) -> list[PromptIn]:
    """Read and validate prompts from a binary stream (a file, stdin, an HTTP upload).

    Args:
        stream: anything with ``readline(size)``; read line by line to its end.
        fmt: input format; None sniffs it (JSONL if the first non-blank byte is ``{``).
        limit: the longest line accepted; a longer one is refused with its line number
            before the rest of it is read. None accepts any.

    Raises:
        InputError: unknown format, invalid UTF-8, a line too long, a bad record, duplicate
            ids, or no records at all.
    """
    if fmt is not None and fmt not in INPUT_FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(INPUT_FORMATS)}")
    lines = decoded_lines(stream, limit)
    if fmt is None:
        braced, lines = starts_with_brace(lines)
        fmt = "jsonl" if braced else "text"
    items = {"jsonl": _jsonl_items, "csv": _csv_items, "text": _text_items,
             "openai": _jsonl_items}[fmt](lines)
    return _validate_all(items, openai=True if fmt == "openai" else None)


def parse_bytes(data: bytes, fmt: str) -> list[PromptIn]:
    """Decode (strict UTF-8) and validate a whole input already in memory.

    Raises:
        InputError: invalid UTF-8, a bad record, duplicate ids, or no records at all.
    """
    if fmt not in INPUT_FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(INPUT_FORMATS)}")
    return read_stream(io.BytesIO(data), fmt)


def validate_records(items: Iterable[str | Mapping[str, Any]]) -> list[PromptIn]:
    """Validate programmatic input: strings are prompts, mappings are JSONL-style records.

    Errors name the 1-based record number as the line.

    Raises:
        InputError: a bad record, duplicate ids, or no records at all.
    """
    return _validate_all(
        (n, {"prompt": item} if isinstance(item, str) else item)
        for n, item in enumerate(items, start=1)
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a repeated key (``json`` would silently keep the last one)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {repeated!r} in one object")
    return obj


def _jsonl_items(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    loads = json.JSONDecoder(parse_constant=_reject_constant,
                             object_pairs_hook=_object_without_duplicates).decode
    for n, line in nonblank_lines(lines):
        try:
            yield n, loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON: {e.msg} at column {e.colno}", line=n) from e
        except ValueError as e:  # NaN, Infinity or a duplicate key, from the hooks
            raise InputError(f"malformed JSON: {e}", line=n) from e


def _text_items(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    for n, line in nonblank_lines(lines):
        yield n, {"prompt": line}


def _csv_items(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    reader = csv.reader(csv_lines(lines), strict=True)
    header = _csv_header(reader)
    start = reader.line_num + 1
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield start, _csv_record(header, row, start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"malformed CSV: {e}", line=start) from e


def _csv_header(reader: Any) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("no prompts: the input is empty") from None
    except csv.Error as e:
        raise InputError(f"malformed CSV header: {e}", line=1) from e
    if "prompt" not in header:
        raise InputError("CSV header has no 'prompt' column", line=reader.line_num, field="prompt")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"CSV header repeats column(s) {dupes}", line=reader.line_num)
    return header


def _csv_record(header: list[str], row: list[str], line: int) -> dict[str, object]:
    if len(row) != len(header):
        raise InputError(f"{len(row)} fields but the header has {len(header)}", line=line)
    cells = dict(zip(header, row, strict=True))
    record: dict[str, object] = {"prompt": cells["prompt"]}
    if cells.get("id", "").strip():
        record["id"] = cells["id"].strip()
    raw_max = cells.get("max_tokens", "").strip()
    if raw_max:
        try:
            record["max_tokens"] = int(raw_max)
        except ValueError:
            raise InputError(
                f"max_tokens {raw_max!r} is not a whole number", line=line, field="max_tokens"
            ) from None
    extra = {k: v for k, v in cells.items() if k not in _CSV_FIELDS}
    if extra:
        record["metadata"] = extra
    return record


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many records.

    Each record allocates several containers, so the collector would otherwise run full passes
    over a growing heap; at 100k records that is about a third of the parse time, and the
    records hold no cycles to collect.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate_all(items: Iterable[tuple[int, object]],
                  openai: bool | None = None) -> list[PromptIn]:
    """Validate every record; ``openai`` None: OpenAI batch lines if the first record is one."""
    records: list[PromptIn] = []
    first_line_of_id: dict[str, int] = {}
    url_seen: list[str] = []
    with _gc_paused():
        for line, obj in items:
            if openai is None:
                openai = is_openai_line(obj)
            record = _validate_openai(obj, line, url_seen) if openai else _validate_one(obj, line)
            ext = external_id(record, len(records) + 1)
            if ext in first_line_of_id:
                raise _duplicate_id(record, ext, line, first_line_of_id[ext],
                                    "custom_id" if openai else "id")
            first_line_of_id[ext] = line
            records.append(record)
    if not records:
        raise InputError("no prompts: the input is empty or has only blank lines")
    return records


def _validate_openai(obj: object, line: int, url_seen: list[str]) -> PromptIn:
    """An OpenAI batch line as a record; errors name the line's own fields."""
    record = openai_record(obj, line, url_seen)
    try:
        return _validate_one(record, line)
    except InputError as e:
        if e.field is None:
            raise
        field = "custom_id" if e.field == "id" else f"body.{e.field}"
        message = str(e).split(": ", 1)[-1]
        raise InputError(message, line=e.line, field=field) from e


def _duplicate_id(record: PromptIn, ext: str, line: int, first: int,
                  field: str) -> InputError:
    if record.id is None:
        return InputError(
            f"this record's default id {ext!r} (its position) is already used on line {first}; "
            "give it an explicit id", line=line, field="id")
    return InputError(f"duplicate id {ext!r} (first used on line {first})", line=line, field=field)


def _validate_one(obj: object, line: int) -> PromptIn:
    if not isinstance(obj, Mapping):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}", line=line)
    has_prompt = obj.get("prompt") is not None
    if has_prompt == (obj.get("messages") is not None):
        which = "both" if has_prompt else "neither"
        raise InputError(
            f"give exactly one of 'prompt' or 'messages' ({which} given)",
            line=line, field="prompt",
        )
    try:
        return PromptIn.model_validate(_gather_sampling(obj, line))
    except ValidationError as e:
        raise _input_error(e, line) from e


def _gather_sampling(obj: Mapping[str, Any], line: int) -> Mapping[str, Any]:
    """The record with its sampling fields moved under ``sampling``, as :class:`PromptIn` has them."""
    if "sampling" in obj:
        raise InputError("unknown field (give temperature, seed, ... beside the prompt)",
                         line=line, field="sampling")
    if _SAMPLING_KEYS.isdisjoint(obj):
        return obj
    record = {k: v for k, v in obj.items() if k not in _SAMPLING_KEYS}
    record["sampling"] = {k: v for k, v in obj.items() if k in _SAMPLING_KEYS}
    return record


def _input_error(e: ValidationError, line: int) -> InputError:
    err = e.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]).removeprefix("sampling.") or None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (put extra data under 'metadata')"
    elif "input" in err and err["type"] not in ("missing",) and field != "prompt":
        msg = f"{msg} (got {_short(err['input'])})"
    return InputError(msg, line=line, field=field)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

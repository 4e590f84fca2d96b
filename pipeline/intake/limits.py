"""Submission limits, enforced before anything is queued.

- prompts per job (``max_prompts_per_job``);
- prompt size in tokens: prompt plus its ``max_tokens`` must fit the per-sequence context
  (``n_ctx_per_seq``) that workers decode in, so an oversize prompt is refused at submit time
  with its line number instead of being routed with others and refused there;
- ``ecobatch.submit`` calls per client per minute (``submit_rate_per_min``), counted in Redis.

Tokenizing every prompt would dominate a 100k-prompt submission, so only prompts that could
possibly be too long are tokenized: a prompt never has more tokens than UTF-8 bytes (plus the
chat template's), so one whose bytes plus :data:`TEMPLATE_SLACK_TOKENS` per message plus its
``max_tokens`` fit is accepted without loading the tokenizer.

The other way round, one token stands for at most ``max_token_bytes`` input bytes (the longest
piece of the model's vocabulary), so a prompt of more than ``max_token_bytes`` x the tokens left
to it certainly does not fit and is refused by its size, before tokenizing it (a 50 MB prompt
would take a minute and gigabytes). The same bound caps the lines a prompt file may hold
(:func:`line_limit`), so no line of unbounded size is ever read.

Tokens are counted by a :class:`PromptTokenizer` handed in by the entry layer: the workers' own
tokenizer and chat template (``workers.backends.llama.tokenizer.ModelTokenizer``), so the count
here is the count a worker sees. A model without a chat template is fed a plain prompt as it is
and refuses chat messages, here as in the worker: a messages record that has to be counted is
refused with its line (a short one, never counted, is refused by the worker).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

import redis
from redis.exceptions import RedisError

from pipeline.errors import ConfigError, InputError, RateLimitError, ServiceError
from pipeline.fleet.devices import Registry
from pipeline.intake.lines import LineLimit
from pipeline.intake.openai_batch import check_models, is_openai_record, served_models
from pipeline.intake.parse import PromptIn
from pipeline.settings import Settings

TEMPLATE_SLACK_TOKENS = 256
RATE_KEY_PREFIX = "ecobatch:rate:"
RATE_WINDOW_S = 60
JSON_BYTES_PER_BYTE = 6  # JSON's longest escape of one byte: "\u0001"
RECORD_SLACK_BYTES = 1 << 20  # a line's id, metadata, keys and layout


class PromptTokenizer(Protocol):
    """Counts a record's tokens as the model is fed it (the entry layer passes the workers'
    tokenizer); loads what it needs on first use, so an unused one costs nothing."""

    def count_tokens(self, record: PromptIn) -> int:
        """Tokens of ``record``, chat template and special tokens included.

        Raises:
            InputError: the model would refuse the record (messages without a chat template).
            ConfigError: the model file is unreadable.
        """
        ...

    def max_token_bytes(self) -> int:
        """The most input bytes one token stands for.

        Raises:
            ConfigError: the model file is unreadable, or its vocabulary does not bound tokens
                by bytes.
        """
        ...


def prompt_bytes(record: PromptIn) -> int:
    """UTF-8 bytes of the record's text: the prompt, or every message's content."""
    if record.messages is not None:
        return sum(len(m["content"].encode("utf-8")) for m in record.messages)
    return len((record.prompt or "").encode("utf-8"))


def byte_bound(record: PromptIn) -> int:
    """An upper bound of the record's tokens that needs no tokenizer."""
    n_messages = 1 if record.messages is None else len(record.messages)
    return prompt_bytes(record) + TEMPLATE_SLACK_TOKENS * n_messages


def line_limit(settings: Settings, tokenizer: PromptTokenizer) -> LineLimit:
    """The longest line a prompt file may hold, from the context length and the model.

    A prompt that fits ``n_ctx_per_seq`` tokens has at most ``n_ctx_per_seq`` x
    ``max_token_bytes`` bytes (no token stands for more bytes than its piece); written as JSON
    every byte takes at most :data:`JSON_BYTES_PER_BYTE` bytes (CSV quoting and plain text take
    fewer), and the rest of a record (id, metadata, keys, spaces) gets
    :data:`RECORD_SLACK_BYTES`. So every record whose prompt fits and whose other fields take
    at most that slack is within the limit, and a longer line is refused before the rest of it
    is read. ``tokenizer`` (of the model ``settings.model`` names) is asked only for a line
    longer than the slack, which the limit always exceeds.
    """
    def compute() -> tuple[int, str]:
        token_bytes = tokenizer.max_token_bytes()
        context = settings.n_ctx_per_seq
        max_bytes = JSON_BYTES_PER_BYTE * context * token_bytes + RECORD_SLACK_BYTES
        return max_bytes, (
            f"a prompt that fits the {context}-token context per sequence "
            f"(ECOBATCH_N_CTX_PER_SEQ) has at most {context} tokens x {token_bytes} bytes (the "
            f"longest token of the model's vocabulary); x {JSON_BYTES_PER_BYTE} for JSON escapes, "
            f"plus {RECORD_SLACK_BYTES >> 20} MiB for the id, metadata and layout")

    return LineLimit(RECORD_SLACK_BYTES, compute)


def check_batch_size(batch_size: int, registry: Registry) -> None:
    """Refuse a batch size no device can take, instead of silently cutting smaller batches.

    Raises:
        ConfigError: ``batch_size`` exceeds every device's ``max_batch_size``.
    """
    largest = max((d.max_batch_size for d in registry.devices), default=0)
    if batch_size > largest:
        sizes = ", ".join(f"{d.name}: {d.max_batch_size}" for d in registry.devices)
        raise ConfigError(f"setting 'batch_size': {batch_size} exceeds the largest device "
                          f"max_batch_size ({sizes}); lower it or raise max_batch_size in the "
                          "registry")


def check_job_size(n_prompts: int, settings: Settings) -> None:
    """Refuse a job with more than ``max_prompts_per_job`` prompts.

    Raises:
        InputError: too many prompts.
    """
    if n_prompts > settings.max_prompts_per_job:
        raise InputError(f"{n_prompts} prompts exceed the limit of {settings.max_prompts_per_job} "
                         "per job (ECOBATCH_MAX_PROMPTS_PER_JOB); split the input")


def check_prompt_sizes(records: Sequence[PromptIn], default_max_tokens: int, context_tokens: int,
                       tokenizer: PromptTokenizer) -> None:
    """Refuse the first record whose tokens plus ``max_tokens`` exceed ``context_tokens``.

    Args:
        records: validated records; the error's line is the 1-based record number.
        default_max_tokens: ``max_tokens`` of records that give none.
        context_tokens: the per-sequence context workers decode in.
        tokenizer: the model's; asked only when some prompt could be too long.

    A prompt longer in bytes than the tokens left to it times the most bytes a token stands
    for is refused by its size, without tokenizing it.

    Raises:
        InputError: a prompt is too long (names its line, its size or token count, and the
            limit), or the model refuses it (messages without a chat template).
        ConfigError: the tokenizer is needed but the model file is unreadable.
    """
    for line, record in enumerate(records, start=1):
        max_tokens = record.max_tokens or default_max_tokens
        if byte_bound(record) + max_tokens > context_tokens:
            _check_bytes(line, record, max_tokens, context_tokens, tokenizer)
            _check_tokens(line, record, max_tokens, context_tokens, tokenizer)


def _check_tokens(line: int, record: PromptIn, max_tokens: int, context_tokens: int,
                  tokenizer: PromptTokenizer) -> None:
    try:
        n = tokenizer.count_tokens(record)
    except InputError as e:  # the chat template refuses the record, as the worker would
        reason = str(e).removeprefix(f"field {e.field!r}: ")
        raise InputError(reason, line=line, field=e.field) from e
    if n + max_tokens > context_tokens:
        raise InputError(
            f"prompt of {n} tokens plus max_tokens {max_tokens} exceeds the "
            f"{context_tokens}-token context per sequence (ECOBATCH_N_CTX_PER_SEQ); "
            "shorten it or lower max_tokens", line=line, field="prompt")


def _check_bytes(line: int, record: PromptIn, max_tokens: int, context_tokens: int,
                 tokenizer: PromptTokenizer) -> None:
    """Refuse a prompt too large in bytes to fit, before anyone tokenizes it."""
    size = prompt_bytes(record)
    room_tokens = max(0, context_tokens - max_tokens)
    if size <= room_tokens:  # the limit is at least a byte per token: no need to read it
        return
    per_token = tokenizer.max_token_bytes()
    if size > room_tokens * per_token:
        raise InputError(
            f"prompt of {size:,} bytes cannot fit: the {context_tokens}-token context per "
            f"sequence (ECOBATCH_N_CTX_PER_SEQ) less max_tokens {max_tokens} leaves "
            f"{room_tokens} tokens, and one token of this model stands for at most {per_token} "
            f"bytes, so at most {room_tokens * per_token:,} bytes; shorten it or lower "
            "max_tokens", line=line, field="prompt")


def check_submission(records: Sequence[PromptIn], default_max_tokens: int, settings: Settings,
                     tokenizer: PromptTokenizer) -> None:
    """Every submit-time limit on one submission: job size, the model OpenAI batch lines
    name (:func:`pipeline.intake.openai_batch.check_models`), then prompt sizes in tokens of
    ``tokenizer`` (the model ``settings.model`` names).

    Raises:
        InputError: a limit is exceeded.
        ConfigError: the model file is unreadable.
    """
    check_job_size(len(records), settings)
    if records and is_openai_record(records[0]):
        check_models(records, served_models(settings))
    check_prompt_sizes(records, default_max_tokens, settings.n_ctx_per_seq, tokenizer)


def take_submit_token(client: redis.Redis, client_id: str, limit_per_min: int,
                      now_s: float | None = None) -> None:
    """Count one ``ecobatch.submit`` call of ``client_id``; refuse it past the limit.

    A fixed one-minute window per client, counted with ``INCR`` in Redis, so every router
    process shares the count.

    Raises:
        RateLimitError: the client made ``limit_per_min`` calls in this minute already.
        ServiceError: Redis failed.
    """
    now_s = time.time() if now_s is None else now_s
    window = int(now_s // RATE_WINDOW_S)
    key = f"{RATE_KEY_PREFIX}{client_id}:{window}"
    try:
        pipe = client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 2 * RATE_WINDOW_S)
        count, _ = pipe.execute()
    except RedisError as e:
        raise ServiceError(f"cannot count submissions in Redis: {e}") from e
    if int(count) > limit_per_min:
        raise RateLimitError(
            f"rate limit: client {client_id!r} made more than {limit_per_min} submissions "
            "this minute (ECOBATCH_SUBMIT_RATE_PER_MIN); try later",
            retry_after_s=math.ceil((window + 1) * RATE_WINDOW_S - now_s))

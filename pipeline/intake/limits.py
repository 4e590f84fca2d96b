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
here is the count a worker sees. Models differ in tokenizer and chat template, so a prompt is
counted with the tokenizer of every served model that may answer it
(:func:`check_prompt_fits`): the model it names, else every model meeting its quality floor,
else every model the fleet serves; each must fit it, because the router may choose any of them
(a prompt that fits only some is refused, and the error names the models it fits, so asking
for one of those by ``model`` or ``min_quality`` gets it through). The context is the same for
every model: ``n_ctx_per_seq``, which workers decode every model in. A model without a chat
template is fed a plain prompt as it is and refuses chat messages, here as in the worker: a
messages record that has to be counted is refused with its line (a short one, never counted,
is refused by the worker).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import redis
from redis.exceptions import RedisError

from pipeline.errors import ConfigError, InputError, RateLimitError, ServiceError
from pipeline.fleet.devices import Registry
from pipeline.fleet.servedmodels import ANY_MODEL, ModelDemand
from pipeline.intake.demand import ServedFile, eligible_files, served_files
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

    def for_model(self, model: Path) -> PromptTokenizer:
        """The same kind of tokenizer for the model file ``model`` (kept, and closed with
        this one).

        Raises:
            ConfigError: a model file cannot be found.
        """
        ...


ModelsOf = Callable[[PromptIn], Sequence[ServedFile]]
"""The served models (with their files) that may answer a record."""


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
    """The longest line a prompt file may hold, from the context length and the models.

    A prompt that fits ``n_ctx_per_seq`` tokens has at most ``n_ctx_per_seq`` x
    ``max_token_bytes`` bytes (no token stands for more bytes than its piece; the largest over
    the served models); written as JSON every byte takes at most :data:`JSON_BYTES_PER_BYTE`
    bytes (CSV quoting and plain text take fewer), and the rest of a record (id, metadata,
    keys, spaces) gets :data:`RECORD_SLACK_BYTES`. So every record whose prompt fits and whose
    other fields take at most that slack is within the limit, and a longer line is refused
    before the rest of it is read. ``tokenizer`` (of the model ``settings.model`` names, and
    through it the others) is asked only for a line longer than the slack, which the limit
    always exceeds.
    """
    def compute() -> tuple[int, str]:
        token_bytes = max(tokenizer.for_model(path).max_token_bytes()
                          for path in dict.fromkeys(p for _, p in served_files(settings)))
        context = settings.n_ctx_per_seq
        max_bytes = JSON_BYTES_PER_BYTE * context * token_bytes + RECORD_SLACK_BYTES
        return max_bytes, (
            f"a prompt that fits the {context}-token context per sequence "
            f"(ECOBATCH_N_CTX_PER_SEQ) has at most {context} tokens x {token_bytes} bytes (the "
            f"longest token of the served models' vocabularies); x {JSON_BYTES_PER_BYTE} for "
            f"JSON escapes, plus {RECORD_SLACK_BYTES >> 20} MiB for the id, metadata and layout")

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
    """Refuse the first record whose tokens plus ``max_tokens`` exceed ``context_tokens``,
    counted with one model's ``tokenizer`` (:func:`check_prompt_fits` for several models).

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
            why = _misfit(line, record, max_tokens, context_tokens, tokenizer)
            if why is not None:
                raise InputError(why + "; shorten it or lower max_tokens", line=line,
                                 field="prompt")


def check_prompt_fits(records: Sequence[PromptIn], default_max_tokens: int,
                      context_tokens: int, tokenizer: PromptTokenizer,
                      models_of: ModelsOf) -> None:
    """Refuse the first record that some model that may answer it cannot fit: its tokens in
    that model's tokenizer plus ``max_tokens`` exceed ``context_tokens``.

    Every model ``models_of(record)`` returns must fit the record (the router may choose any
    of them), so the router needs no size check of its own. A record no model may answer is
    left to :func:`pipeline.intake.demand.check_demands`. Only records that could be too long
    (:func:`byte_bound`) ask ``models_of`` or a tokenizer anything.

    Args:
        records: validated records; the error's line is the 1-based record number.
        default_max_tokens: ``max_tokens`` of records that give none.
        context_tokens: the per-sequence context workers decode every model in.
        tokenizer: a tokenizer, whose :meth:`PromptTokenizer.for_model` gives each model's.
        models_of: the served models that may answer a record, with their files.

    Raises:
        InputError: names the line, field ``prompt``, the model it does not fit with its token
            count and the limit, and the models it fits; or a model refuses it.
        ConfigError: a model file is unreadable.
    """
    for line, record in enumerate(records, start=1):
        max_tokens = record.max_tokens or default_max_tokens
        if byte_bound(record) + max_tokens <= context_tokens:
            continue
        models = models_of(record)
        misfits = {model.name: _misfit(line, record, max_tokens, context_tokens,
                                       tokenizer.for_model(path), model.name)
                   for model, path in models}
        failed = [(name, why) for name, why in misfits.items() if why is not None]
        if not failed:
            continue
        fits = [name for name, why in misfits.items() if why is None]
        hint = ("; shorten it or lower max_tokens" if not fits else
                f"; every model that may answer it must fit it, and it fits only "
                f"{', '.join(fits)}: ask for one of those (model or min_quality), shorten it "
                "or lower max_tokens")
        raise InputError(failed[0][1] + hint, line=line, field="prompt")


def _misfit(line: int, record: PromptIn, max_tokens: int, context_tokens: int,
            tokenizer: PromptTokenizer, model: str | None = None) -> str | None:
    """Why ``record`` does not fit the model of ``tokenizer`` (called ``model`` in the
    message when given), or None when it fits."""
    of = "" if model is None else f" in model {model}"
    size = prompt_bytes(record)
    room_tokens = max(0, context_tokens - max_tokens)
    if size > room_tokens:  # the limit is at least a byte per token: else no need to read it
        per_token = tokenizer.max_token_bytes()
        if size > room_tokens * per_token:
            return (f"prompt of {size:,} bytes cannot fit{of}: the {context_tokens}-token "
                    f"context per sequence (ECOBATCH_N_CTX_PER_SEQ) less max_tokens "
                    f"{max_tokens} leaves {room_tokens} tokens, and one token of "
                    f"{model or 'this model'} stands for at most {per_token} bytes, so at most "
                    f"{room_tokens * per_token:,} bytes")
    try:
        n = tokenizer.count_tokens(record)
    except InputError as e:  # the chat template refuses the record, as the worker would
        reason = str(e).removeprefix(f"field {e.field!r}: ")
        raise InputError(reason + of, line=line, field=e.field) from e
    if n + max_tokens > context_tokens:
        return (f"prompt of {n} tokens{of} plus max_tokens {max_tokens} exceeds the "
                f"{context_tokens}-token context per sequence (ECOBATCH_N_CTX_PER_SEQ)")
    return None


def check_submission(records: Sequence[PromptIn], default_max_tokens: int, settings: Settings,
                     tokenizer: PromptTokenizer, demand: ModelDemand = ANY_MODEL) -> None:
    """Every submit-time limit on one submission: job size, the model OpenAI batch lines
    name (:func:`pipeline.intake.openai_batch.check_models`), then prompt sizes in tokens of
    each model that may answer each prompt (:func:`check_prompt_fits`).

    Args:
        records: validated records.
        default_max_tokens: ``max_tokens`` of records that give none.
        settings: limits, the registry and ``ECOBATCH_MODEL``.
        tokenizer: the workers' tokenizer of ``settings.model``, which gives the others.
        demand: the job's model and quality floor, for records that give none.

    Raises:
        InputError: a limit is exceeded.
        ConfigError: a model file or the registry is unreadable.
    """
    check_job_size(len(records), settings)
    if records and is_openai_record(records[0]):
        check_models(records, served_models(settings))
    check_prompt_fits(records, default_max_tokens, settings.n_ctx_per_seq, tokenizer,
                      _models_of(settings, demand))


def _models_of(settings: Settings, default: ModelDemand) -> ModelsOf:
    """Which served models may answer a record: its own ``model``/``min_quality`` over the
    job's; the registry is read on the first call only."""
    served: list[ServedFile] = []

    def models_of(record: PromptIn) -> Sequence[ServedFile]:
        if not served:
            served.extend(served_files(settings))
        demand = ModelDemand(record.model or default.model, default.min_quality
                             if record.min_quality is None else record.min_quality)
        return eligible_files(demand, served)

    return models_of


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

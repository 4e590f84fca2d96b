"""The submit-time limits count tokens exactly as the worker feeds them to the model.

One tokenizer and one chat-template renderer (the worker's) serve both; these tests hold them
to it on the real bundled model, and on the same model with its chat template removed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.intake.limits import check_prompt_sizes
from pipeline.intake.parse import PromptIn, validate_records
from workers.backends.base import GenerationRequest
from workers.backends.llama.batched import BatchedLlamaBackend
from workers.backends.llama.chat import PromptFormatter
from workers.backends.llama.tokenizer import ModelTokenizer

N_CTX_PER_SEQ = 1024
RECORDS: list[Any] = [
    "What is a joule?",
    "café 日本語 🌍 " * 20,
    "<|im_start|>user spelled out<|im_end|>",
    {"messages": [{"role": "user", "content": "Define PUE."}]},
    {"messages": [{"role": "system", "content": "Answer in one line."},
                  {"role": "user", "content": "What is embodied carbon?"},
                  {"role": "assistant", "content": "Emissions of making the hardware."},
                  {"role": "user", "content": "And water usage effectiveness?"}]},
]


def as_the_worker_builds_it(record: PromptIn) -> GenerationRequest:
    """The request ``workers.service.infer.to_request`` makes of the stored prompt row."""
    messages = None if record.messages is None else [dict(m) for m in record.messages]
    return GenerationRequest(request_id="p", prompt=record.prompt, messages=messages,
                             max_tokens=1)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[BatchedLlamaBackend]:
    with BatchedLlamaBackend(str(model_path), n_ctx_per_seq=N_CTX_PER_SEQ,
                             max_batch_size=len(RECORDS)) as b:
        yield b


@pytest.fixture(scope="module")
def untemplated_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model with ``tokenizer.chat_template`` removed from its metadata."""
    out = tmp_path_factory.mktemp("gguf") / "no-template.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(model_path),
                    str(out), "--remove-metadata", "tokenizer.chat_template", "--force"],
                   check=True, capture_output=True)
    return out


def test_the_limits_count_what_the_worker_feeds_the_model(
    model_path: Path, backend: BatchedLlamaBackend
) -> None:
    records = validate_records(RECORDS)
    requests = [as_the_worker_builds_it(r) for r in records]
    fed = [r.prompt_tokens for r in backend.generate(requests).results]
    with ModelTokenizer(model_path) as tokenizer:
        counted = [tokenizer.count_tokens(r) for r in records]
    assert counted == fed
    assert all(n > 0 for n in fed)


def test_a_model_without_a_chat_template_is_fed_prompts_raw_and_refuses_messages(
    untemplated_model: Path,
) -> None:
    plain, chat = validate_records(["What is a joule?",
                                    {"messages": [{"role": "user", "content": "Define PUE."}]}])
    with BatchedLlamaBackend(str(untemplated_model), n_ctx_per_seq=N_CTX_PER_SEQ,
                             max_batch_size=1) as worker, ModelTokenizer(untemplated_model) as tok:
        assert worker.format_prompt(as_the_worker_builds_it(plain)) == plain.prompt
        fed = worker.generate([as_the_worker_builds_it(plain)]).results[0].prompt_tokens
        assert tok.count_tokens(plain) == fed
        refusal = worker.check(as_the_worker_builds_it(chat))
        assert refusal is not None and "no chat template" in refusal
        with pytest.raises(InputError, match="no chat template") as err:
            tok.count_tokens(chat)
        assert err.value.field == "messages"
        long_chat = validate_records(["fine", {"messages": [
            {"role": "user", "content": "word " * 900}]}])
        with pytest.raises(InputError, match="no chat template") as err:
            check_prompt_sizes(long_chat, 128, N_CTX_PER_SEQ, tok)
        assert (err.value.line, err.value.field) == (2, "messages")


def test_the_renderer_without_a_template() -> None:
    formatter = PromptFormatter(None, bos_token="", eos_token="")
    assert not formatter.has_template
    assert formatter.render(GenerationRequest(request_id="a", prompt="as is")) == "as is"
    with pytest.raises(InputError, match="no chat template"):
        formatter.render(GenerationRequest(request_id="b", messages=[
            {"role": "user", "content": "hi"}]))


def test_the_tokenizer_reads_nothing_until_asked(tmp_path: Path) -> None:
    missing = tmp_path / "none.gguf"
    tokenizer = ModelTokenizer(missing)  # no error yet: a short submission never needs it
    tokenizer.close()
    with ModelTokenizer(missing) as tokenizer, pytest.raises(ConfigError, match="does not exist"):
        tokenizer.max_token_bytes()

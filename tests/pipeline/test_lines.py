"""Bounded line reading: a line over the limit is refused without reading the rest of it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.intake.limits import (
    JSON_BYTES_PER_BYTE,
    RECORD_SLACK_BYTES,
    check_prompt_sizes,
    line_limit,
)
from pipeline.intake.lines import LineLimit, bounded_lines, fixed_limit
from pipeline.intake.parse import PromptIn, read_input, read_stream, validate_records
from pipeline.settings import load_settings
from tests.cluster import REPO_ROOT, clean_env
from workers.backends.llama.tokenizer import ModelTokenizer

HUGE_BYTES = 50_000_000  # the single-line file of issue 11, item 4
PEAK_RSS_LIMIT_BYTES = 300 * 2**20


class EndlessLine(io.RawIOBase):
    """A stream with no newline, ever: reading it whole would never end."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        view[:] = b"x" * len(view)
        self.bytes_read += len(view)
        return len(view)


class Counted:
    """A counter that must not be needed: the prompt is refused by its size first."""

    def count_tokens(self, record: object) -> int:
        raise AssertionError("tokenized a prompt that its size already refuses")

    def max_token_bytes(self) -> int:
        return 100


def test_lines_keep_their_terminators_and_numbers() -> None:
    data = b"a\r\nbb\n\nlast"
    assert list(bounded_lines(io.BytesIO(data), fixed_limit(4, "test"))) == [
        (1, b"a\r\n"), (2, b"bb\n"), (3, b"\n"), (4, b"last")]


@pytest.mark.parametrize("terminator", [b"", b"\n", b"\r\n"])
def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_is_refused(
    terminator: bytes
) -> None:
    limit = fixed_limit(8, "eight bytes")
    assert list(bounded_lines(io.BytesIO(b"x" * 8 + terminator), limit)) == [
        (1, b"x" * 8 + terminator)]
    with pytest.raises(InputError) as err:
        list(bounded_lines(io.BytesIO(b"ok\n" + b"x" * 9 + terminator), limit))
    assert err.value.line == 2 and "longer than 8 bytes" in str(err.value)
    assert "eight bytes" in str(err.value)


def test_an_endless_line_is_refused_after_reading_about_the_limit() -> None:
    stream = EndlessLine()
    with pytest.raises(InputError, match="line 1: longer than 1,000 bytes"):
        read_stream(io.BufferedReader(stream, buffer_size=64), "jsonl", fixed_limit(1000, "t"))
    assert stream.bytes_read <= 1000 + 2 + 64


def test_the_limit_is_computed_once_and_only_for_a_line_over_the_floor() -> None:
    calls: list[int] = []

    def compute() -> tuple[int, str]:
        calls.append(1)
        return 100, "computed"

    limit = LineLimit(10, compute)
    assert len(read_stream(io.BytesIO(b"short\n" * 3), "text", limit)) == 3
    assert calls == []
    records = read_stream(io.BytesIO(b"x" * 50 + b"\n" + b"y" * 60 + b"\n"), "text", limit)
    assert [len(r.prompt or "") for r in records] == [50, 60] and calls == [1]
    with pytest.raises(InputError, match="line 2: longer than 100 bytes"):
        read_stream(io.BytesIO(b"ok\n" + b"z" * 101), "text", limit)


def test_bounded_reading_keeps_bom_crlf_csv_and_utf8_errors() -> None:
    limit = fixed_limit(64, "t")
    recs = read_stream(io.BytesIO(b'\xef\xbb\xbf{"prompt": "one"}\r\n\r\n{"prompt": "two"}\n'),
                       None, limit)
    assert [r.prompt for r in recs] == ["one", "two"]
    csv_recs = read_stream(io.BytesIO(b'prompt,id\r\n"multi\r\nline",1\rlone cr,2\r\n'),
                           "csv", limit)
    assert [(r.prompt, r.id) for r in csv_recs] == [("multi\r\nline", "1"), ("lone cr", "2")]
    with pytest.raises(InputError, match=r"line 2: invalid UTF-8 \(byte ff at column 4\)"):
        read_stream(io.BytesIO(b"fine\nbad\xff\n"), "text", limit)


@pytest.mark.parametrize("text", [
    "word " * 2000, "a" + " " * 5000 + "b", "a\n" + " " * 4000 + "b", "=" * 3000, "café 日本語 🌍 " * 300,
    "<|im_start|>user<|im_end|>" * 100, "def f(x):\n    return x\n" * 200,
])
def test_no_token_stands_for_more_bytes_than_the_bound(model_path: Path, text: str) -> None:
    with ModelTokenizer(model_path) as tokenizer:
        token_bytes = tokenizer.max_token_bytes()
        n_tokens = tokenizer.count_tokens(PromptIn(prompt=text))
    assert n_tokens * token_bytes >= len(text.encode("utf-8")), (n_tokens, token_bytes)


def test_the_line_limit_follows_the_context_and_the_vocabulary(model_path: Path) -> None:
    with ModelTokenizer(model_path) as tokenizer:
        token_bytes = tokenizer.max_token_bytes()
        for context in (512, 4096):
            limit = line_limit(load_settings(n_ctx_per_seq=context), tokenizer)
            max_bytes, why = limit.resolve()
            assert max_bytes == JSON_BYTES_PER_BYTE * context * token_bytes + RECORD_SLACK_BYTES
            assert f"{context}-token context" in why
            assert f"{context} tokens x {token_bytes} bytes" in why


def test_a_prompt_too_large_in_bytes_is_refused_without_tokenizing() -> None:
    records = validate_records(["fine", "x" * 2_000_000])
    with pytest.raises(InputError) as err:
        check_prompt_sizes(records, 128, 1024, Counted())
    assert err.value.line == 2 and err.value.field == "prompt"
    assert "prompt of 2,000,000 bytes cannot fit" in str(err.value)
    assert "at most 100 bytes" in str(err.value) and "89,600 bytes" in str(err.value)


def test_unreadable_input_stays_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_input(tmp_path, limit=fixed_limit(10, "t"))


# The child reports its own high-water mark (VmHWM) at exit. wait4's ru_maxrss would not do:
# Linux carries the parent's high-water mark into a vforked child at exec, so a child of a
# large pytest process reports the parent's size.
_REPORT_HWM = (
    "import atexit, re, runpy, sys\n"
    "def _hwm():\n"
    "    text = open('/proc/self/status').read()\n"
    "    sys.stderr.write('VmHWM_KB=' + re.search(r'VmHWM:\\s+(\\d+)', text).group(1) + '\\n')\n"
    "atexit.register(_hwm)\n"
    "sys.argv[0] = 'ecobatch'\n"
    "runpy.run_module('pipeline.app.cli.main', run_name='__main__')\n"
)


def _peak_rss_bytes(args: list[str], stdin_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a CLI child to its end; return its own peak RSS (its VmHWM) and its stderr."""
    with stdin_path.open("rb") as stdin:
        proc = subprocess.run([sys.executable, "-c", _REPORT_HWM, *args], cwd=REPO_ROOT,
                              env=env, stdin=stdin, capture_output=True, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.decode()
    match = re.search(r"VmHWM_KB=(\d+)", err)
    assert match is not None, err
    return int(match.group(1)) * 1024, err


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_cli_refuses_a_50_mb_line_in_bounded_memory(tmp_path: Path, source: str) -> None:
    huge = tmp_path / "huge.jsonl"
    with huge.open("w") as fh:
        fh.write('{"prompt": "')
        fh.write("word " * (HUGE_BYTES // 5))
        fh.write('"}\n')
    # The line is refused while reading, before any service is needed.
    env = {**clean_env(), "PYTHONPATH": str(REPO_ROOT), "ECOBATCH_REDIS_URL": "redis://127.0.0.1:1/0",
           "ECOBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    args = ["submit", str(huge) if source == "file" else "-"]
    peak_bytes, err = _peak_rss_bytes(args, huge, env)
    assert "line 1: longer than" in err and "1024-token context per sequence" in err
    assert peak_bytes < PEAK_RSS_LIMIT_BYTES, f"peak RSS {peak_bytes / 2**20:.0f} MiB"

"""Input parsing and validation: every format, stdin, and every kind of bad line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pipeline.broker.queue import PENDING_KEY
from pipeline.errors import InputError
from pipeline.intake.parse import (
    MAX_TOKENS_CAP,
    PromptIn,
    detect_format,
    external_id,
    parse_bytes,
    read_input,
    sniff_format,
    validate_records,
)
from pipeline.intake.submit import SubmitHandles, submit_file
from pipeline.ledger.db import make_engine
from pipeline.ledger.models import Job, Prompt
from pipeline.settings import load_settings
from workers.backends.llama.tokenizer import ModelTokenizer

# --- good input -------------------------------------------------------------------------------


def test_jsonl_prompt_messages_and_optional_fields() -> None:
    data = (
        b'{"prompt": "Why is the sky blue?"}\n'
        b"\n"
        b'{"messages": [{"role": "system", "content": "Be brief."},'
        b' {"role": "user", "content": "Define PUE."}], "id": 7, "max_tokens": 32}\r\n'
        b'{"prompt": "caf\xc3\xa9", "id": "q3", "metadata": {"topic": "food", "n": [1, 2]}}\n'
    )
    recs = parse_bytes(data, "jsonl")
    assert [r.prompt for r in recs] == ["Why is the sky blue?", None, "café"]
    assert recs[1].messages == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Define PUE."}]
    assert recs[1].id == "7" and recs[1].max_tokens == 32
    assert recs[2].metadata == {"topic": "food", "n": [1, 2]}
    assert [external_id(r, i) for i, r in enumerate(recs, 1)] == ["1", "7", "q3"]


def test_jsonl_utf8_bom_is_ignored() -> None:
    recs = parse_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n', "jsonl")
    assert recs[0].prompt == "hi"


def test_csv_prompt_id_max_tokens_and_extra_columns_as_metadata() -> None:
    data = (
        b"id,prompt,max_tokens,topic\n"
        b"a,Hello there,16,greeting\n"
        b'b,"multi\nline, with comma",,misc\n'
        b",third,,\n"
    )
    recs = parse_bytes(data, "csv")
    assert [r.id for r in recs] == ["a", "b", None]
    assert recs[1].prompt == "multi\nline, with comma"
    assert [r.max_tokens for r in recs] == [16, None, None]
    assert recs[0].metadata == {"topic": "greeting"}


def test_text_one_prompt_per_line_blank_lines_skipped() -> None:
    recs = parse_bytes(b"first prompt\n\n   \nsecond prompt\r\nthird\n", "text")
    assert [r.prompt for r in recs] == ["first prompt", "second prompt", "third"]


def test_validate_records_strings_and_dicts() -> None:
    recs = validate_records(["plain", {"prompt": "dict", "id": 5}])
    assert [r.prompt for r in recs] == ["plain", "dict"]
    assert recs[1].id == "5"


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.json", "jsonl"), ("a.csv", "csv"),
    ("a.txt", "text"), ("prompts", "text"), ("a.md", "text"),
])
def test_detect_format_from_extension(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text('{"prompt": "json in a .txt"}\n')
    assert read_input(path)[0].prompt == '{"prompt": "json in a .txt"}'
    assert read_input(path, "jsonl")[0].prompt == "json in a .txt"


def test_dash_reads_the_given_stdin_stream() -> None:
    jsonl = read_input("-", stdin=io.BytesIO(b'\n{"prompt": "from stdin"}\n'))
    assert jsonl[0].prompt == "from stdin"
    text = read_input("-", stdin=io.BytesIO(b"plain text prompt\n"))
    assert text[0].prompt == "plain text prompt"
    csv_in = read_input("-", "csv", stdin=io.BytesIO(b"prompt\nfrom csv\n"))
    assert csv_in[0].prompt == "from csv"


def test_sniff_format() -> None:
    assert sniff_format(b'  \n{"prompt": "x"}') == "jsonl"
    assert sniff_format(b"hello") == "text"


def test_prompt_in_is_a_pydantic_model_with_int_ids() -> None:
    rec = PromptIn.model_validate({"prompt": "x", "id": 12, "max_tokens": MAX_TOKENS_CAP})
    assert rec.id == "12" and rec.max_tokens == MAX_TOKENS_CAP


# --- bad input: (format, bytes, line, field, words in the message) -----------------------------

BAD_CASES = [
    ("jsonl", b'{"prompt": "ok"}\n{"prompt": "x"\n', 2, None, "malformed JSON"),
    ("jsonl", b'{"prompt": "ok"}\n\n[1, 2]\n', 3, None, "expected a JSON object"),
    ("jsonl", b'{"prompt": "ok"}\n"just a string"\n', 2, None, "expected a JSON object"),
    ("jsonl", b'{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}\n', 1,
     "prompt", "both"),
    ("jsonl", b'{"prompt": "ok"}\n{"id": 3}\n', 2, "prompt", "neither"),
    ("jsonl", b'{"prompt": "ok"}\n{"prompt": "   "}\n', 2, "prompt", "whitespace"),
    ("jsonl", b'{"prompt": ""}\n', 1, "prompt", "empty"),
    ("jsonl", b'{"prompt": 5}\n', 1, "prompt", "string"),
    ("jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', 2, None, "invalid UTF-8"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": 0}\n', 1, "max_tokens", "greater than 0"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": -4}\n', 1, "max_tokens", "greater than 0"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": 100000}\n', 1, "max_tokens", "8192"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": "12"}\n', 1, "max_tokens", "integer"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": 1.5}\n', 1, "max_tokens", "integer"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": true}\n', 1, "max_tokens", "integer"),
    ("jsonl", b'{"prompt": "a", "id": 1}\n{"prompt": "b", "id": "1"}\n', 2, "id", "duplicate"),
    ("jsonl", b'{"prompt": "a", "id": "2"}\n{"prompt": "b"}\n', 2, "id", "already used"),
    ("jsonl", b'{"prompt": "a", "id": true}\n', 1, "id", "string"),
    ("jsonl", b'{"messages": [{"role": "bot", "content": "x"}]}\n', 1, "messages.0.role",
     "'system', 'user' or 'assistant'"),
    ("jsonl", b'{"messages": [{"role": "user"}]}\n', 1, "messages.0.content", "required"),
    ("jsonl", b'{"messages": []}\n', 1, "messages", "at least 1"),
    ("jsonl", b'{"messages": [{"role": "user", "content": " "}]}\n', 1, "messages", "empty"),
    ("jsonl", b'{"prompt": "ok", "metadata": [1]}\n', 1, "metadata", "dictionary"),
    ("jsonl", b'{"prompt": "ok", "metadata": {"x": NaN}}\n', 1, None, "NaN"),
    ("jsonl", b'{"prompt": "ok", "promt": "typo"}\n', 1, "promt", "unknown field"),
    ("jsonl", b'{"prompt": "ok"}\n{"prompt": "a", "prompt": "b"}\n', 2, None,
     "duplicate key 'prompt'"),
    ("jsonl", b'{"prompt": "ok", "metadata": {"k": 1, "k": 2}}\n', 1, None, "duplicate key 'k'"),
    ("jsonl", b'{"prompt": "ok", "max_tokens": Infinity}\n', 1, None, "Infinity"),
    ("jsonl", b'{"prompt": "nul \\u0000 char"}\n', 1, "prompt", "NUL"),
    ("jsonl", b'{"prompt": "lone \\ud800"}\n', 1, "prompt", "surrogate"),
    ("jsonl", b"", None, None, "no prompts"),
    ("jsonl", b"\n  \n\n", None, None, "no prompts"),
    ("text", b"", None, None, "no prompts"),
    ("text", b"fine\nbad \xff\xfe bytes\n", 2, None, "invalid UTF-8"),
    ("csv", b"", None, None, "no prompts"),
    ("csv", b"prompt\n", None, None, "no prompts"),
    ("csv", b"text,id\nhello,1\n", 1, "prompt", "no 'prompt' column"),
    ("csv", b"prompt,prompt\na,b\n", 1, None, "repeats"),
    ("csv", b'prompt,id\n"multi\nline",1\n"  ",2\n', 4, "prompt", "whitespace"),
    ("csv", b"prompt,max_tokens\nok,12\nok,lots\n", 3, "max_tokens", "whole number"),
    ("csv", b"prompt,max_tokens\nok,0\n", 2, "max_tokens", "greater than 0"),
    ("csv", b"prompt,id\na,1\nb,1\n", 3, "id", "duplicate"),
    ("csv", b"prompt,id\na,1,extra\n", 2, None, "fields"),
    ("csv", b'prompt\n"unterminated\n', 2, None, "malformed CSV"),
]


@pytest.mark.parametrize(("fmt", "data", "line", "field", "words"), BAD_CASES)
def test_bad_input_names_line_and_field(
    fmt: str, data: bytes, line: int | None, field: str | None, words: str
) -> None:
    with pytest.raises(InputError) as info:
        parse_bytes(data, fmt)
    err = info.value
    assert err.line == line
    assert err.field == field
    assert words in str(err)
    if line is not None:
        assert str(err).startswith(f"line {line}")


def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_input(tmp_path / "missing.jsonl")


def test_unknown_format_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown input format"):
        parse_bytes(b"x", "xml")


def test_validate_records_names_the_record_number() -> None:
    with pytest.raises(InputError) as info:
        validate_records(["ok", {"prompt": "ok"}, 42])  # type: ignore[list-item]
    assert info.value.line == 3


@pytest.mark.service
def test_bad_files_write_nothing_to_sql_or_redis(
    tmp_path: Path, redis_url: str, db_url: str
) -> None:
    engine = make_engine(db_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ext = {"jsonl": "jsonl", "csv": "csv", "text": "txt"}
    handles = SubmitHandles(load_settings(max_tokens=16), ModelTokenizer(None), engine, client)
    for i, (fmt, data, line, _field, _words) in enumerate(BAD_CASES):
        path = tmp_path / f"bad{i}.{ext[fmt]}"
        path.write_bytes(data)
        with pytest.raises(InputError) as info:
            submit_file(handles, path)
        assert info.value.line == line
    assert client.llen(PENDING_KEY) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(Prompt)).scalar_one() == 0
    engine.dispose()


# --- line endings, and properties over generated input (hypothesis) ---------------------------

def test_crlf_line_endings_and_a_bom_are_accepted() -> None:
    data = b'\xef\xbb\xbf{"prompt": "one"}\r\n{"prompt": "two", "id": "b"}\r\n\r\n'
    records = parse_bytes(data, "jsonl")
    assert [r.prompt for r in records] == ["one", "two"]
    assert [r.prompt for r in parse_bytes(b"one\r\ntwo\r\n", "text")] == ["one", "two"]
    csv_records = parse_bytes(b"\xef\xbb\xbfprompt,id\r\nhello,1\r\n", "csv")
    assert [(r.prompt, r.id) for r in csv_records] == [("hello", "1")]


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=60).filter(lambda t: t.strip() != "")
_record = st.fixed_dictionaries({"prompt": _text}, optional={
    "max_tokens": st.integers(1, MAX_TOKENS_CAP),
    "metadata": st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10),
                                max_size=3)})
PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(records=st.lists(_record, min_size=1, max_size=20), bom=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_jsonl_round_trips_any_valid_records(records: list[dict[str, object]], bom: bool,
                                              newline: str) -> None:
    data = newline.join(json.dumps(r, ensure_ascii=False) for r in records) + newline
    parsed = parse_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"), "jsonl")
    assert [p.model_dump(exclude_none=True) for p in parsed] == records


@PROPERTY
@given(lines=st.lists(_text.filter(lambda t: not any(c in t for c in "\r\n\x0b\x0c\x1c\x1d\x1e"
                                                                      "\x85\u2028\u2029")),
                      min_size=1, max_size=20))
def test_text_round_trips_any_lines(lines: list[str]) -> None:
    assert [p.prompt for p in parse_bytes("\n".join(lines).encode(), "text")] == lines


@PROPERTY
@given(rows=st.lists(st.tuples(_text, st.integers(1, 500)), min_size=1, max_size=20))
def test_csv_round_trips_any_rows(rows: list[tuple[str, int]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["prompt", "max_tokens"])
    writer.writerows(rows)
    parsed = parse_bytes(buf.getvalue().encode(), "csv")
    assert [(p.prompt, p.max_tokens) for p in parsed] == [
        (t, n) for t, n in rows]


@PROPERTY
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(
    lambda t: t.encode("utf-8", "surrogatepass")), fmt=st.sampled_from(["jsonl", "csv", "text"]))
def test_any_bytes_parse_or_fail_with_an_input_error_naming_a_real_line(data: bytes,
                                                                         fmt: str) -> None:
    try:
        records = parse_bytes(data, fmt)
    except InputError as e:
        n_lines = data.count(b"\n") + 1
        assert e.line is None or 1 <= e.line <= n_lines, (e.line, n_lines)
        return
    assert records and all(isinstance(r, PromptIn) for r in records)

"""Sampling fields on input records: validated with their names, stored on the prompt,
read back by the worker as its request's parameters (real SQLite, PostgreSQL and Redis)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select
from sqlmodel import Session

from pipeline.errors import InputError
from pipeline.intake.parse import read_stream, validate_records
from pipeline.intake.sampling import Sampling, grammar_of
from pipeline.intake.submit import submit_records
from pipeline.ledger.models import Prompt
from workers.backends.base import sampling_fields

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}


def test_a_jsonl_record_carries_its_sampling_fields() -> None:
    line = {"prompt": "hi", "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
            "seed": 11, "stop": "END", "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "response_format": JSON_SCHEMA}
    [record] = read_stream(io.BytesIO(json.dumps(line).encode() + b"\n{\"prompt\": \"x\"}\n"))[:1]
    assert record.sampling is not None and record.sampling.stop == ["END"]
    assert record.sampling.json_schema() == SCHEMA
    fields = sampling_fields(record.sampling.stored(), 0.0)
    assert (fields["temperature"], fields["seed"], fields["stop"], fields["top_k"]) == (
        0.7, 11, ("END",), 20)


def test_a_record_without_sampling_stores_nothing_and_takes_the_defaults() -> None:
    [record] = validate_records(["hi"])
    assert record.sampling is None
    assert sampling_fields(None, 0.3) == sampling_fields(Sampling().stored(), 0.3)
    assert sampling_fields(None, 0.3)["temperature"] == 0.3
    assert sampling_fields({"response_format": {"type": "json_object"}}, 0)["json_schema"] == {
        "type": "object"}


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"stop": ["a", 3]}, "stop.1", "valid string"),
    ({"stop": [""]}, "stop", "1 to 200 characters"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "'text'"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "'json_schema' is required"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "frob"}}}}, "response_format.json_schema.schema", "cannot be turned into a grammar"),
    ({"sampling": {"seed": 1}}, "sampling", "beside the prompt"),
])
def test_bad_sampling_is_refused_by_line_and_field(extra: dict[str, Any], field: str,
                                                    words: str) -> None:
    with pytest.raises(InputError) as err:
        validate_records(["fine", {"prompt": "hi", **extra}])
    assert (err.value.line, err.value.field) == (2, field)
    assert words in str(err.value)


@pytest.mark.service
def test_sampling_is_stored_on_the_prompt(engine: Engine, rclient: redis.Redis) -> None:
    records = validate_records([{"prompt": "a", "seed": 5, "stop": ["x", "y"],
                                 "response_format": JSON_SCHEMA}, "b"])
    receipt = submit_records(engine, rclient, records, source="t", strategy="carbon",
                             default_max_tokens=8)
    with Session(engine) as s:
        rows = s.execute(select(Prompt).where(Prompt.job_id == receipt.job_id)
                         .order_by(Prompt.position)).scalars().all()  # type: ignore[arg-type]
    assert rows[0].sampling == {"seed": 5, "stop": ["x", "y"], "response_format": JSON_SCHEMA}
    assert rows[1].sampling is None
    assert sampling_fields(rows[0].sampling, 0.0)["json_schema"] == SCHEMA


def test_the_grammar_of_a_string_leaves_out_what_json_forbids_in_strings() -> None:
    rules = dict(line.split(" ::= ", 1) for line in grammar_of({"type": "string"}).splitlines())
    assert rules["char"].startswith(r'[^"\\\x7F\x00-\x1F] | ')  # no raw newline, as JSON says

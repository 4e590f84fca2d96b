"""OpenAI batch files in and out: a real ``ecobatch run`` on the bundled model, its output lines
checked with the official ``openai`` package's own types; bad lines refused by line and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from pipeline.errors import InputError
from pipeline.fleet.modelfile import default_model_path
from pipeline.fleet.servedmodels import SMOLLM2
from pipeline.intake.limits import check_submission
from pipeline.intake.parse import validate_records
from pipeline.report.openai_files import answer_line, write_openai_files
from pipeline.settings import load_settings
from tests.cluster import clean_env
from workers.backends.llama.tokenizer import ModelTokenizer

MODEL = default_model_path().stem
SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
    "required": ["colour"], "additionalProperties": False,
}


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body}}


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.slow
def test_run_answers_an_openai_batch_file_in_openai_shape(tmp_path: Path) -> None:
    lines = [chat_line("plain", "Name a fruit.", max_tokens=12),
             chat_line("seeded", "Tell a story.", max_completion_tokens=12, temperature=0.8,
                       seed=4, top_p=0.9, stop=["\n\n"]),
             chat_line("json", "Your favourite colour as JSON.", max_tokens=40,
                       response_format={"type": "json_schema",
                                        "json_schema": {"name": "c", "schema": SCHEMA}})]
    batch = _write(tmp_path / "batch.jsonl", lines)
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli.main", "run", str(batch),
                           "-o", "out.jsonl", "--max-tokens", "16"], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    assert [x["custom_id"] for x in out] == ["plain", "seeded", "json"]
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = ChatCompletion.model_validate(line["response"]["body"])
        # the model that answered, by its registry name, not the file stem the line asked for
        assert body.model == SMOLLM2.name != MODEL
        assert body.usage is not None and body.usage.completion_tokens > 0
        figures = line["response"]["body"]["ecobatch"]
        assert figures["model_quality"] == SMOLLM2.quality
        assert figures["energy_j"] > 0 and figures["device"] and figures["batch_id"]
        assert {"carbon_g", "embodied_carbon_g", "water_l", "cost_usd", "energy_measured",
                "intensity_g_per_kwh", "intensity_signal"} <= set(figures)
    answer = out[2]["response"]["body"]["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(answer), SCHEMA)


def _row(**kw: Any) -> dict[str, Any]:
    row = {"id": "c1", "prompt_id": "j:1", "status": "done", "messages": None, "output": "Hi",
           "finish_reason": "length", "prompt_tokens": 3, "completion_tokens": 2,
           "metadata": {"openai": {"url": "/v1/completions", "model": MODEL, "line": 1}},
           "error": None, "energy_j": 1.0, "device": "cpu", "batch_id": "b"}
    return {**row, **kw}


def test_text_completions_and_dead_prompts_in_the_two_files(tmp_path: Path) -> None:
    out, err = tmp_path / "o", tmp_path / "e"
    with out.open("w") as fo, err.open("w") as fe:
        counts = write_openai_files([_row(), _row(id="c2", prompt_id="j:2", status="dead",
                                                  output=None, error="too long")], fo, fe, MODEL)
    assert counts == (1, 1)
    body = json.loads(out.read_text())["response"]["body"]
    assert Completion.model_validate(body).choices[0].text == "Hi"
    dead = json.loads(err.read_text())
    assert dead["custom_id"] == "c2" and dead["error"]["message"] == "too long"


@pytest.mark.parametrize(("model", "metadata", "named"), [
    ("gemma3-270m", None, "gemma3-270m"),  # not from an OpenAI line: its batch's model
    ("gemma3-270m", {"openai": {"url": "/v1/completions", "model": MODEL, "line": 1}},
     "gemma3-270m"),  # the line asked for another alias: the model that answered wins
    (None, None, "default"),  # a batch routed before models were chosen: the default
    (None, {"openai": {"url": "/v1/completions", "model": "asked", "line": 1}}, "asked"),
])
def test_the_body_names_the_model_that_answered(model: str | None, metadata: Any,
                                                named: str) -> None:
    row = _row(model=model, model_quality=67.7 if model else None, metadata=metadata)
    body = answer_line(row, "default", 0)["response"]["body"]  # type: ignore[arg-type]
    assert body["model"] == named
    assert body["ecobatch"]["model_quality"] == (67.7 if model else None)


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda x: x["body"].update(n=2), "body.n", "not supported"),
    (lambda x: x["body"].update(logprobs=True), "body.logprobs", "not supported"),
    (lambda x: x["body"].update(tools=[{"type": "function"}]), "body.tools", "not supported"),
    (lambda x: x.update(url="/v1/embeddings"), "url", "not supported"),
    (lambda x: x.update(method="GET"), "method", "POST"),
    (lambda x: x["body"].update(temperature=3), "body.temperature", "less than or equal"),
    (lambda x: x["body"].pop("messages"), "body.messages", "needs"),
    (lambda x: x.update(custom_id="a"), "custom_id", "duplicate"),
    (lambda x: x.update(extra=1), "extra", "unknown field"),
])
def test_a_bad_line_is_refused_by_line_and_field(change: Any, field: str, words: str) -> None:
    second = chat_line("b", "hi")
    change(second)
    with pytest.raises(InputError) as err:
        validate_records([chat_line("a", "hi"), second])
    assert (err.value.line, err.value.field) == (2, field) and words in str(err.value)


def test_a_model_the_fleet_does_not_serve_is_refused_by_line() -> None:
    records = validate_records([chat_line("a", "hi"), chat_line("b", "hi", model="gpt-4o")])
    with ModelTokenizer(None) as tokenizer, pytest.raises(InputError) as err:
        check_submission(records, 8, load_settings(), tokenizer)
    assert (err.value.line, err.value.field) == (2, "body.model")
    assert "gpt-4o" in str(err.value) and MODEL in str(err.value)

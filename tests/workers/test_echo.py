"""The echo backend: the InferenceBackend protocol without a model, and `ecobatch run` on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.fleet.devices import Device
from pipeline.settings import load_settings
from tests.cluster import clean_env, run_cli
from workers.backends.base import GenerationRequest, InferenceBackend
from workers.backends.echo import EchoBackend
from workers.backends.factory import build_backend


def test_echo_answers_deterministically_with_word_tokens() -> None:
    backend: InferenceBackend = EchoBackend(n_ctx_per_seq=16)
    out = backend.generate([
        GenerationRequest("a", prompt="one two three", max_tokens=2),
        GenerationRequest("b", messages=[{"role": "user", "content": "hi there"}], max_tokens=8),
    ])
    a, b = out.results
    assert (a.text, a.prompt_tokens, a.completion_tokens, a.finish_reason) == (
        "one two", 3, 2, "length")
    assert (b.text, b.completion_tokens, b.finish_reason) == ("hi there", 2, "stop")
    assert backend.check(GenerationRequest("c", prompt="   ")) is not None
    assert "exceeds the 16-token context" in str(
        backend.check(GenerationRequest("d", prompt="w " * 10, max_tokens=8)))


def test_backend_setting_selects_echo_or_a_plugin() -> None:
    device = Device(name="cpu", kind="cpu", zone="DE-LU")
    assert isinstance(build_backend(device, load_settings(backend="echo")), EchoBackend)
    plugin = build_backend(device, load_settings(backend="tests.faultbackend:make_backend"))
    assert isinstance(plugin, EchoBackend)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        build_backend(device, load_settings(backend="no_such_module:factory"))
    with pytest.raises(ConfigError, match="setting 'backend'"):
        load_settings(backend="echo; rm -rf /")


@pytest.mark.slow
def test_dry_run_answers_every_prompt_without_a_model(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i} about joules"}) + "\n"
                               for i in range(12)))
    out = run_cli(["run", str(prompts), "-o", "out.jsonl"], tmp_path,
                  {**clean_env(), "ECOBATCH_BACKEND": "echo"}, timeout_s=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["output"].startswith("question") for r in rows)
    assert all(r["energy_source"] and r["energy_measured"] is False for r in rows)
    assert os.path.exists(tmp_path / "ecobatch.db")

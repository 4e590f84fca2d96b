"""Bad input through the real CLI: each gets a clear message and exit code, and nothing
already accepted is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.client import Client
from pipeline.fleet.modelfile import default_model_path
from pipeline.settings import load_settings
from tests.cluster import (
    QuickStopGroup,
    fault_env,
    ledger_counts,
    run_cli,
    run_clis,
    start_worker,
)

pytestmark = pytest.mark.slow  # every case runs the real CLI in a child process
GOOD = "one\ntwo\n"
REGISTRIES = {
    "not TOML": ("[[device]\nname = 'x'\n", "device registry"),
    "no devices": ("title = 'empty'\n", "no [[device]] tables"),
    "unknown kind": ("[[device]]\nname = 'x'\nkind = 'tpu'\n", "field 'kind'"),
    "bad name": ("[[device]]\nname = 'a b;drop'\nkind = 'cpu'\n", "field 'name'"),
    "negative TDP": ("[[device]]\nname = 'x'\nkind = 'cpu'\ntdp_w = -5\n", "field 'tdp_w'"),
    "duplicate names": ("[[device]]\nname = 'x'\nkind = 'cpu'\nzone = 'GB'\n[[device]]\n"
                        "name = 'x'\nkind = 'cpu'\nzone = 'GB'\n", "duplicate device names"),
}


def _file(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize("case", sorted(REGISTRIES))
def test_a_registry_with_errors_is_refused_by_field(tmp_path: Path, case: str) -> None:
    text, message = REGISTRIES[case]
    registry = _file(tmp_path, "devices.toml", text)
    prompts = _file(tmp_path, "p.txt", GOOD)
    for out in run_clis([["run", prompts, "--devices", registry],
                         ["devices", "--devices", registry]], tmp_path):
        assert out.returncode == 1, out.stderr
        assert message in out.stderr
    assert not (tmp_path / "ecobatch.db").exists()


def _truncated_model(tmp_path: Path) -> str:
    data = default_model_path().read_bytes()
    return _file(tmp_path, "truncated.gguf", data[: len(data) // 2])


@pytest.mark.parametrize("model, message", [
    ("truncated", "is corrupt or unreadable"),
    ("not gguf", "is not a GGUF file"),
    ("missing", "does not exist"),
])
def test_a_corrupt_or_missing_model_fails_before_anything_starts(
    tmp_path: Path, model: str, message: str
) -> None:
    path = {"truncated": lambda: _truncated_model(tmp_path),
            "not gguf": lambda: _file(tmp_path, "x.gguf", b"PK\x03\x04 a zip file"),
            "missing": lambda: str(tmp_path / "none.gguf")}[model]()
    prompts = _file(tmp_path, "p.txt", GOOD)
    for out in run_clis([["run", prompts, "--model", path],
                         ["worker", "--device", "cpu", "--model", path,
                          "--redis-url", "redis://127.0.0.1:1/0"]], tmp_path):
        assert out.returncode == 1, out.stderr
        assert message in out.stderr
    assert not (tmp_path / "ecobatch.db").exists()


@pytest.mark.parametrize("args, env, code, message", [
    (["--batch-size", "64"], {}, 1, "exceeds the largest device max_batch_size"),
    (["--batch-size", "0"], {}, 1, "batch_size"),
    (["--strategy", "fastest"], {}, 2, "Invalid value for '--strategy'"),
    ([], {"ECOBATCH_STRATEGY": "fastest"}, 1, "setting 'strategy'"),
    ([], {"ECOBATCH_MAX_TOKENS": "-1"}, 1, "setting 'max_tokens'"),
    ([], {"ECOBATCH_BACKEND": "rm -rf"}, 1, "setting 'backend'"),
])
def test_bad_options_fail_with_a_clear_message_and_exit_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    prompts = _file(tmp_path, "p.txt", GOOD)
    out = run_cli(["run", prompts, *args], tmp_path, {**os.environ, **env})
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert not (tmp_path / "ecobatch.db").exists()


@pytest.mark.service
def test_bad_submissions_leave_an_accepted_job_untouched(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    env = fault_env(redis_url, sqlite_url)
    cli_env = {**os.environ, **env}
    bad = {
        "malformed": (_file(tmp_path, "bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n'), "line 2"),
        "bom+dup": (_file(tmp_path, "dup.jsonl", b'\xef\xbb\xbf{"prompt": "a", "prompt": "b"}\r\n'),
                    "duplicate key"),
        "bad utf-8": (_file(tmp_path, "bin.txt", b"fine\n\xff\xfe\n"), "invalid UTF-8"),
        "blank": (_file(tmp_path, "blank.txt", "  \n\t\n"), "no prompts"),
        "oversize": (_file(tmp_path, "long.txt", "ok\n" + "word " * 1500 + "\n"), "tokens"),
    }
    good = _file(tmp_path, "good.txt", GOOD)
    bad_options = [(["--deadline", "2000-01-01T00:00Z", "--defer"], "is in the past"),
                   (["--strategy", "fastest"], "Invalid value for '--strategy'")]
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children, \
            Client(load_settings(redis_url=redis_url, database_url=sqlite_url)) as client:
        children.start("router", ["router"])
        job_id = client.submit([f"[sleep 0.2] accepted {i}" for i in range(8)])
        for path, message in bad.values():
            out = run_cli(["submit", path], tmp_path, cli_env)
            assert out.returncode == 1 and message in out.stderr, (path, out.stderr)
        for options, message in bad_options:
            out = run_cli(["submit", good, *options], tmp_path, cli_env)
            assert out.returncode in (1, 2) and message in out.stderr, (options, out.stderr)
        crlf = run_cli(["submit", _file(tmp_path, "crlf.txt", "a\r\nb\r\n")], tmp_path, cli_env)
        assert crlf.returncode == 0, crlf.stderr
        start_worker(children)
        client.wait(job_id, timeout_s=120)
        client.wait(crlf.stdout.strip(), timeout_s=120)
    assert ledger_counts(client.engine, job_id) == {"rows": 8, "distinct": 8, "prompts": 8}
    assert ledger_counts(client.engine)["prompts"] == 10  # nothing of the bad files was written

"""Security on real parts: JSON-only messages, Redis with a password over verified TLS,
secrets kept out of every output, and fuzzed names and metadata through the CLI and Client."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlmodel import Session

from pipeline.app.cli.main import main
from pipeline.app.context import AppContext
from pipeline.broker.queue import redact_url, secure_url
from pipeline.client import Client
from pipeline.errors import InputError
from pipeline.intake.submit_call import submit_task_payload
from pipeline.ledger.models import Job, Prompt
from pipeline.settings import load_settings
from tests.cluster import (
    QuickStopGroup,
    cluster_env,
    fault_env,
    run_cli,
    run_clis,
    start_worker,
    wait_until,
)
from tests.conftest import service_missing
from tests.servers import RedisServer, free_port

PASSWORD = "s3cret-Pa55word"
FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_redact_and_secure_url() -> None:
    url = f"rediss://user:{PASSWORD}@host:6380/0?ssl_ca_certs=/ca.pem"
    assert PASSWORD not in redact_url(url) and "user:***@host:6380" in redact_url(url)
    assert redact_url("redis://host/0") == "redis://host/0"
    assert secure_url("rediss://h/0").endswith("?ssl_cert_reqs=required")
    assert secure_url("rediss://h/0?ssl_cert_reqs=none") == "rediss://h/0?ssl_cert_reqs=none"
    assert secure_url("redis://h/0") == "redis://h/0"


@pytest.mark.service
@pytest.mark.slow
def test_a_pickled_message_is_refused(redis_url: str, sqlite_url: str, tmp_path: Path) -> None:
    evil = Celery(broker=redis_url)
    evil.conf.update(task_serializer="pickle", accept_content=["pickle"])
    with QuickStopGroup(env=cluster_env(redis_url, sqlite_url), log_dir=tmp_path / "logs") as group:
        router = group.start("router", ["router"])
        refused = evil.send_task("ecobatch.submit", args=[["pickled prompt"]]).id.replace("-", "")
        wait_until("the refusal", lambda: "pickle" in router.log_tail(100_000), 60)
        ok = Celery(broker=redis_url).send_task("ecobatch.submit", args=[["json prompt"]])
        client = Client(load_settings(redis_url=redis_url, database_url=sqlite_url))
        wait_until("the JSON job", lambda: _job_ids(client.engine) == {ok.id.replace("-", "")}, 60)
        group.check_alive()
    assert refused not in _job_ids(client.engine)
    assert "ContentDisallowed" in router.log_tail(100_000) or "untrusted" in router.log_tail(100_000)


def _job_ids(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return set(s.execute(select(Job.id)).scalars())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    if shutil.which("openssl") is None:
        service_missing("openssl", FileNotFoundError("openssl"))
    d = tmp_path_factory.mktemp("certs")
    script = (
        "set -e\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 "
        "-subj /CN=other\n"
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1\n"
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf\n"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile ext.cnf\n")
    subprocess.run(["bash", "-c", script], cwd=d, check=True, capture_output=True)
    return d


def _tls_url(port: int, password: str, ca: Path | None) -> str:
    query = f"?ssl_ca_certs={ca}" if ca is not None else ""
    return f"rediss://:{password}@127.0.0.1:{port}/0{query}"


@pytest.fixture
def tls_redis(certs: Path, tmp_path: Path) -> Iterator[int]:
    """A redis-server with a password, listening only on TLS; yields its port."""
    port = free_port()
    server = RedisServer(tmp_path / "redis", "--port", "0", "--tls-port", str(port),
                         "--tls-cert-file", str(certs / "server.pem"),
                         "--tls-key-file", str(certs / "server.key"),
                         "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
                         "--requirepass", PASSWORD, port=port)
    try:
        server.start(ping=redis.Redis.from_url(secure_url(_tls_url(port, PASSWORD, certs / "ca.pem"))))
    except (redis.RedisError, OSError) as e:
        service_missing("redis-server with TLS", e)
    yield port
    server.stop()


@pytest.mark.service
@pytest.mark.slow
def test_password_and_verified_tls_work_and_secrets_stay_out_of_outputs(
    tls_redis: int, certs: Path, sqlite_url: str, tmp_path: Path
) -> None:
    url = _tls_url(tls_redis, PASSWORD, certs / "ca.pem")
    env = fault_env(url, sqlite_url)
    prompts = tmp_path / "p.txt"
    prompts.write_text("one two\nthree four\nfive six\n")
    cli_env = {**os.environ, **env}
    with QuickStopGroup(env=env, log_dir=tmp_path / "logs") as children:
        router = children.start("router", ["router"])
        worker = start_worker(children)
        sub = run_cli(["submit", str(prompts)], tmp_path, cli_env)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip()
        client = Client(load_settings(redis_url=url, database_url=sqlite_url))
        client.wait(job_id, timeout_s=60)
        outputs = [sub, *run_clis([["status", job_id], ["results", job_id], ["reconcile"]],
                                  tmp_path, cli_env)]
        logs = router.log_tail(1_000_000) + worker.log_tail(1_000_000)
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert len(client.results(job_id)) == 3
    everything = logs + "".join(o.stdout + o.stderr for o in outputs)
    assert PASSWORD not in everything


@pytest.mark.service
@pytest.mark.parametrize("case, expected", [
    ("wrong password", "invalid username-password pair"),
    ("wrong CA", "certificate verify failed"),
    ("no CA", "certificate verify failed"),  # a rediss:// URL checks the certificate by default
])
@pytest.mark.slow
def test_wrong_password_or_ca_fails_clearly_without_leaking(
    tls_redis: int, certs: Path, tmp_path: Path, case: str, expected: str
) -> None:
    password = "Wr0ng-pa55" if case == "wrong password" else PASSWORD
    ca = {"wrong password": certs / "ca.pem", "wrong CA": certs / "other.pem", "no CA": None}[case]
    env = {**os.environ, "ECOBATCH_REDIS_URL": _tls_url(tls_redis, password, ca),
           "ECOBATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    for args in (["worker", "--device", "cpu"], ["router"], ["submit", str(prompts)]):
        out = run_cli(args, tmp_path, env, timeout_s=60)
        assert out.returncode == 1, (args, out.stderr[-2000:])
        assert "cannot reach Redis at rediss://:***@127.0.0.1" in out.stderr
        assert expected in out.stderr
        assert password not in out.stdout + out.stderr


_names = st.text(min_size=1, max_size=40)
_meta = st.dictionaries(st.text(max_size=20), st.one_of(
    st.text(max_size=40), st.integers(-2**53, 2**53), st.booleans(), st.none()), max_size=4)


@pytest.mark.service
@FUZZ
@given(meta=_meta, ext_id=_names, label=_names)
@example(meta={"k'; DROP TABLE prompt; --": "\u2028"}, ext_id="\x00", label="a\x00b")
def test_fuzzed_metadata_ids_and_job_labels_round_trip(
    redis_url: str, db_url: str, meta: dict[str, object], ext_id: str, label: str
) -> None:
    ctx = AppContext(load_settings(redis_url=redis_url, database_url=db_url))
    with Client(ctx.settings) as client:
        try:
            task_job = submit_task_payload(ctx, ["a fixed prompt"], {"source": label}).job_id
            assert client.status(task_job).source == label
        except InputError as e:  # NUL or a lone surrogate: refused, naming the field
            assert "source" in str(e)
        try:
            job_id = client.submit([{"prompt": "q", "id": ext_id, "metadata": meta}])
        except InputError as e:
            assert "field" in str(e)
            return
        with Session(client.engine) as s:
            stored = s.execute(select(Prompt).where(Prompt.job_id == job_id)).scalar_one()
    assert stored.external_id == ext_id and stored.extra == meta


@pytest.mark.service
@FUZZ
@given(job_id=_names)
@example(job_id="\x00")  # found by this test: PostgreSQL refused it with a driver error
@example(job_id="'; DROP TABLE job; --")
@example(job_id="x" * 40)
def test_fuzzed_job_ids_through_the_cli_are_just_not_found(db_url: str, job_id: str) -> None:
    for command in ("status", "results"):
        res = CliRunner().invoke(main, [command, "--database-url", db_url, "--", job_id])
        assert res.exit_code == 1, res.output
        assert "not found" in res.output or "job id" in res.output


@FUZZ
@given(device=_names)
def test_fuzzed_device_names_are_refused_or_used_safely(tmp_path: Path, device: str) -> None:
    registry = tmp_path / "devices.toml"
    registry.write_text(f"[[device]]\nname = {json.dumps(device)}\nkind = \"cpu\"\nzone = \"GB\"\n")
    res = CliRunner().invoke(main, ["worker", "--device", device, "--devices", str(registry),
                                    "--redis-url", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 1
    # a bad name is refused by name; a good one gets as far as the (absent) broker
    assert "device" in res.output or "cannot reach Redis" in res.output


_SQL_HEAD = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|COPY|ALTER|PRAGMA|CREATE|DROP|WITH)\b",
                       re.IGNORECASE)
AUDITED_SQL_STRINGS = {
    # interpolate only constants: column names of PROMPT_COLUMNS and a busy timeout
    ("pipeline/ledger/db.py", "_sqlite_pragmas"), ("pipeline/intake/submit.py", "_bulk_insert"),
}


def test_no_sql_is_built_from_strings_outside_the_audited_places() -> None:
    root = Path(__file__).resolve().parent.parent
    found = set()
    for path in sorted(p for pkg in ("pipeline", "router", "workers")
                       for p in (root / pkg).rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.JoinedStr) and _SQL_HEAD.match("".join(
                        v.value for v in node.values if isinstance(v, ast.Constant))):
                    found.add((path.relative_to(root).as_posix(), fn.name))
    assert found <= AUDITED_SQL_STRINGS, found - AUDITED_SQL_STRINGS

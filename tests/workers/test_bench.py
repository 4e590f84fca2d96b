"""Device benchmarking: aggregation with protocol fakes, then real llama.cpp on SmolLM2-135M."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import select

from pipeline.errors import InputError
from pipeline.fleet.devices import Device, Registry
from pipeline.ledger.db import make_engine, session_scope
from pipeline.ledger.models import DeviceProfile
from pipeline.settings import Settings
from tests.cluster import TEST_LLAMA_THREADS
from workers.backends.base import BatchOutput, GenerationRequest, GenerationResult
from workers.bench.plot import plot_profile
from workers.bench.run import (
    ProfileRow,
    default_prompts,
    describe_energy_source,
    load_prompts,
    make_batches,
    run_bench,
    store_profile,
)
from workers.meters.base import EnergyReading

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeBackend:
    """An InferenceBackend that 'decodes' ``tokens_each`` tokens per prompt in fixed time."""

    model_path = "fake.gguf"

    def __init__(self, tokens_each: int = 4, wall_s: float = 0.5) -> None:
        self.tokens_each = tokens_each
        self.wall_s = wall_s
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
        self.calls.append(requests)
        results = [
            GenerationResult(r.request_id, "x", 10, min(self.tokens_each, r.max_tokens), 0.1,
                             self.wall_s, "length")
            for r in requests
        ]
        peak = 1000 * len(requests)
        return BatchOutput(results=results, wall_s=self.wall_s, peak_memory_bytes=peak)

    def check(self, request: GenerationRequest) -> str | None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeMeter:
    """An EnergyMeter that reports a constant power over a fixed interval."""

    source = "estimate:tdp*cpu-util"
    measured = False

    def __init__(self, power_w: float = 20.0, duration_s: float = 0.5) -> None:
        self.power_w = power_w
        self.duration_s = duration_s
        self.running = False

    def start(self) -> None:
        assert not self.running, "meter started twice"
        self.running = True

    def stop(self) -> EnergyReading:
        assert self.running, "meter stopped before start"
        self.running = False
        return EnergyReading(self.power_w * self.duration_s, self.duration_s, self.source, False)


def test_default_prompts_are_shipped() -> None:
    prompts = default_prompts()
    assert len(prompts) == 32
    assert all(p.strip() == p and p for p in prompts)


def test_make_batches_fills_every_batch() -> None:
    assert make_batches(["a", "b", "c"], 2) == [["a", "b"], ["c", "a"]]
    assert make_batches(["a"], 3) == [["a", "a", "a"]]
    assert make_batches(["a", "b", "c", "d"], 4) == [["a", "b", "c", "d"]]


def test_load_prompts_text_and_jsonl(tmp_path: Path) -> None:
    text = tmp_path / "p.txt"
    text.write_text("first\n\n second \n", encoding="utf-8")
    assert load_prompts(text) == ["first", "second"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "one"}\n{"id": "x", "prompt": "two"}\n', encoding="utf-8")
    assert load_prompts(jsonl) == ["one", "two"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": 3}\n', "line 1, field 'prompt'"),
        ("ok\n{bad\n", "line 2"),
        ("\n\n", "no prompt"),
    ],
)
def test_load_prompts_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_prompts(path)


def test_run_bench_aggregates_per_batch_size() -> None:
    backend, meter = FakeBackend(tokens_each=4, wall_s=0.5), FakeMeter(power_w=20.0)
    seen: list[tuple[int, int]] = []
    rows = run_bench(backend, meter, ["a", "b", "c", "d"], [1, 2, 4], repeats=2, max_tokens=8,
                     progress=lambda done, total: seen.append((done, total)))
    assert [r.batch_size for r in rows] == [1, 2, 4]
    assert [r.n_batches for r in rows] == [8, 4, 2]
    assert seen[-1] == (14, 14) and len(seen) == 14
    assert [len(c) for c in backend.calls[1:]] == [1] * 8 + [2] * 4 + [4] * 2  # after warm-up
    two = rows[1]
    assert two.completion_tokens == 8 and two.prompt_tokens == 20
    assert two.tokens_per_s == pytest.approx(8 / 0.5)
    assert two.energy_j == pytest.approx(10.0)
    assert two.j_per_token == pytest.approx(10.0 / 8)
    assert two.avg_power_w == pytest.approx(20.0)
    assert two.peak_memory_bytes == 2000
    assert two.energy_source == "estimate:tdp*cpu-util" and not two.energy_measured


def test_meter_is_stopped_when_decode_fails() -> None:
    class Broken(FakeBackend):
        def generate(self, requests: list[GenerationRequest]) -> BatchOutput:
            raise RuntimeError("boom")

    meter = FakeMeter()
    with pytest.raises(RuntimeError):
        run_bench(Broken(), meter, ["a"], [1], repeats=1, max_tokens=4, warmup=False)
    assert not meter.running


def test_describe_energy_source() -> None:
    assert describe_energy_source("nvml", True) == "measured by nvml"
    assert describe_energy_source("estimate:tdp*cpu-util", False) == (
        "estimated: TDP x CPU utilisation"
    )


def _row(batch_size: int, **kw: object) -> ProfileRow:
    base: dict[str, object] = dict(
        batch_size=batch_size, repeats=1, n_batches=1, prompt_tokens=10.0 * batch_size,
        completion_tokens=8.0 * batch_size, ttft_s=0.1, latency_s=0.5, tokens_per_s=16.0,
        energy_j=5.0, j_per_token=0.5, avg_power_w=10.0, peak_memory_bytes=1, energy_source="nvml",
        energy_measured=True,
    )
    base.update(kw)
    return ProfileRow(**base)  # type: ignore[arg-type]


def test_store_profile_replaces_older_rows(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    store_profile(engine, "gpu0", "m.gguf", [_row(1), _row(2), _row(4)])
    store_profile(engine, "other", "m.gguf", [_row(1)])
    store_profile(engine, "gpu0", "m.gguf", [_row(8, tokens_per_s=99.0)])
    with session_scope(engine) as s:
        rows = s.exec(select(DeviceProfile).where(DeviceProfile.device == "gpu0")).all()
        assert [(r.batch_size, r.tokens_per_s) for r in rows] == [(8, 99.0)]
        assert rows[0].created_at is not None
        assert len(s.exec(select(DeviceProfile)).all()) == 2


def test_plot_profile_writes_png(tmp_path: Path) -> None:
    out = plot_profile([_row(4), _row(1), _row(2)], tmp_path / "p.png", device="gpu0", model="m")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_profile_needs_rows(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no profile rows"):
        plot_profile([], tmp_path / "p.png", device="d", model="m")


@pytest.mark.slow
def test_real_bench_on_small_model(model_path: Path, sqlite_url: str, tmp_path: Path) -> None:
    from router.predict.profiled import profile_status
    from workers.backends.factory import build_backend
    from workers.meters import make_meter

    device = Device(name="cpu", kind="cpu", zone="DE-LU", max_batch_size=4, tdp_w=20.0)
    backend = build_backend(device, Settings(model=model_path, n_ctx_per_seq=256,
                                             n_threads=TEST_LLAMA_THREADS))
    meter = make_meter(device)
    prompts = default_prompts()[:4]
    started = time.perf_counter()
    rows = run_bench(backend, meter, prompts, [1, 2], repeats=1, max_tokens=8)
    assert time.perf_counter() - started < 120
    assert [r.batch_size for r in rows] == [1, 2]
    for r in rows:
        assert r.tokens_per_s > 0 and r.energy_j > 0 and r.avg_power_w > 0
        assert not r.energy_measured and r.energy_source.startswith("estimate")
        assert 0 < r.completion_tokens <= 8 * r.batch_size
        assert r.j_per_token == pytest.approx(r.energy_j / r.completion_tokens)
        assert r.ttft_s <= r.latency_s
    engine = make_engine(sqlite_url)
    store_profile(engine, device.name, model_path.name, rows)
    status = profile_status(engine, Registry(devices=[device]))
    assert status[device.name].startswith("profiled")
    png = plot_profile(rows, tmp_path / "cpu.png", device=device.name, model=model_path.name)
    assert png.stat().st_size > 1000 and png.read_bytes().startswith(PNG_MAGIC)

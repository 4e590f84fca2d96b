"""The router's memory sizing, read from the GGUF header, matches what the worker reads."""

from __future__ import annotations

from pathlib import Path

from llama_cpp import Llama

from pipeline.devices import Device
from pipeline.settings import Settings
from router.memory import memory_need, read_footprint
from router.predictor import BatchShape
from workers.kvmemory import kv_geometry


def test_header_geometry_equals_the_loaded_models(model_path: Path) -> None:
    footprint = read_footprint(model_path)
    llm = Llama(str(model_path), n_ctx=256, verbose=False)
    assert footprint.geometry == kv_geometry(llm.model)
    assert footprint.weights_bytes == model_path.stat().st_size


def test_memory_need_grows_with_the_batch_and_skips_a_missing_model(model_path: Path,
                                                                  tmp_path: Path) -> None:
    need = memory_need(Settings(n_ctx_per_seq=1024))
    cpu = Device(name="cpu", kind="cpu", zone="DE-LU", model=model_path)
    one, four = need(cpu, BatchShape(1, 10, 10)), need(cpu, BatchShape(4, 40, 40))
    assert one is not None and four is not None
    per_seq = read_footprint(model_path).geometry.seq_bytes(1024)
    assert four - one == 3 * per_seq
    gone = tmp_path / "gone.gguf"
    assert need(Device(name="far", kind="cpu", zone="DE-LU", model=gone), BatchShape(1, 1, 1)) is None

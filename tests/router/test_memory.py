"""The router's memory sizing, read from the GGUF header, matches what the worker reads and
what ``gguf.GGUFReader`` parses, and each model file is read once, also across a restart."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import pytest
import redis
from llama_cpp import Llama

from pipeline.fleet.devices import Device
from pipeline.fleet.kvgeometry import KvGeometry
from pipeline.fleet.servedmodels import GEMMA3_270M, SMOLLM2
from router.live.memory import FootprintCache, ModelFootprint, file_key, memory_need, read_footprint
from router.predict.predictor import BatchShape
from tests.ggufmodels import write_synthetic_gguf
from workers.backends.llama.kvmemory import kv_geometry

BIG_VOCAB = 150_000


@pytest.fixture(scope="module")
def big_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_gguf(tmp_path_factory.mktemp("gguf") / "big.gguf", BIG_VOCAB)


def parsed_in_full(path: Path) -> ModelFootprint:
    """The footprint by ``gguf.GGUFReader``, which parses every field (the reference)."""
    reader = gguf.GGUFReader(str(path))

    def meta(key: str) -> int | None:
        field = reader.fields.get(f"llama.{key}")
        return int(field.contents()) if field is not None else None

    geometry = KvGeometry.from_hparams(
        n_layer=meta("block_count") or 0, n_embd=meta("embedding_length") or 0,
        n_head=meta("attention.head_count") or 1, n_head_kv=meta("attention.head_count_kv"),
        key_length=meta("attention.key_length"), value_length=meta("attention.value_length"),
        n_vocab=len(reader.fields["tokenizer.ggml.tokens"].data))
    return ModelFootprint(sum(int(t.n_bytes) for t in reader.tensors), geometry)


def test_header_geometry_equals_the_loaded_models(model_path: Path) -> None:
    footprint = read_footprint(model_path)
    llm = Llama(str(model_path), n_ctx=256, verbose=False)
    assert footprint.geometry == kv_geometry(llm.model)
    assert 0.9 * model_path.stat().st_size < footprint.weights_bytes < model_path.stat().st_size


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_the_header_reader_agrees_with_the_full_parse(tmp_path: Path,
                                                      endianess: gguf.GGUFEndian) -> None:
    path = write_synthetic_gguf(tmp_path / "small.gguf", 1000, endianess=endianess)
    assert read_footprint(path) == parsed_in_full(path)


def test_a_150k_vocabulary_is_counted_not_parsed(big_vocab_model: Path) -> None:
    assert read_footprint(big_vocab_model) == ModelFootprint(
        weights_bytes=8 * 256 * 4 + 256 * 2 + 4 * 2 * 34,  # f32, f16 and two Q8_0 blocks a row
        geometry=KvGeometry(n_layer=4, n_embd_k_gqa=64 * 2, n_embd_v_gqa=32 * 2,
                            bytes_per_element=2, n_vocab=BIG_VOCAB))


def test_a_cut_short_header_is_a_clear_error(tmp_path: Path, big_vocab_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(big_vocab_model.read_bytes()[:100_000])  # ends inside the token list
    with pytest.raises(ValueError, match="malformed GGUF header"):
        read_footprint(cut)


def test_memory_need_grows_with_the_batch_and_skips_a_missing_model(model_path: Path,
                                                                  tmp_path: Path) -> None:
    need = memory_need(None, 1024)
    cpu = Device(name="cpu", kind="cpu", zone="DE-LU", model=model_path)
    [served] = cpu.served_models()
    one, four = need(cpu, served, BatchShape(1, 10, 10)), need(cpu, served, BatchShape(4, 40, 40))
    assert one is not None and four is not None
    per_seq = read_footprint(model_path).geometry.seq_bytes(1024)
    assert four - one == 3 * per_seq
    far = Device(name="far", kind="cpu", zone="DE-LU", model=tmp_path / "gone.gguf")
    assert need(far, far.served_models()[0], BatchShape(1, 1, 1)) is None


def test_memory_need_reads_each_served_models_own_header() -> None:
    need = memory_need(None, 1024)
    box = Device(name="box", kind="cpu", zone="DE-LU", models=[SMOLLM2, GEMMA3_270M])
    small, gemma = (need(box, m, BatchShape(1, 10, 10)) for m in box.served_models())
    assert small is not None and gemma is not None
    assert small == need(Device(name="cpu", kind="cpu", zone="DE-LU"), SMOLLM2,
                         BatchShape(1, 10, 10))
    assert gemma > 2 * small  # Gemma 3 270M's weights and 262k-token vocabulary are larger


def _same_size_garbage(path: Path) -> None:
    """Overwrite ``path`` (but its magic) with junk of its size and put its modification time
    back, so only a reader that parses the file again can tell."""
    st = path.stat()
    path.write_bytes(b"GGUF" + b"\xff" * (st.st_size - 4))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_footprint_is_kept_in_redis_across_a_restart(rclient: redis.Redis, tmp_path: Path,
                                                       big_vocab_model: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(big_vocab_model.read_bytes())
    device = Device(name="cpu", kind="cpu", zone="DE-LU", model=path)
    first = FootprintCache(rclient).footprint(device, path)
    assert first == read_footprint(big_vocab_model) and rclient.ttl(file_key(path)) > 0
    _same_size_garbage(path)
    restarted = FootprintCache(rclient)  # a new router process: nothing kept in memory
    assert restarted.footprint(device, path) == first  # same path, size and time: not re-read
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert FootprintCache(rclient).footprint(device, path) is None  # a changed file is re-read

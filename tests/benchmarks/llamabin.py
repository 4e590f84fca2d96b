"""llama.cpp's own ``llama-server`` and ``llama-batched-bench``, built once into a cache folder.

Run: ``python -m tests.benchmarks.llamabin`` (prints the folder; builds only when it is missing).

The sources are the llama.cpp vendored in the llama-cpp-python sdist of the installed version
(the one pyproject.toml pins), so the peers run the same kernels as our backend. The sdist is
fetched with ``pip download`` (pip's own cache answers when it has it), unpacked, and the two
targets built with cmake in Release with the Makefile's portable AVX2 flags (``LLAMA_CMAKE_ARGS``;
the environment variable of that name overrides them), statically linked so the two binaries
stand alone. That takes about 8 minutes on 2 cores; the binaries land in
``$XDG_CACHE_HOME/ecobatch/llama-bin/<version>/`` (default ``~/.cache``) and are reused.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

TARGETS = ("llama-server", "llama-batched-bench")
MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"
# Beyond the portable CPU flags: no network code (LLAMA_CURL is a deprecated no-op in these
# sources, OpenSSL took its place; the server's web UI would be fetched from Hugging Face at
# configure time), static libraries so the binaries need no .so of the build tree once copied.
EXTRA_CMAKE_ARGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                    "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
                    "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF")


@dataclass(frozen=True)
class LlamaBinaries:
    """Paths of the two built binaries and how they were made."""

    server: Path
    batched_bench: Path
    folder: Path
    info: dict[str, object]


def cache_folder(llama_version: str | None = None) -> Path:
    """Where the binaries of ``llama_version`` (default: the installed llama-cpp-python) live."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "ecobatch" / "llama-bin" / (llama_version or version("llama_cpp_python"))


def portable_cmake_args() -> list[str]:
    """The Makefile's ``LLAMA_CMAKE_ARGS`` (or the environment's), split into arguments."""
    if os.environ.get("LLAMA_CMAKE_ARGS"):
        return shlex.split(os.environ["LLAMA_CMAKE_ARGS"])
    found = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", MAKEFILE.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no LLAMA_CMAKE_ARGS line in {MAKEFILE}")
    return shlex.split(found.group(1))


def ensure_binaries(llama_version: str | None = None, jobs: int = 2) -> LlamaBinaries:
    """The cached binaries, built first if they are not there yet."""
    llama_version = llama_version or version("llama_cpp_python")
    folder = cache_folder(llama_version)
    info_path = folder / "build.json"
    if not all((folder / t).is_file() for t in TARGETS) or not info_path.is_file():
        _build(llama_version, folder, jobs)
    return LlamaBinaries(server=folder / TARGETS[0], batched_bench=folder / TARGETS[1],
                         folder=folder, info=json.loads(info_path.read_text()))


def _build(llama_version: str, folder: Path, jobs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sdist = _sdist(llama_version, folder)
    cmake_args = [*portable_cmake_args(), *EXTRA_CMAKE_ARGS]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-bin-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("*/vendor/llama.cpp"))
        build = Path(tmp) / "build"
        _echo_run(["cmake", "-S", str(source), "-B", str(build), *cmake_args])
        _echo_run(["cmake", "--build", str(build), "--target", *TARGETS, f"-j{jobs}"])
        for target in TARGETS:
            shutil.copy2(build / "bin" / target, folder / target)
    info = {"llama_cpp_python": llama_version, "sdist": sdist.name, "cmake_args": cmake_args,
            "build_s": round(time.monotonic() - t0, 1), "jobs": jobs,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (folder / "build.json").write_text(json.dumps(info, indent=2) + "\n")


def _sdist(llama_version: str, folder: Path) -> Path:
    """The llama-cpp-python sdist in ``folder``, downloaded by pip when absent."""
    name = f"llama_cpp_python-{llama_version}.tar.gz"
    if not (folder / name).is_file():
        _echo_run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={llama_version}",
                   "--no-deps", "--no-binary", ":all:", "-d", str(folder)])
    return folder / name


def _echo_run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    """Build if needed and print where the binaries are."""
    bins = ensure_binaries()
    print(bins.folder)
    print(json.dumps(bins.info, indent=2))


if __name__ == "__main__":
    main()

"""The few values of a GGUF header that size a model in memory, read without its vocabulary.

``gguf.GGUFReader`` builds a numpy view of every item of every field, so opening a model
parses its whole vocabulary and merge list (49k tokens for SmolLM2: about 4 s on a 2-core
host; three times that for a 150k-token model). The memory check needs only a handful of
scalars, the *length* of the token list and the tensor sizes, so this reader walks the
header once over a memory map: scalars are unpacked, string arrays are stepped over by their
length prefixes, and nothing is decoded that is not asked for. The format's constants (value
types, magic, quantisation block sizes) come from the ``gguf`` package.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType
from gguf import GGUFValueType as T

SUPPORTED_VERSIONS = (2, 3)
_SCALAR_FORMATS = {
    T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
    T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d",
}
Scalar = int | float | str


@dataclass(frozen=True)
class GgufHeader:
    """What the header says, short of the arrays' contents.

    Attributes:
        values: each scalar or string field by key; an array field is given by its first
            item when it is a numeric array (per-layer values such as head counts).
        array_lengths: item count of each array field (``tokenizer.ggml.tokens``: the
            vocabulary size).
        tensor_bytes: bytes of all tensor data, by each tensor's shape and quantisation type.
    """

    values: dict[str, Scalar] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensor_bytes: int = 0

    def int_value(self, key: str) -> int | None:
        """The field ``key`` as an integer, None when absent."""
        value = self.values.get(key)
        return None if value is None else int(value)


def read_header(path: Path) -> GgufHeader:
    """Read the metadata and tensor table of the GGUF file at ``path``.

    Raises:
        OSError: the file cannot be opened.
        ValueError: not a GGUF file of a supported version, or cut short.
    """
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            return _Cursor(buf).header()
        except (struct.error, IndexError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: malformed GGUF header ({e})") from e


class _Cursor:
    """A position in the mapped file and the byte order of its numbers."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.off = 0
        if struct.unpack_from("<I", buf, 0)[0] != GGUF_MAGIC:
            raise ValueError("not a GGUF file (bad magic)")
        version = struct.unpack_from("<I", buf, 4)[0]
        # A file written on the other byte order reads as a version with a zero low half.
        self.order = "<" if version & 0xFFFF else ">"
        self.version = struct.unpack_from(self.order + "I", buf, 4)[0]
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"GGUF version {self.version} is not supported")
        self.off = 8
        self._u64 = struct.Struct(self.order + "Q").unpack_from

    def header(self) -> GgufHeader:
        n_tensors, n_kv = self.unpack("Q"), self.unpack("Q")
        out = GgufHeader()
        for _ in range(n_kv):
            key = self.string()
            self.value(key, T(self.unpack("I")), out)
        tensor_bytes = sum(self.tensor_info() for _ in range(n_tensors))
        if self.off > len(self.buf):
            raise ValueError("header runs past the end of the file")
        return GgufHeader(out.values, out.array_lengths, tensor_bytes)

    def unpack(self, fmt: str) -> int:
        value = struct.unpack_from(self.order + fmt, self.buf, self.off)[0]
        self.off += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        n = self._u64(self.buf, self.off)[0]
        start = self.off + 8
        self.off = start + n
        return bytes(self.buf[start:self.off]).decode("utf-8")

    def value(self, key: str, kind: T, out: GgufHeader) -> None:
        if kind == T.STRING:
            out.values[key] = self.string()
        elif kind == T.ARRAY:
            item_kind, n = T(self.unpack("I")), self.unpack("Q")
            out.array_lengths[key] = n
            if n and item_kind in _SCALAR_FORMATS and item_kind != T.BOOL:
                out.values[key] = struct.unpack_from(self.order + _SCALAR_FORMATS[item_kind],
                                                     self.buf, self.off)[0]
            self.skip_items(item_kind, n)
        else:
            fmt = _SCALAR_FORMATS[kind]
            out.values[key] = struct.unpack_from(self.order + fmt, self.buf, self.off)[0]
            self.off += struct.calcsize(fmt)

    def skip_items(self, kind: T, n: int) -> None:
        """Step over ``n`` array items without reading them (strings by their lengths)."""
        if kind in _SCALAR_FORMATS:
            self.off += n * struct.calcsize(_SCALAR_FORMATS[kind])
        elif kind == T.STRING:
            off, u64, buf = self.off, self._u64, self.buf
            for _ in range(n):
                off += 8 + u64(buf, off)[0]
            self.off = off
        else:  # nested arrays: rare, and each may hold strings
            for _ in range(n):
                self.skip_items(T(self.unpack("I")), self.unpack("Q"))

    def tensor_info(self) -> int:
        """Step over one tensor's entry; return its data size in bytes."""
        self.string()
        n_dims = self.unpack("I")
        n_elems = math.prod(self.unpack("Q") for _ in range(n_dims))
        qtype = GGMLQuantizationType(self.unpack("I"))
        self.unpack("Q")  # its offset in the data section
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        return n_elems // block_size * type_size

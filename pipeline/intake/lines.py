"""Read a binary stream line by line without ever holding a line longer than a limit.

A prompt file may hold one line of any size (a 50 MB JSON record). Reading it whole, or even
reading that whole line, costs memory and time before it can be refused: :func:`bounded_lines`
refuses such a line, with its number, as soon as the limit is passed, and never reads the rest
of it. Files, stdin and an HTTP upload are all read the same way: anything with
``readline(size)``. :func:`decoded_lines` adds strict UTF-8 decoding, and the helpers after it
shape the lines for each input format.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from pipeline.errors import InputError

BOM = b"\xef\xbb\xbf"
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() strips
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


@dataclass
class LineLimit:
    """The longest line accepted, in bytes; its ``\\n`` or ``\\r\\n`` is not counted.

    Attributes:
        floor_bytes: a length the limit is never below. Lines up to it are accepted without
            computing the limit, which may cost a read of the model's vocabulary.
        compute: returns the limit and why it is that (said in the error); called at most
            once, and only when a line is longer than ``floor_bytes``.
    """

    floor_bytes: int
    compute: Callable[[], tuple[int, str]]
    _known: tuple[int, str] | None = field(default=None, init=False, repr=False)

    def resolve(self) -> tuple[int, str]:
        """The limit in bytes (at least ``floor_bytes``) and why, computed once."""
        if self._known is None:
            max_bytes, why = self.compute()
            self._known = (max(max_bytes, self.floor_bytes), why)
        return self._known


def fixed_limit(max_bytes: int, why: str) -> LineLimit:
    """A limit known in advance, e.g. an upload size an HTTP service allows."""
    return LineLimit(max_bytes, lambda: (max_bytes, why))


def bounded_lines(stream: BinaryIO, limit: LineLimit | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, line)`` from ``stream``, 1-based, each line with its terminator.

    Args:
        stream: a binary stream with ``readline(size)``: a file, ``sys.stdin.buffer``, a
            ``BytesIO``, an upload's spooled file.
        limit: the longest line accepted; None accepts any length (for data already in memory).

    Raises:
        InputError: a line is longer than the limit (names the line, the limit and why). At
            most the limit plus two bytes of that line have been read.
    """
    for number in itertools.count(1):
        line = stream.readline() if limit is None else _read_bounded(stream, limit, number)
        if not line:
            return
        yield number, line


def _read_bounded(stream: BinaryIO, limit: LineLimit, number: int) -> bytes:
    # Two bytes past a length leave room for "\r\n", so a line of exactly the limit passes.
    line = stream.readline(limit.floor_bytes + 2)
    if content_length(line) <= limit.floor_bytes:
        return line
    max_bytes, why = limit.resolve()
    if not line.endswith(b"\n"):
        line += stream.readline(max(0, max_bytes + 2 - len(line)))
    if content_length(line) > max_bytes:
        raise InputError(f"longer than {max_bytes:,} bytes, the most one line may hold ({why}); "
                         "split or shorten it", line=number)
    return line


def content_length(line: bytes) -> int:
    """Bytes of ``line`` without its ``\\n`` or ``\\r\\n``."""
    if line.endswith(b"\r\n"):
        return len(line) - 2
    return len(line) - 1 if line.endswith(b"\n") else len(line)


def decoded_lines(stream: BinaryIO, limit: LineLimit | None = None) -> Iterator[tuple[int, str]]:
    """:func:`bounded_lines` decoded as strict UTF-8, terminators kept, a leading BOM dropped.

    A UTF-8 sequence never holds a newline byte, so decoding line by line finds exactly the
    errors decoding the whole input would.

    Raises:
        InputError: a line is too long, or not UTF-8 (names the line, column and bytes).
    """
    for n, raw in bounded_lines(stream, limit):
        if n == 1:
            raw = raw.removeprefix(BOM)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.end].hex(" ")
            raise InputError(f"invalid UTF-8 (byte {bad} at column {e.start + 1})",
                             line=n) from e
        yield n, line


def starts_with_brace(lines: Iterator[tuple[int, str]]) -> tuple[bool, Iterator[tuple[int, str]]]:
    """Whether the first non-blank line starts with ``{`` (JSONL, when a stream has no name),
    and the lines from that one on; the blank lines before it, which JSONL and text skip, are
    dropped rather than held."""
    for n, line in lines:
        if line.strip(_ASCII_SPACE):
            braced = line.lstrip(_ASCII_SPACE).startswith("{")
            return braced, itertools.chain([(n, line)], lines)
    return False, iter(())


def nonblank_lines(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Lines with text, without their terminators (JSONL and text skip blank lines)."""
    for n, line in lines:
        if line and not line.isspace():
            yield n, line.removesuffix("\n").removesuffix("\r")


def csv_lines(lines: Iterable[tuple[int, str]]) -> Iterator[str]:
    """Lines for ``csv.reader``: a lone ``\r`` ends a line too, as in a file opened with
    ``newline=""``, so line numbers and quoted line breaks read as they always have."""
    for _, line in lines:
        yield from (part for part in _LONE_CR.split(line) if part)

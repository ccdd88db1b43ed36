"""A guard for scipy's MAT-5 reader: a damaged .mat file is refused before scipy parses it.

scipy (1.17 and earlier) looks a data element's type code up in a fixed C table without a bounds check,
so one damaged byte in a numeric variable kills the process with a segmentation fault instead of raising.
`scan` walks each variable the way scipy will and checks those codes first.
"""

from __future__ import annotations

import struct
import zlib

from vaegan_jax.errors import DataError, summary

HEADER_BYTES = 128
_MAX_DIMS_BYTES = 128
_MI_MATRIX = 14
_MI_COMPRESSED = 15
# MAT-5 data type codes scipy can look up (miINT8..miDOUBLE, miINT64, miUINT64, miUTF8..miUTF32).
_MI_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MI_DIMS_TYPES = frozenset({5, 6})
_MI_NAME_TYPES = frozenset({1, 16})
_MX_NUMERIC = frozenset(range(6, 16))
_MX_OPAQUE = 17
_MX_CLASS_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 16: "function-handle", 17: "opaque"}


def is_mat5(data: bytes) -> bool:
    """Whether scipy would read these bytes with its MAT-5 reader, the one that needs the guard.

    scipy reads a file as MAT-4 when a zero is among its first four bytes, and as MAT-5 when its version
    byte says 1.
    """
    header = data[124:128]
    return len(data) >= HEADER_BYTES and 0 not in data[:4] and header[int(header[2:3] == b"I")] == 1


class _Mat5Cursor:
    """Reads MAT-5 tags in the order scipy's VarReader5 does, with every read bounds-checked."""

    def __init__(self, data: bytes, position: int, order: str, source: str) -> None:
        self.data = data
        self.position = position
        self.order = order
        self.source = source

    def damaged(self, problem: str) -> DataError:
        """The error for a MAT-5 structure scipy cannot be trusted to read."""
        return DataError(f"{self.source}: damaged .mat file ({problem} at byte {self.position})")

    def take(self, count: int) -> bytes:
        """The next `count` bytes."""
        if count > len(self.data) - self.position:
            raise self.damaged("truncated data")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def full_tag(self) -> tuple[int, int]:
        """(type code, byte count) of a tag that cannot be a small data element."""
        code, count = struct.unpack(self.order + "II", self.take(8))
        return code, count

    def element(self) -> tuple[int, bytes]:
        """(type code, payload) of the next data element, small or full, skipping its padding."""
        code, count = self.full_tag()
        if code >> 16:
            # Small data element: the byte count sits in the upper half-word, the payload in the tag.
            if code >> 16 > 4:
                raise self.damaged("malformed small data element")
            return code & 0xFFFF, self.data[self.position - 4 : self.position - 4 + (code >> 16)]
        payload = self.take(count)
        # The last element of a stream may lack its padding; scipy tolerates that, so do we.
        self.position = min(len(self.data), self.position + (-count) % 8)
        return code, payload

    def matrix_header(self) -> tuple[str, int, bool]:
        """(name, MATLAB class code, is complex) of the matrix whose contents start here."""
        self.take(8)
        flags, _ = struct.unpack(self.order + "II", self.take(8))
        if flags & 0xFF != _MX_OPAQUE:
            code, dims = self.element()
            if code not in _MI_DIMS_TYPES or len(dims) > _MAX_DIMS_BYTES:
                raise self.damaged("malformed dimensions")
        code, name = self.element()
        if code not in _MI_NAME_TYPES:
            raise self.damaged("malformed variable name")
        return name.decode("latin1"), flags & 0xFF, bool(flags >> 11 & 1)

    def check_numeric_data(self) -> None:
        """Refuse the next data element unless its type code is one scipy can look up."""
        code, _ = self.element()
        if code not in _MI_DATA_TYPES:
            raise self.damaged(f"data element of unknown type {code}")


def scan(data: bytes, source: str) -> tuple[list[str], dict[str, str]]:
    """Names of the numeric variables of a MAT-5 file, checked safe for scipy, and the other variables' classes.

    Non-numeric variables (cells, structs, strings, ...) are listed but never handed to scipy.
    """
    order = "<" if data[126:128] == b"IM" else ">"
    numeric: list[str] = []
    others: dict[str, str] = {}
    position = HEADER_BYTES
    while position < len(data):
        top = _Mat5Cursor(data, position, order, source)
        code, count = top.full_tag()
        if count == 0:
            raise top.damaged("empty variable")
        position = top.position + count
        cursor = top
        if code == _MI_COMPRESSED:
            try:
                inflated = zlib.decompressobj().decompress(data[top.position : position])
            except zlib.error as exc:
                raise top.damaged(f"bad compressed data, {summary(exc)}") from exc
            cursor = _Mat5Cursor(inflated, 0, order, source)
            code, _ = cursor.full_tag()
        if code != _MI_MATRIX:
            raise cursor.damaged(f"element of type {code} where a variable should start")
        name, mclass, is_complex = cursor.matrix_header()
        if mclass in _MX_NUMERIC and not is_complex:
            cursor.check_numeric_data()
            numeric.append(name)
        elif name:
            # Complex variables stay away from scipy too: with mat_dtype it would drop the imaginary part.
            others[name] = "complex" if is_complex else _MX_CLASS_NAMES.get(mclass, f"class-{mclass}")
    return numeric, others

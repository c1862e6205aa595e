"""Compact columnar encoding of raw samples: one blob per series and time slice.

Each column is delta-encoded against its first value (kept in the header), stored in the narrowest
signed integer width that fits the deltas, and the whole body is zlib-compressed. Samples of one
series change little between rounds (memory, temperature, pids, timestamps 10 s apart), so the
deltas are mostly zero or small and a sample costs a few bytes instead of a ~25-byte SQLite row.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate, islice

_VERSION = 1
_HEAD = struct.Struct("<BIB")  # version, rows, columns
_COL = struct.Struct("<cq")  # typecode, base value
# Narrowest first; the limits are those of the signed type.
_WIDTHS = tuple(
    (code, -(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
    for code, size in (("b", 1), ("h", 2), ("i", 4), ("q", 8))
)
_BIG_ENDIAN = sys.byteorder == "big"  # the blob is little-endian everywhere


def encode(columns: Sequence[Sequence[int]]) -> bytes:
    """Pack equal-length integer columns into one compressed blob."""
    n = len(columns[0]) if columns else 0
    head = [_HEAD.pack(_VERSION, n, len(columns))]
    body: list[bytes] = []
    for col in columns:
        if len(col) != n:
            raise ValueError("columns differ in length")
        base = col[0] if n else 0
        deltas = [0]
        deltas += [b - a for a, b in zip(col, islice(col, 1, None), strict=False)]
        if not n:
            deltas = []
        lo, hi = (min(deltas), max(deltas)) if n else (0, 0)
        code = next(c for c, cmin, cmax in _WIDTHS if cmin <= lo and hi <= cmax)
        packed = array(code, deltas)
        if _BIG_ENDIAN:
            packed.byteswap()
        head.append(_COL.pack(code.encode(), base))
        body.append(packed.tobytes())
    return b"".join(head) + zlib.compress(b"".join(body), 6)


def decode(blob: bytes) -> list[list[int]]:
    """The columns given to `encode`, in order."""
    version, n, ncols = _HEAD.unpack_from(blob, 0)
    if version != _VERSION:
        raise ValueError(f"unknown chunk version {version}")
    offset = _HEAD.size
    specs: list[tuple[str, int]] = []
    for _ in range(ncols):
        code, base = _COL.unpack_from(blob, offset)
        specs.append((code.decode(), base))
        offset += _COL.size
    body = zlib.decompress(blob[offset:])
    columns: list[list[int]] = []
    pos = 0
    for code, base in specs:
        arr = array(code)
        end = pos + n * arr.itemsize
        arr.frombytes(body[pos:end])
        if _BIG_ENDIAN:
            arr.byteswap()
        pos = end
        # The first delta is 0, so the running sum starts at the base value.
        columns.append(list(accumulate(arr, initial=base))[1:])
    return columns

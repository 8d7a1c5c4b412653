"""Validate a safetensors file's header before trusting any of it.

A hostile or truncated file must be refused before a large allocation: the header length, every
tensor's dtype, shape and byte range are checked against each other and the file size.
"""

from __future__ import annotations

import json
import stat
import struct
from pathlib import Path

from bebert_cli.errors import CheckpointError
from bebert_cli.format import DTYPE_SIZES

MAX_HEADER = 100 * 1024 * 1024


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nbytes(shape: list[int], itemsize: int, limit: int) -> int:
    """Bytes a tensor of `shape` needs, or limit + 1 once it is known to exceed `limit`.

    Stops early, so a hostile shape of many huge dimensions cannot make us multiply giant integers.
    """
    if 0 in shape:
        return 0
    total = itemsize
    for d in shape:
        total *= d
        if total > limit:
            return limit + 1
    return total


def read_header(path: Path) -> dict[str, dict]:
    """{tensor name: {"dtype", "shape", "data_offsets"}} after checking it describes the file exactly."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise CheckpointError(f"{path} is not a regular file")
        size = st.st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or n > size - 8:
                raise CheckpointError(f"{path}: header length {n} does not fit the {size}-byte file (truncated or corrupt)")
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: the safetensors __metadata__ must map names to strings")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: malformed entry for tensor {_short(name)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise CheckpointError(f"{path}: tensor {_short(name)} has unknown dtype {_short(dtype)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise CheckpointError(f"{path}: tensor {_short(name)} has an invalid shape {_short(shape)}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise CheckpointError(f"{path}: tensor {_short(name)} has invalid data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise CheckpointError(f"{path}: tensor {_short(name)} lies outside the file (truncated or lying header)")
        if end - begin != _nbytes(shape, DTYPE_SIZES[dtype], data_len):
            raise CheckpointError(f"{path}: tensor {_short(name)} byte size does not match its shape {_short(shape)} and dtype {dtype}")
        spans.append((begin, end, name))
    spans.sort()
    for (b1, e1, n1), (b2, e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise CheckpointError(f"{path}: tensors {_short(n1)} and {_short(n2)} overlap")
    return header

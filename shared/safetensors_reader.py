"""A strict safetensors reader for bytes that came over the wire.

It validates the header (size, JSON, dtypes, shapes, offsets inside the buffer, no overlaps) before touching
any tensor, returns read-only zero-copy views, and reads only the tensors asked for: the probe service needs
two layer-0 B matrices out of a 1.8 MB adapter. Every problem raises `SafetensorsFormatError` with a message
that names the tensor and what is wrong. Nothing is ever unpickled.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterable

import numpy as np

# safetensors dtype -> numpy dtype; BF16 is widened to float32 on read (numpy has no bfloat16).
_FLOAT_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": None}
_OTHER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFormatError(ValueError):
    """Bytes that are not a well-formed safetensors file of floating-point tensors."""


def read_header(blob: bytes | memoryview) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, offset of the data section), validated against the buffer size."""
    view = memoryview(blob)
    if len(view) < 8:
        raise SafetensorsFormatError(f"{len(view)} bytes: too short for a safetensors header (truncated?)")
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(view):
        raise SafetensorsFormatError(
            f"header claims {header_len} bytes but the body has {len(view) - 8} after the length (truncated?)"
        )
    try:
        header = json.loads(bytes(view[8 : 8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsFormatError(f"header is not valid JSON: {error}") from error
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_len = len(view) - 8 - header_len
    spans = []
    for name, entry in header.items():
        _check_entry(name, entry, data_len)
        spans.append((*entry["data_offsets"], name))
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise SafetensorsFormatError(f"tensors {first!r} and {second!r} overlap")
    return header, metadata, 8 + header_len


def read_tensors(
    blob: bytes | memoryview, keys: Iterable[str] | None = None, strict: bool = True
) -> dict[str, np.ndarray]:
    """The named tensors (all when keys is None) as read-only arrays.

    A key the file lacks raises KeyError, or is left out when strict is False (the caller reports it).
    """
    header, _, start = read_header(blob)
    view = memoryview(blob)
    wanted = list(header) if keys is None else list(keys)
    missing = [k for k in wanted if k not in header]
    if missing and strict:
        raise KeyError(missing[0])
    wanted = [k for k in wanted if k in header]
    out = {}
    for name in wanted:
        entry = header[name]
        begin, end = entry["data_offsets"]
        raw = view[start + begin : start + end]
        dtype = _FLOAT_DTYPES[entry["dtype"]]
        if dtype is None:  # BF16: the high half of a float32
            halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = halves.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtype)
        array = array.reshape(entry["shape"])
        array.flags.writeable = False
        out[name] = array
    return out


def _check_entry(name: str, entry: object, data_len: int) -> None:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise SafetensorsFormatError(f"{name!r}: header entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype in _OTHER_DTYPES:
        raise SafetensorsFormatError(f"{name!r}: dtype {dtype}, expected a float (F32, F16, BF16 or F64)")
    if dtype not in _FLOAT_DTYPES:
        raise SafetensorsFormatError(f"{name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"{name!r}: shape must be a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise SafetensorsFormatError(
            f"{name!r}: data offsets {offsets} fall outside the {data_len}-byte data section (truncated?)"
        )
    itemsize = 2 if dtype == "BF16" else _FLOAT_DTYPES[dtype].itemsize  # type: ignore[union-attr]
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize
    if offsets[1] - offsets[0] != expected:
        raise SafetensorsFormatError(
            f"{name!r}: {offsets[1] - offsets[0]} bytes for shape {shape} {dtype} (expected {expected})"
        )

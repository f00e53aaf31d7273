"""A strict safetensors reader for bytes that came over the wire.

It validates the header (size, JSON depth, dtypes, shapes with overflow-free sizes, offsets contiguous and
covering the data section exactly) before touching any tensor, returns read-only zero-copy views, and reads
only the tensors asked for: the probe service needs two layer-0 B matrices out of a 1.8 MB adapter. Every
problem raises `SafetensorsFormatError` with a message that names the tensor and what is wrong; a pickle
(torch .bin), zip (torch.save) or gzip body is named as such. Nothing is ever unpickled.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable

import numpy as np

from shared.bounded_json import JsonError
from shared.bounded_json import loads as bounded_loads
from shared.echo import quoted

# safetensors dtype -> numpy dtype; BF16 is widened to float32 on read (numpy has no bfloat16).
_FLOAT_DTYPES: dict[str, np.dtype | None] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": None,
}
_OTHER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2"}
MAX_HEADER_BYTES = 16 * 1024 * 1024  # an SmolLM2 adapter's header is ~40 KB
_MAX_HEADER_DEPTH = 3  # {name: {"shape": [...]}}
_MAX_RANK = 8
_MAX_DIM = 2**40
# Formats people send by mistake, recognised by their first bytes (checked before the length prefix).
_FOREIGN_FORMATS = (
    (b"PK\x03\x04", "a zip archive (torch.save writes .bin/.pt checkpoints as zip files)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
    (b"\x80\x02", "a pickle (a legacy torch .bin checkpoint?)"),
    (b"\x80\x03", "a pickle (a legacy torch .bin checkpoint?)"),
    (b"\x80\x04", "a pickle"),
    (b"\x80\x05", "a pickle"),
)


class SafetensorsFormatError(ValueError):
    """Bytes that are not a well-formed safetensors file of floating-point tensors."""


def foreign_format(blob: bytes | memoryview) -> str | None:
    """What a non-safetensors body is, when its magic bytes say so (None: unknown or safetensors)."""
    head = bytes(memoryview(blob)[:4])
    return next((name for magic, name in _FOREIGN_FORMATS if head.startswith(magic)), None)


def read_header(blob: bytes | memoryview) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, offset of the data section), validated against the buffer size."""
    view = memoryview(blob)
    foreign = foreign_format(view)
    if foreign is not None:
        raise SafetensorsFormatError(f"this is {foreign}, not safetensors; pickles are never loaded")
    if len(view) < 8:
        raise SafetensorsFormatError(f"{len(view)} bytes: too short for a safetensors header (truncated?)")
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > MAX_HEADER_BYTES:
        raise SafetensorsFormatError(
            f"header length field says {header_len} bytes (limit {MAX_HEADER_BYTES}): not safetensors"
        )
    if 8 + header_len > len(view):
        raise SafetensorsFormatError(
            f"header claims {header_len} bytes but the body has {len(view) - 8} after the length (truncated?)"
        )
    raw = bytes(view[8 : 8 + header_len])
    if not raw.startswith(b"{"):
        raise SafetensorsFormatError("header must be a JSON object (first byte after the length is not '{')")
    try:
        header = bounded_loads(raw, _MAX_HEADER_DEPTH)
    except JsonError as error:
        raise SafetensorsFormatError(f"header is not valid JSON: {error}") from error
    if not isinstance(header, dict):
        raise SafetensorsFormatError("header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsFormatError("__metadata__ must map strings to strings")
    data_len = len(view) - 8 - header_len
    spans = []
    for name, entry in header.items():
        _check_entry(name, entry, data_len)
        spans.append((*entry["data_offsets"], name))
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise SafetensorsFormatError(f"tensors {_name(first)} and {_name(second)} overlap")
        if start > end:
            raise SafetensorsFormatError(
                f"{end - start} unreferenced bytes between {_name(first)} and {_name(second)}"
            )
    if spans and spans[0][0] != 0:
        raise SafetensorsFormatError(f"the data section starts with {spans[0][0]} unreferenced bytes")
    covered = spans[-1][1] if spans else 0
    if covered != data_len:
        raise SafetensorsFormatError(f"tensors cover {covered} of the {data_len}-byte data section")
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


def _name(name: str) -> str:
    """A tensor name from the header, echoed bounded (real PEFT keys are ~60 characters)."""
    return quoted(name, 128)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(name: str, entry: object, data_len: int) -> None:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise SafetensorsFormatError(f"{_name(name)}: header entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise SafetensorsFormatError(f"{_name(name)}: dtype must be a string, got {type(dtype).__name__}")
    if dtype in _OTHER_DTYPES:
        raise SafetensorsFormatError(
            f"{_name(name)}: dtype {dtype}, expected a float (F32, F16, BF16 or F64)"
        )
    if dtype not in _FLOAT_DTYPES:
        raise SafetensorsFormatError(f"{_name(name)}: unknown dtype {quoted(dtype, 32)}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_RANK
        or not all(_is_int(d) and 0 <= d <= _MAX_DIM for d in shape)
    ):
        raise SafetensorsFormatError(
            f"{_name(name)}: shape must be a list of at most {_MAX_RANK} non-negative integers <= 2^40"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise SafetensorsFormatError(
            f"{_name(name)}: data offsets {str(offsets)[:64]} fall outside the {data_len}-byte data section "
            "(truncated?)"
        )
    float_dtype = _FLOAT_DTYPES[dtype]
    itemsize = 2 if float_dtype is None else float_dtype.itemsize  # None: BF16
    expected = itemsize
    for d in shape:  # Python ints: a product of huge dimensions cannot wrap around
        expected *= d
    if offsets[1] - offsets[0] != expected:
        raise SafetensorsFormatError(
            f"{_name(name)}: {offsets[1] - offsets[0]} bytes for shape {shape} {dtype} (expected {expected})"
        )

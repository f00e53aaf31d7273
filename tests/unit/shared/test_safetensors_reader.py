import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save
from safetensors.torch import save as save_torch

from shared.safetensors_reader import SafetensorsFormatError, read_header, read_tensors


def _blob(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_matches_the_reference_library_and_reads_only_what_is_asked():
    rng = np.random.default_rng(0)
    tensors = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float16)}
    blob = save(tensors, metadata={"format": "pt"})
    out = read_tensors(blob)
    for key, value in tensors.items():
        np.testing.assert_array_equal(out[key], value)
        assert out[key].dtype == value.dtype and not out[key].flags.writeable
    assert list(read_tensors(blob, ["b"])) == ["b"]
    assert read_header(blob)[1] == {"format": "pt"}
    with pytest.raises(KeyError):
        read_tensors(blob, ["c"])


def test_bfloat16_is_widened_exactly():
    value = torch.tensor([[1.5, -2.25], [3.0e-3, 1024.0]], dtype=torch.bfloat16)
    out = read_tensors(save_torch({"w": value}))["w"]
    np.testing.assert_array_equal(out, value.to(torch.float32).numpy())


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 1000) + b"{}", "truncated"),
        (_blob([1, 2], b""), "JSON object"),  # type: ignore[arg-type]
        (struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
        (_blob({"w": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "expected a float"),
        (_blob({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "unknown dtype"),
        (_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4), "outside"),
        (_blob({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "expected 12"),
        (_blob({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "non-negative"),
        (_blob({"w": {"dtype": "F32"}}, b""), "needs dtype"),
        (
            _blob(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlap",
        ),
        (struct.pack("<Q", 200_001) + b"{" + b"[" * 100_000 + b"]" * 100_000, "nested 100001 levels"),
        (_blob({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "must be a str"),
        (_blob({"w": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 4]}}, b"\0" * 4), r"<= 2\^40"),
        # 2^32 * 2^32 * 4 bytes is 0 in int64 arithmetic: the old check passed it with offsets [0, 0]
        (_blob({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, b""), "expected 7"),
        (_blob({"w": {"dtype": "F32", "shape": [0, 2**41], "data_offsets": [0, 0]}}, b""), r"<= 2\^40"),
        (
            _blob(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
                },
                b"\0" * 12,
            ),
            "4 unreferenced bytes",
        ),
        (_blob({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9), "cover 4 of the 9"),
        (_blob({"__metadata__": {"a": [1]}}, b""), "strings to strings"),
        (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.", "a pickle"),
        (b"PK\x03\x04" + b"\0" * 40, "zip archive"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 40, "gzip"),
        (_blob({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4), "non-negative"),
    ],
    ids=[
        "short",
        "truncated",
        "list",
        "json",
        "int",
        "dtype",
        "offsets",
        "size",
        "shape",
        "fields",
        "overlap",
        "depth",
        "dtype-list",
        "dim-2^70",
        "size-wraps-int64",
        "zero-dim-huge",
        "gap",
        "trailing",
        "metadata",
        "pickle",
        "torch-zip",
        "gzip",
        "bool-shape",
    ],
)
def test_malformed_input_is_refused_with_a_reason(blob, message):
    with pytest.raises(SafetensorsFormatError, match=message):
        read_tensors(blob)

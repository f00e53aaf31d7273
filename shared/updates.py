"""What a client sends the server after a round, and its content-addressed wire form (safetensors only)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import save as save_safetensors

from shared.lora_state import LoraState, LoraStateError
from shared.safetensors_reader import SafetensorsFormatError, read_tensors


@dataclass
class ClientUpdate:
    client_id: str
    round_index: int
    num_samples: int
    lora_state: LoraState  # the client's full local adapter after training (A and B, all layers)
    b_keys: list[str] = field(default_factory=list)
    b_snapshots: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [T, D] layer-0 B
    train_loss: float = float("nan")

    def content_hash(self) -> str:
        """Identity of the submission: same adapter and snapshots from the same client and round."""
        digest = hashlib.sha256(f"{self.client_id}|{self.round_index}|{self.num_samples}".encode())
        digest.update(encode_lora_state(self.lora_state))
        digest.update(np.ascontiguousarray(self.b_snapshots, dtype=np.float32).tobytes())
        return digest.hexdigest()


def encode_lora_state(state: LoraState, metadata: dict[str, str] | None = None) -> bytes:
    """Deterministic safetensors bytes (sorted keys, float32)."""
    tensors = {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in sorted(state)}
    return save_safetensors(tensors, metadata=metadata)


def decode_lora_state(blob: bytes, max_tensors: int = 10_000) -> LoraState:
    """Parse safetensors bytes; anything else (pickle included) is refused with a clear error."""
    try:
        tensors = read_tensors(blob)
    except SafetensorsFormatError as error:
        raise LoraStateError(f"not a valid safetensors payload: {error}") from error
    if len(tensors) > max_tensors:
        raise LoraStateError(f"{len(tensors)} tensors exceed the limit of {max_tensors}")
    for key, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise LoraStateError(f"{key}: contains NaN or Inf")
    return {k: v.astype(np.float32) for k, v in tensors.items()}  # writable copies, not views of the blob

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
    # [T, D] layer-0 B of the shadow branch (retrained from the fixed init), for the shadow/evidence levels
    shadow_snapshots: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    batch_size: int = 0  # b: samples per local step (flagged steps count b samples each)
    notes: str = ""  # what the server changed on arrival (a clipped weight), for the decision log

    def content_hash(self) -> str:
        """Identity of the submission: same adapter and snapshots from the same client and round."""
        digest = hashlib.sha256(f"{self.client_id}|{self.round_index}|{self.num_samples}".encode())
        digest.update(encode_lora_state(self.lora_state))
        digest.update(np.ascontiguousarray(self.b_snapshots, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.shadow_snapshots, dtype=np.float32).tobytes())
        return digest.hexdigest()


def encode_lora_state(state: LoraState, metadata: dict[str, str] | None = None) -> bytes:
    """Deterministic safetensors bytes (sorted keys, float32)."""
    tensors = {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in sorted(state)}
    return save_safetensors(tensors, metadata=metadata)


def lora_state_digest(state: LoraState) -> str:
    """sha256 of the state's deterministic encoding: equal adapters, equal digests."""
    return hashlib.sha256(encode_lora_state(state)).hexdigest()


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


SNAPSHOT_TENSORS = ("b_snapshots", "shadow_snapshots")


def encode_snapshots(update: ClientUpdate) -> bytes:
    """The step and shadow snapshots of an update as safetensors (empty arrays stay empty)."""
    return save_safetensors(
        {name: np.ascontiguousarray(getattr(update, name), dtype=np.float32) for name in SNAPSHOT_TENSORS}
    )


def decode_snapshots(blob: bytes) -> dict[str, np.ndarray]:
    try:
        tensors = read_tensors(blob)
    except SafetensorsFormatError as error:
        raise LoraStateError(f"snapshots are not valid safetensors: {error}") from error
    out = {}
    for name in SNAPSHOT_TENSORS:
        value = np.asarray(tensors.get(name, np.zeros((0, 0), np.float32)), dtype=np.float32)
        if value.ndim != 2:
            raise LoraStateError(f"{name}: shape {list(value.shape)}, expected [steps, features]")
        if not np.all(np.isfinite(value)):
            raise LoraStateError(f"{name}: contains NaN or Inf")
        out[name] = value.copy()
    return out

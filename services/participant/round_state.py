"""What a participant keeps between restarts: the update it trained for a round, until the server has it.

A round's update is written (atomically) before it is submitted, so a participant killed after training,
or after submitting but before hearing back, sends exactly the same bytes again: the server's content
hash makes that a duplicate, counted once. A round the server answered for is recorded as done.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PendingUpdate:
    round_index: int
    global_version: int
    num_samples: int
    batch_size: int
    train_loss: float
    adapter: bytes
    snapshots: bytes | None


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RoundState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "rounds"
        self.done_path = state_dir / "done.json"

    def _round_dir(self, round_index: int) -> Path:
        return self.dir / str(round_index)

    def save(self, pending: PendingUpdate) -> None:
        directory = self._round_dir(pending.round_index)
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(directory / "adapter.safetensors", pending.adapter)
        if pending.snapshots is not None:
            _write_atomic(directory / "snapshots.safetensors", pending.snapshots)
        meta = {k: v for k, v in asdict(pending).items() if k not in ("adapter", "snapshots")}
        meta["has_snapshots"] = pending.snapshots is not None
        _write_atomic(directory / "update.json", json.dumps(meta).encode())  # last: marks the set complete

    def load(self, round_index: int, global_version: int) -> PendingUpdate | None:
        """The saved update of this round trained from this global version, if complete."""
        directory = self._round_dir(round_index)
        try:
            meta = json.loads((directory / "update.json").read_text())
            if meta["global_version"] != global_version:
                return None
            snapshots = (directory / "snapshots.safetensors").read_bytes() if meta["has_snapshots"] else None
            return PendingUpdate(
                int(meta["round_index"]),
                int(meta["global_version"]),
                int(meta["num_samples"]),
                int(meta["batch_size"]),
                float(meta["train_loss"]),
                (directory / "adapter.safetensors").read_bytes(),
                snapshots,
            )
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def done(self) -> dict[str, str]:
        """Round index (as text) -> how it ended for this participant (accepted, duplicate, refused ...)."""
        try:
            return dict(json.loads(self.done_path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def mark_done(self, round_index: int, outcome: str) -> None:
        done = self.done() | {str(round_index): outcome}
        self.done_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.done_path, json.dumps(done).encode())
        shutil.rmtree(self._round_dir(round_index), ignore_errors=True)  # the server holds it now

"""Remembered local training, for experiment grids: a client's update is a function of what it was given.

A client trains from the global adapter it receives, on its own shard, with the round's lr and subset and a
seed fixed per client and round (`ClientTrainer`), so the same inputs give the same update. An experiment
grid runs many federations that share inputs — every defense of one (seed, ratio) starts from the same
round-0 adapter, clean FedAvg repeats across experiments — and `CachedClientPool` trains each distinct
input once. The shadow branch restarts from the fixed init, so its key leaves out the global adapter and
the lr: it is shared across rounds' defenses too.

Entries are `.npz` files read with `allow_pickle=False`, written atomically; the key covers the model, the
LoRA and training settings, the seed, the client's whole spec (data and attack), the round, the lr and the
global adapter's bytes, plus `CACHE_VERSION` (raise it when training code changes what a key produces).
Only for research runs the driver controls: a deployment never trusts what a client did before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from research.clients.population import ClientSpec
from research.orchestrator import ClientPool
from shared.lora_state import LoraState
from shared.updates import ClientUpdate, lora_state_digest

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the response loss projects labelled positions only (rounding-level changes)
_STATE = "state/"


class TrainingPool(ClientPool, Protocol):
    """What the cache wraps (RayClientPool): the orchestrator's pool, plus the shadow branch alone."""

    def train_shadow(self, client_ids: Sequence[str], round_index: int) -> dict[str, np.ndarray]: ...

    def shutdown(self) -> None: ...

    def __enter__(self) -> TrainingPool: ...

    def __exit__(self, *exc: object) -> None: ...


def spec_digest(spec: ClientSpec) -> str:
    attack = spec.attack.model_dump(mode="json") if spec.attack is not None else None
    # The id is only a label (training is seeded per federation and round, not per client): the same shard
    # under another id, as a malicious shard is at another ratio, is the same training.
    payload: dict[str, Any] = {"kind": spec.kind, "examples": spec.examples, "attack": attack}
    if spec.cover:  # only when present, so that earlier entries keep their keys
        payload["cover"] = spec.cover
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class CacheCounts:
    trained: int = 0  # main branches trained now
    reused: int = 0  # main branches read from the cache
    shadow_trained: int = 0
    shadow_reused: int = 0


class CachedClientPool:
    """A `TrainingPool` that reads finished training from `directory` and stores what it trains.

    `context`: everything outside the client spec that training depends on (model and base fingerprint,
    LoRA and local-training settings, seed); `shadow_lr` is taken out of it for the main branch's key."""

    def __init__(
        self,
        pool: TrainingPool,
        specs: Sequence[ClientSpec],
        directory: Path,
        context: Mapping[str, Any],
        shadow_lr: float | None,
    ) -> None:
        self.pool = pool
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.specs = {spec.client_id: spec_digest(spec) for spec in specs}
        self.context = dict(context)
        self.shadow_lr = shadow_lr
        self.counts = CacheCounts()

    @property
    def client_ids(self) -> list[str]:
        return self.pool.client_ids

    def _main_path(self, client: str, round_index: int, lr: float, global_digest: str) -> Path:
        key = _key("main", self.context, self.specs[client], round_index, repr(float(lr)), global_digest)
        return self.directory / f"main-{key}.npz"

    def _shadow_path(self, client: str, round_index: int) -> Path:
        key = _key("shadow", self.context, self.specs[client], round_index, repr(self.shadow_lr))
        return self.directory / f"shadow-{key}.npz"

    def train_round(
        self,
        client_ids: Sequence[str],
        global_state: LoraState,
        round_index: int,
        lr: float,
        shadow: Mapping[str, bool] | None = None,
    ) -> list[ClientUpdate]:
        digest = lora_state_digest(global_state)
        wants = {c: self.shadow_lr is not None and (shadow or {}).get(c, True) for c in client_ids}
        found: dict[str, ClientUpdate] = {}
        for c in client_ids:
            cached = _read_main(self._main_path(c, round_index, lr, digest))
            if cached is not None:
                found[c] = replace(cached, client_id=c, round_index=round_index)
        shadows = self._read_shadows([c for c in client_ids if wants[c]], round_index)
        missing = [c for c in client_ids if c not in found]
        if missing:  # one call: the pool trains the missing clients in parallel, with their shadow if wanted
            fresh = self.pool.train_round(
                missing, global_state, round_index, lr, {c: wants[c] and c not in shadows for c in missing}
            )
            for update in fresh:
                c = update.client_id
                _write_main(self._main_path(c, round_index, lr, digest), update)
                if wants[c] and c not in shadows:
                    self._store_shadow(c, round_index, update.shadow_snapshots)
                    shadows[c] = update.shadow_snapshots
                found[c] = update
            self.counts.trained += len(fresh)
        self.counts.reused += len(client_ids) - len(missing)
        shadow_missing = [c for c in client_ids if wants[c] and c not in shadows]
        if shadow_missing:
            shadows.update(self._train_shadow(shadow_missing, round_index))
        empty = np.zeros((0, 0), np.float32)
        return [
            replace(found[c], shadow_snapshots=shadows.get(c, empty) if wants[c] else empty)
            for c in client_ids
        ]

    def train_shadow(self, client_ids: Sequence[str], round_index: int) -> dict[str, np.ndarray]:
        out = self._read_shadows(client_ids, round_index)
        missing = [c for c in client_ids if c not in out]
        return {**out, **(self._train_shadow(missing, round_index) if missing else {})}

    def _read_shadows(self, client_ids: Sequence[str], round_index: int) -> dict[str, np.ndarray]:
        """The shadow branches the cache holds for these clients this round."""
        out: dict[str, np.ndarray] = {}
        for c in client_ids:
            entry = _read_arrays(self._shadow_path(c, round_index))
            if entry is not None and "shadow_snapshots" in entry:
                out[c] = entry["shadow_snapshots"]
        self.counts.shadow_reused += len(out)
        return out

    def _store_shadow(self, client: str, round_index: int, snapshots: np.ndarray) -> None:
        _write_arrays(self._shadow_path(client, round_index), shadow_snapshots=snapshots)
        self.counts.shadow_trained += 1

    def _train_shadow(self, client_ids: Sequence[str], round_index: int) -> dict[str, np.ndarray]:
        trained = self.pool.train_shadow(client_ids, round_index)
        for c, snapshots in trained.items():
            self._store_shadow(c, round_index, snapshots)
        return trained

    def shutdown(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> CachedClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _write_arrays(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # a killed run leaves no half-written entry behind


def _read_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The entry's arrays; None when there is none, or it is unreadable (it is trained again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        log.warning("cache entry %s is unreadable (%s): training it again", path.name, error)
        return None


def _write_main(path: Path, update: ClientUpdate) -> None:
    meta = {
        "num_samples": update.num_samples,
        "b_keys": list(update.b_keys),
        "train_loss": update.train_loss,
        "batch_size": update.batch_size,
    }
    arrays = {f"{_STATE}{k}": np.asarray(v) for k, v in update.lora_state.items()}
    _write_arrays(path, meta=np.array(json.dumps(meta)), b_snapshots=update.b_snapshots, **arrays)


def _read_main(path: Path) -> ClientUpdate | None:
    arrays = _read_arrays(path)
    if arrays is None or "meta" not in arrays or "b_snapshots" not in arrays:
        return None
    meta = json.loads(str(arrays["meta"]))
    return ClientUpdate(
        client_id="",
        round_index=-1,
        num_samples=int(meta["num_samples"]),
        lora_state={k[len(_STATE) :]: v for k, v in arrays.items() if k.startswith(_STATE)},
        b_keys=list(meta["b_keys"]),
        b_snapshots=arrays["b_snapshots"],
        train_loss=float(meta["train_loss"]),
        batch_size=int(meta["batch_size"]),
    )

"""Ray actors hosting FL clients, a pool that trains the sampled ones in parallel, and a reserve of idle
actors that lets the next federation of a session reuse the workers."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import ray

from research.clients.population import ClientSpec
from research.clients.trainer import ClientTrainer
from shared.config import LocalTrainingConfig, LoraSettings, runtime_settings
from shared.lora_state import LoraState
from shared.model_zoo import load_tokenizer
from shared.model_zoo.sharing import FrozenBase, materialize_frozen_base
from shared.precision import resolve_device
from shared.updates import ClientUpdate


class ClientHost:
    """Actor body: hosts one client at a time. The frozen base arrives as an object-store reference and is
    mapped, not copied; `host` loads a client into the actor (a fresh view of the base, the client's adapter
    and shard), so one worker can serve the clients of consecutive federations (`HostReserve`)."""

    def __init__(self, frozen_base: FrozenBase, model_name: str, device: str = "cpu") -> None:
        self.frozen_base, self.device = frozen_base, device
        self.tokenizer = load_tokenizer(model_name)
        self.trainer: ClientTrainer | None = None

    def host(self, spec: ClientSpec, lora: LoraSettings, training: LocalTrainingConfig, seed: int) -> None:
        import torch

        torch.set_num_threads(training.torch_threads)
        self.trainer = None  # the previous client's model goes first (on a GPU, its copy of the base)
        # A fresh module tree every time: PEFT wraps the base in place. Training depends on no state of the
        # process (LoRA init, dropout and subsets are seeded per client and round), so a reused worker
        # trains exactly as a new one.
        base = materialize_frozen_base(self.frozen_base)
        if self.device != "cpu":
            base = base.to(self.device)  # a copy on the GPU: host views cannot be shared with it
        self.trainer = ClientTrainer(spec, base, self.tokenizer, lora, training, seed)

    def release(self) -> None:
        self.trainer = None

    def _hosted(self) -> ClientTrainer:
        if self.trainer is None:
            raise RuntimeError("no client hosted: call host() first")
        return self.trainer

    def train_round(
        self, global_state: LoraState, round_index: int, lr: float, shadow: bool = True
    ) -> ClientUpdate:
        return self._hosted().train_round(global_state, round_index, lr, shadow)

    def train_shadow(self, round_index: int) -> np.ndarray:
        return self._hosted().train_shadow(round_index)

    def kind(self) -> str:
        return self._hosted().spec.kind


ClientActor = ray.remote(ClientHost)


class HostReserve:
    """Idle client actors kept between the federations of a simulation session. A client of the next
    federation takes one (of the same base and resources) and is loaded into it, which saves the start of a
    worker: a process, its imports and the model's construction, seconds a client on two cores.

    An idle worker still holds its process and imports (hundreds of MB), so at most `capacity` are kept:
    beyond it the longest idle one stops, whatever its base."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {capacity}")
        self.capacity = capacity
        self._idle: list[tuple[Hashable, Any]] = []  # longest idle first

    def take(self, key: Hashable) -> Any | None:
        for i in reversed(range(len(self._idle))):  # the most recently idle: its pages are the warmest
            if self._idle[i][0] == key:
                return self._idle.pop(i)[1]
        return None

    def give(self, key: Hashable, actor: Any) -> None:
        actor.release.remote()  # frees the last client's model; the worker stays
        self._idle.append((key, actor))
        while len(self._idle) > self.capacity:
            ray.kill(self._idle.pop(0)[1])

    def __len__(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        for _, actor in self._idle:
            ray.kill(actor)
        self._idle.clear()


class RayClientPool:
    """One actor per live client; `train_round` runs the sampled clients concurrently."""

    def __init__(
        self,
        specs: Sequence[ClientSpec],
        frozen_base_ref: ray.ObjectRef,
        model_name: str,
        lora: LoraSettings,
        training: LocalTrainingConfig,
        seed: int = 2023,
        cpus_per_actor: float = 0.1,
        max_live_actors: int | None = None,
        gpus_per_actor: float = 1.0,
        reserve: HostReserve | None = None,
    ) -> None:
        # Actors hold their CPU reservation for life: a small fraction lets every client exist while only
        # the sampled ones compute; torch_threads bounds what each one uses when it does.
        # Actors start on first use: a client never sampled (or always served from a cache) costs nothing.
        # `max_live_actors` bounds memory (a training SmolLM2 client holds ~2 GiB): clients train in waves
        # of that many, and the least recently used idle actor is stopped to make room for a new one.
        # `reserve`: actors are taken from it before new ones start, and go back to it instead of stopping.
        if max_live_actors is not None and max_live_actors < 1:
            raise ValueError(f"max_live_actors must be at least 1, got {max_live_actors}")
        self.specs = {spec.client_id: spec for spec in specs}
        # SAFE_FEDLLM_DEVICE=cuda (or auto with a GPU): each actor requests `gpus_per_actor` and holds its own
        # copy of the base on its GPU, so at most (cluster GPUs / gpus_per_actor) live at once (waves).
        device = resolve_device(runtime_settings().device).type
        self._gpus = gpus_per_actor if device == "cuda" else 0.0
        if self._gpus and max_live_actors is None:
            max_live_actors = max(1, int(ray.cluster_resources().get("GPU", 0) / self._gpus))
        self._worker_args = (frozen_base_ref, model_name, device)
        self._client_args = (lora, training, seed)
        self._cpus = cpus_per_actor
        self._reserve = reserve
        # what makes an idle worker fit: the same base object, model, device and resources
        self._reserve_key = (frozen_base_ref, model_name, device, cpus_per_actor, self._gpus)
        self.max_live_actors = max_live_actors
        self.actors: dict[str, Any] = {}  # insertion order = least recently used first
        self._loading: list[ray.ObjectRef] = []  # clients being loaded; their errors surface first

    @property
    def client_ids(self) -> list[str]:
        return list(self.specs)

    def _stop(self, actor: Any) -> None:
        if self._reserve is not None:
            self._reserve.give(self._reserve_key, actor)
        else:
            ray.kill(actor)

    def _actor(self, client_id: str, keep: Sequence[str] = ()) -> Any:
        """The client's actor (started if needed, evicting idle ones not in `keep` beyond the limit)."""
        if client_id in self.actors:
            self.actors[client_id] = self.actors.pop(client_id)  # most recently used
            return self.actors[client_id]
        if self.max_live_actors is not None:
            idle = [c for c in self.actors if c not in keep]
            while len(self.actors) >= self.max_live_actors and idle:
                self._stop(self.actors.pop(idle.pop(0)))
        actor: Any = self._reserve.take(self._reserve_key) if self._reserve is not None else None
        if actor is None:
            actor = ClientActor.options(num_cpus=self._cpus, num_gpus=self._gpus, name=None).remote(
                *self._worker_args
            )
        self._loading.append(actor.host.remote(self.specs[client_id], *self._client_args))
        self.actors[client_id] = actor
        return actor

    def _get(self, futures: list[ray.ObjectRef]) -> list[Any]:
        """The results of `futures`, after the loads started since the last call (a load's error first)."""
        loading, self._loading = self._loading, []
        return ray.get([*loading, *futures])[len(loading) :]

    def _waves(self, client_ids: Sequence[str]) -> list[Sequence[str]]:
        size = self.max_live_actors or max(len(client_ids), 1)
        return [client_ids[i : i + size] for i in range(0, len(client_ids), size)]

    def _check(self, client_ids: Sequence[str]) -> None:
        unknown = [c for c in client_ids if c not in self.specs]
        if unknown:
            raise KeyError(f"unknown clients {unknown}")

    def train_round(
        self,
        client_ids: Sequence[str],
        global_state: LoraState,
        round_index: int,
        lr: float,
        shadow: Mapping[str, bool] | None = None,
    ) -> list[ClientUpdate]:
        """`shadow`: per client, whether to train the shadow branch (default: yes, if configured)."""
        self._check(client_ids)
        state_ref = ray.put(global_state)
        wants = shadow or {}
        updates: list[ClientUpdate] = []
        for wave in self._waves(client_ids):
            futures = [
                self._actor(c, wave).train_round.remote(state_ref, round_index, lr, wants.get(c, True))
                for c in wave
            ]
            updates += self._get(futures)
        return updates

    def train_shadow(self, client_ids: Sequence[str], round_index: int) -> dict[str, np.ndarray]:
        """Only the shadow branch of each client (its main branch came from elsewhere: a cache)."""
        self._check(client_ids)
        out: dict[str, np.ndarray] = {}
        for wave in self._waves(client_ids):
            futures = [self._actor(c, wave).train_shadow.remote(round_index) for c in wave]
            out.update(zip(wave, self._get(futures), strict=True))
        return out

    def shutdown(self) -> None:
        for actor in self.actors.values():
            self._stop(actor)
        self.actors.clear()
        self._loading.clear()

    def __enter__(self) -> RayClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

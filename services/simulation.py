"""The research simulation: benign and malicious clients as Ray actors, federated rounds, safety metrics.

One call can sweep several malicious ratios; Ray, the shared frozen base and the evaluation of the
starting model are set up once and reused across them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
import torch
from pydantic import BaseModel, ConfigDict, Field

from services.aggregator.orchestrator import FederationConfig, RoundOrchestrator, RoundSummary
from services.aggregator.state import InMemoryStateStore
from services.aggregator.strategies import make_strategy
from services.clients.actor import RayClientPool
from services.clients.population import build_population
from services.ray_runtime import ensure_ray
from shared.config import LocalTrainingConfig, LoraSettings, runtime_settings
from shared.data.pools import build_pools
from shared.evaluation.metrics import EvalSettings, SafetyReport, evaluate_model
from shared.lora import attach_lora, get_lora_state, set_lora_state
from shared.lora_state import LoraState
from shared.model_zoo import load_base_model
from shared.model_zoo.sharing import export_frozen_base


class SimulationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    num_clients: int = Field(10, ge=1)
    samples_per_client: int = Field(100, ge=1)
    benign_source: str = "helpful"
    defense: str = "fedavg"
    federation: FederationConfig = FederationConfig()
    lora: LoraSettings = LoraSettings()
    training: LocalTrainingConfig = LocalTrainingConfig()
    eval: EvalSettings = EvalSettings()
    eval_threads: int = Field(2, ge=1)


def _row(
    config: SimulationConfig, ratio: float, label: str, report: SafetyReport, extra: dict[str, Any]
) -> dict:
    return {
        "defense": label,
        "malicious_ratio": ratio,
        "harmless_rate": report.harmless_rate,
        "over_refusal_rate": report.over_refusal_rate,
        "harm_preference": report.harm_preference,
        "benign_loss": report.benign_loss,
        "rounds": config.federation.num_rounds,
        "model": config.model,
        "seed": config.federation.seed,
        **extra,
    }


def run_sweep(
    config: SimulationConfig,
    malicious_ratios: Sequence[float],
    *,
    evaluate_start: bool = True,
    on_round: Callable[[float, RoundSummary], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run one federation per malicious ratio from the same start; returns one result row per run."""
    torch.set_num_threads(config.eval_threads)
    loaded = load_base_model(config.model)
    pools = build_pools(runtime_settings().data_dir)
    ensure_ray()
    frozen_ref = ray.put(export_frozen_base(loaded.model, loaded.fingerprint))
    peft_model = attach_lora(loaded.model, config.lora)  # the driver's copy, for θ^0 and for evaluation
    initial_state = get_lora_state(peft_model)

    def evaluate(state: LoraState) -> SafetyReport:
        torch.set_num_threads(config.eval_threads)
        set_lora_state(peft_model, state)
        return evaluate_model(peft_model, loaded.tokenizer, pools.evaluation, config.eval)

    rows: list[dict] = []
    base_extra = {"aligned_base": loaded.aligned, "base_fingerprint": loaded.fingerprint}
    if evaluate_start:
        rows.append(
            _row(config, 0.0, "none (start model)", evaluate(initial_state), {**base_extra, "rounds": 0})
        )
    for ratio in malicious_ratios:
        specs = build_population(
            pools.client,
            config.num_clients,
            ratio,
            config.samples_per_client,
            config.benign_source,
            config.federation.seed,
        )
        pool = RayClientPool(
            specs, frozen_ref, config.model, config.lora, config.training, config.federation.seed
        )
        store = InMemoryStateStore()
        orchestrator = RoundOrchestrator(
            store, make_strategy(config.defense), pool, config.federation, initial_state
        )
        started = time.perf_counter()
        summaries = orchestrator.run(
            on_round=(lambda s, r=ratio: on_round(r, s)) if on_round else None, progress=progress
        )
        train_seconds = time.perf_counter() - started
        pool.shutdown()
        _, final_state = store.get_global()
        malicious = {s.client_id for s in specs if s.malicious}
        sampled_malicious = sum(len(set(s.sampled) & malicious) for s in summaries)
        extra = {
            **base_extra,
            "num_clients": config.num_clients,
            "num_malicious": len(malicious),
            "clients_per_round": config.federation.clients_per_round,
            "local_steps": config.training.local_steps,
            "malicious_client_rounds": sampled_malicious,
            "client_rounds": sum(len(s.sampled) for s in summaries),
            "train_seconds": round(train_seconds, 1),
        }
        rows.append(_row(config, ratio, config.defense, evaluate(final_state), extra))
    return rows

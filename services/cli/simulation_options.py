"""The simulation's settings from CLI options (`simulate`, `demo`, the experiments): an option left out
(None) is not passed, so the config model's default applies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from research.simulation import SimulationConfig


def _given(**values: Any) -> dict[str, Any]:
    """The options actually given: the rest fall to the config model's defaults."""
    return {key: value for key, value in values.items() if value is not None}


def simulation_config(
    *,
    model: str | None = None,
    store: str | None = None,
    clients: int | None = None,
    samples_per_client: int | None = None,
    rounds: int | None = None,
    clients_per_round: int | None = None,
    seed: int | None = None,
    lr_max: float | None = None,
    lr_min: float | None = None,
    local_steps: int | None = None,
    batch_size: int | None = None,
    eval_harmful: int | None = None,
    eval_pairs: int | None = None,
    eval_benign: int | None = None,
    eval_benign_loss: int | None = None,
    max_new_tokens: int | None = None,
) -> SimulationConfig:
    from research.simulation import SimulationConfig
    from services.aggregator.settings import FederationConfig
    from shared.config import LocalTrainingConfig, LrSchedule
    from shared.evaluation.metrics import EvalSettings

    lr = LrSchedule(**_given(lr_max=lr_max, lr_min=lr_min))
    return SimulationConfig(
        **_given(model=model, store=store, num_clients=clients, samples_per_client=samples_per_client),
        federation=FederationConfig(
            **_given(num_rounds=rounds, clients_per_round=clients_per_round, seed=seed), lr=lr
        ),
        training=LocalTrainingConfig(**_given(local_steps=local_steps, batch_size=batch_size)),
        eval=EvalSettings(
            **_given(
                num_harmful_prompts=eval_harmful,
                num_pairs=eval_pairs,
                num_benign_prompts=eval_benign,
                num_benign_loss=eval_benign_loss,
                max_new_tokens=max_new_tokens,
            )
        ),
    )

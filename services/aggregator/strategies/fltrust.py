"""FLTrust (Cao et al., "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021).

The server trains its own update g_0 from the round's global adapter on a small clean root set (the
"root" data pool: disjoint from every client and evaluation pool). Each client gets trust
TS_i = ReLU(cos(g_i, g_0)); its update is rescaled to ‖g_0‖; the new global is
G + Σ TS_i · (‖g_0‖/‖g_i‖) g_i / Σ TS_i. If every trust score is 0 the round is skipped.

Options: `server_update` (required): a callable (global adapter, round index) -> the server's adapter
after local training on the root set with the clients' training settings. The aggregator cannot train,
so the simulation provides it; a deployment without one cannot use FLTrust.
Departure: the global learning rate of the paper is 1 (clients already apply the round's learning rate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import Field

from services.aggregator.strategies.base import AggregationResult, Strategy, StrategyOptions
from services.aggregator.strategies.tensors import apply_delta, client_deltas
from shared.lora_state import LoraState, validate_lora_state
from shared.updates import ClientUpdate

ServerUpdate = Callable[[LoraState, int], LoraState]


def fltrust_weights(deltas: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(trust scores, rescaled updates)."""
    norms = np.linalg.norm(deltas, axis=1)
    server_norm = float(np.linalg.norm(server))
    safe = np.where(norms < 1e-12, 1.0, norms)
    cosine = deltas @ server / (safe * max(server_norm, 1e-12))
    trust = np.maximum(cosine, 0.0)
    return trust, deltas * (server_norm / safe)[:, None]


class FLTrustOptions(StrategyOptions):
    server_update: ServerUpdate = Field(
        description="(global adapter, round index) -> the server's adapter trained on its root set."
    )


class FLTrust(Strategy):
    name = "fltrust"

    def __init__(self, *, server_update: ServerUpdate) -> None:
        if not callable(server_update):
            raise ValueError(
                "fltrust needs server_update: a trainer on the root set (the simulation has one)"
            )
        self.server_update = server_update

    def _aggregate(
        self,
        global_state: LoraState,
        updates: Sequence[ClientUpdate],
        factors: Sequence[float] | None,
        round_index: int | None,
    ) -> AggregationResult:
        if round_index is None:
            raise ValueError("fltrust trains its root update for a round: pass round_index")
        deltas, layout = client_deltas(global_state, updates)
        server_state = self.server_update(global_state, round_index)
        validate_lora_state(server_state, global_state)
        server = layout.flatten(server_state) - layout.flatten(global_state)
        trust, rescaled = fltrust_weights(deltas, server)
        details: dict[str, object] = {
            "trust": dict(zip([u.client_id for u in updates], trust.tolist(), strict=True))
        }
        if trust.sum() <= 0:
            return AggregationResult(
                dict(global_state),
                {u.client_id: 0.0 for u in updates},
                True,
                "FLTrust: every trust score is 0",
                details,
            )
        share = trust / trust.sum()
        return AggregationResult(
            apply_delta(global_state, layout, share @ rescaled),
            {u.client_id: float(w) for u, w in zip(updates, share, strict=True)},
            details=details,
        )

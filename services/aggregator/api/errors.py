"""The error shape of the aggregator API and the statuses each route documents in its OpenAPI."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    detail: str


def errors(**statuses: str) -> dict[int | str, dict]:
    """OpenAPI `responses` for error statuses given as s401="why", s503="why"."""
    return {int(k.removeprefix("s")): {"model": ErrorDetail, "description": v} for k, v in statuses.items()}


UNAVAILABLE = "The state store (Redis) is unreachable; retry after Retry-After seconds"
CLIENT_AUTH = errors(
    s401="Missing bearer token",
    s403="The token does not belong to this client id",
    s413="Request body over the limit",
    s503=UNAVAILABLE,
)
OPERATOR_AUTH = errors(
    s401="Missing bearer token",
    s403="Wrong operator token, or operator endpoints disabled",
    s413="Request body over the limit",
    s503=UNAVAILABLE,
)

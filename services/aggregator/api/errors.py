"""The error shape of the aggregator API and the statuses each route documents in its OpenAPI.

Every error is `{"detail": ...}`: a sentence, or for a 422 from request validation a list of field errors
without the offending input (never echoed: it may be huge, or a lone surrogate that cannot be encoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from shared.echo import printable


class ErrorDetail(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """A 422: a sentence (the body is malformed or out of bounds) or the fields that failed validation."""

    detail: str | list[FieldError]


def field_errors(errors: Sequence[Any]) -> list[dict[str, object]]:
    """FastAPI's validation errors as FieldErrors: location, message and type only, each bounded."""
    return [
        {
            "loc": [part if isinstance(part, int) else printable(str(part), 64) for part in error["loc"]],
            "msg": printable(str(error["msg"]), 256),
            "type": printable(str(error["type"]), 64),
        }
        for error in errors
    ]


def errors(**statuses: str) -> dict[int | str, dict]:
    """OpenAPI `responses` for error statuses given as s401="why", s503="why"."""
    return {
        int(k.removeprefix("s")): {"model": InvalidRequest if k == "s422" else ErrorDetail, "description": v}
        for k, v in statuses.items()
    }


UNAVAILABLE = "The state store (Redis) is unreachable; retry after Retry-After seconds"
INVALID = "Invalid parameters, headers or body (the reason, or the fields that failed)"
CLIENT_AUTH = errors(
    s401="Missing bearer token",
    s403="The token does not belong to this client id",
    s413="Request body over the limit",
    s422=INVALID,
    s503=UNAVAILABLE,
)
OPERATOR_AUTH = errors(
    s401="Missing bearer token",
    s403="Wrong operator token, or operator endpoints disabled",
    s413="Request body over the limit",
    s422=INVALID,
    s503=UNAVAILABLE,
)

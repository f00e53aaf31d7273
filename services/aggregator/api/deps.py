"""Dependencies: the service, and bearer-token authentication of clients and operators."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from services.aggregator.service import AggregatorService


def get_service(request: Request) -> AggregatorService:
    return request.app.state.service


Service = Annotated[AggregatorService, Depends(get_service)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization.split(" ", 1)[1].strip()


def _bearer(authorization: str | None) -> str:
    token = bearer_token(authorization)
    if token is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token


def client_identity(
    service: Service,
    x_client_id: Annotated[str, Header(description="The registered client id.")],
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's client id, proven by its token (403 when the token is another client's)."""
    service.authenticate(x_client_id, _bearer(authorization))
    return x_client_id


def operator(service: Service, authorization: Annotated[str | None, Header()] = None) -> None:
    expected = service.settings.admin_token
    if expected is None:
        raise HTTPException(403, "operator endpoints are disabled (set SAFE_FEDLLM_AGGREGATOR_ADMIN_TOKEN)")
    # bytes, not str: compare_digest refuses non-ASCII strings (a TypeError, i.e. a 500)
    given = _bearer(authorization).encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode("utf-8", "surrogateescape")):
        raise HTTPException(403, "wrong operator token")


ClientId = Annotated[str, Depends(client_identity)]
Operator = Depends(operator)

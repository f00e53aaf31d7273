"""A submission is authenticated from its headers before any of its body is read.

A submission's body may be 2 x max_update_bytes (129 MiB by default); FastAPI receives and parses the whole
multipart form before it runs a route's dependencies, so an anonymous client could make the server read
and parse 129 MiB per request before being refused. This middleware checks X-Client-Id and the bearer
token first and answers 401/403 (or 503 when the store is down) without reading a byte of the body; the
route's own dependency checks the same credentials again (and documents them in the OpenAPI).
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.aggregator.api.deps import bearer_token
from services.aggregator.api.limits import SUBMISSION
from services.aggregator.errors import Forbidden
from services.aggregator.state import StoreUnavailable
from shared.echo import printable


class SubmissionAuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not SUBMISSION.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        headers = Headers(scope=scope)
        client_id, token = headers.get("x-client-id"), bearer_token(headers.get("authorization"))
        refusal: tuple[int, str, dict[str, str]] | None = None
        if token is None:
            refusal = (401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        elif not client_id:
            refusal = (401, "missing X-Client-Id header", {})
        else:
            try:
                await run_in_threadpool(state.service.authenticate, client_id, token)
            except Forbidden as error:
                refusal = (403, str(error), {})
            except StoreUnavailable as error:
                refusal = (503, str(error), {"Retry-After": str(state.service.settings.retry_after_s)})
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail, extra = refusal
        state.metrics.submissions.labels(str(status)).inc()
        body = json.dumps({"detail": printable(detail)}).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread body must not be parsed as the next request
            *((k.lower().encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

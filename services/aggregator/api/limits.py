"""Request bodies bounded while they stream in, before anything parses them.

A declared Content-Length over the route's limit is refused at once; a body without one (chunked) is
counted as it arrives and refused the moment it passes the limit, so a 200 MB part is never received
whole. JSON bodies are small (the limit of non-submission routes) and are also checked for nesting depth
before FastAPI's parser recurses into them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.bounded_json import MAX_DEPTH, nesting_depth

SUBMISSION = re.compile(r"^/v1/rounds/[^/]+/updates/?$")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, BodyTooLarge(limit).detail)
            return
        if headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            await self._json(scope, receive, send, limit)
            return
        received, started = 0, False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI passes HTTPExceptions from body parsing through
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge as error:
            if started:
                raise
            await _answer(send, 413, error.detail)

    async def _json(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Buffer a (small) JSON body, refuse it if too large or too deep, then replay it to the app."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _answer(send, 413, BodyTooLarge(limit).detail)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        depth = nesting_depth(body)
        if depth > MAX_DEPTH:
            await _answer(send, 422, f"JSON nested {depth} levels deep; at most {MAX_DEPTH} allowed")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

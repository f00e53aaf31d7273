"""Reading request bodies within the size limit, and multipart forms kept in memory."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from services.probe_service.errors import InvalidUpdate, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it (or its declared length) passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _InMemoryParser(MultiPartParser):
    # Starlette spools file parts over 1 MB to disk; a body is already capped by read_body, keep it in RAM.
    spool_max_size = 1 << 40
    max_part_size = 64 * 1024  # non-file fields: ids and names only


async def read_multipart(request: Request, body: bytes, max_files: int) -> dict[str, list[bytes | str]]:
    """Field name -> values (bytes for files, str for plain fields), in order."""
    boundary = _boundary(request.headers.get("content-type", ""))
    if not boundary:
        raise InvalidUpdate("multipart body without a boundary parameter in its content type")
    if b"--" + boundary + b"--" not in body[-len(boundary) - 64 :]:
        raise InvalidUpdate("multipart body is truncated: its closing boundary is missing")

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = _InMemoryParser(request.headers, stream(), max_files=max_files, max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise InvalidUpdate(f"malformed multipart body: {error.message}") from error
    except (ValueError, KeyError) as error:  # python-multipart on broken headers or encodings
        raise InvalidUpdate(f"malformed multipart body: {error}") from error
    fields: dict[str, list[bytes | str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            fields.setdefault(name, []).append(await value.read())
        else:
            fields.setdefault(name, []).append(value)
    return fields


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            try:
                return value.strip().strip('"').encode("latin-1")
            except UnicodeEncodeError:
                return None
    return None

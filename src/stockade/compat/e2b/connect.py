"""The Connect protocol as envd's clients speak it: JSON codec, enveloped streams, error codes.

Unary calls carry a bare JSON message; server-streaming calls carry one enveloped message
(1 flag byte, 4-byte big-endian length, JSON) and answer with enveloped messages ended by an
end-of-stream envelope (flag 0x02) holding ``{}`` or ``{"error": {code, message}}``.
"""

from __future__ import annotations

import base64
import datetime
import json
import struct
from typing import Any, AsyncIterator, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from ...engine import EngineError

#: The largest request message accepted (a SendInput chunk is the biggest legitimate one).
MAX_MESSAGE = 8 << 20
STREAM_TYPE = "application/connect+json"
END_STREAM = 0x02
COMPRESSED = 0x01
STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}
#: Stockade engine error codes -> Connect codes (anything else is ``internal``).
FROM_ENGINE = {
    "invalid_request": "invalid_argument",
    "not_found": "not_found",
    "sandbox_not_found": "unavailable",
    "conflict": "already_exists",
    "quota_exceeded": "resource_exhausted",
    "sandbox_unavailable": "unavailable",
    "context_died": "unavailable",
    "permission_denied": "permission_denied",
    "insufficient_storage": "resource_exhausted",
    "unsupported": "failed_precondition",
}
M = TypeVar("M", bound="Message")


class ConnectError(Exception):
    """An RPC failure with a Connect code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code if code in STATUS else "unknown"
        self.message = message

    @classmethod
    def of(cls, exc: EngineError) -> "ConnectError":
        return cls(FROM_ENGINE.get(exc.code, "internal"), exc.message)

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=STATUS[self.code])


class Message(BaseModel):
    """A protobuf message in canonical JSON: lowerCamel names (proto names accepted),
    unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel, frozen=True)


def parse(model: type[M], raw: bytes) -> M:
    """Decode a JSON message or raise ``invalid_argument`` naming what is wrong."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise ConnectError(
            "invalid_argument",
            "the request body is not JSON (this server speaks Connect with the JSON codec)",
        ) from None
    if not isinstance(data, dict):
        raise ConnectError("invalid_argument", "the request message must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "message"
        raise ConnectError("invalid_argument", f"{where}: {first['msg']}") from None


async def read_body(request: Request, limit: int = MAX_MESSAGE + 5) -> bytes:
    """The request body, refused (``resource_exhausted``) past ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ConnectError("resource_exhausted", f"request message larger than {MAX_MESSAGE} bytes")
    return bytes(body)


async def unary_request(request: Request, model: type[M]) -> M:
    """The message of a unary call (``application/json``)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("application/json", ""):
        raise ConnectError(
            "invalid_argument", f"unsupported content type {kind!r}; send application/json (the JSON codec)"
        )
    return parse(model, await read_body(request))


async def stream_request(request: Request, model: type[M]) -> M:
    """The single enveloped message of a server-streaming call."""
    body = await read_body(request)
    if len(body) < 5:
        raise ConnectError(
            "invalid_argument",
            "a streaming request must be one Connect envelope (flags, 4-byte length, message)",
        )
    flags, length = struct.unpack(">BI", body[:5])
    if flags & COMPRESSED:
        raise ConnectError(
            "unimplemented", "compressed envelopes are not supported; send Connect-Content-Encoding: identity"
        )
    if length != len(body) - 5:
        raise ConnectError("invalid_argument", f"envelope says {length} bytes but {len(body) - 5} follow")
    return parse(model, body[5:])


async def stream_messages(request: Request, model: type[M]) -> AsyncIterator[M]:
    """The enveloped messages of a client-streaming call, as they arrive."""
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        while len(buffer) >= 5:
            flags, length = struct.unpack(">BI", buffer[:5])
            if length > MAX_MESSAGE:
                raise ConnectError("resource_exhausted", f"request message larger than {MAX_MESSAGE} bytes")
            if flags & COMPRESSED:
                raise ConnectError("unimplemented", "compressed envelopes are not supported")
            if len(buffer) < 5 + length:
                break
            message, buffer = bytes(buffer[5 : 5 + length]), buffer[5 + length :]
            if flags & END_STREAM:
                return
            yield parse(model, message)
    if buffer:
        raise ConnectError("invalid_argument", "the request ended inside an envelope")


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def stream_response(messages: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Envelope each message, then end the stream (with the error, if one was raised)."""

    async def body() -> AsyncIterator[bytes]:
        end: dict[str, Any] = {}
        try:
            async for message in messages:
                yield envelope(message)
        except ConnectError as exc:
            end = {"error": exc.body()}
        except EngineError as exc:
            end = {"error": ConnectError.of(exc).body()}
        finally:
            await messages.aclose()  # type: ignore[attr-defined]
        yield envelope(end, END_STREAM)

    return StreamingResponse(body(), media_type=STREAM_TYPE)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ConnectError("invalid_argument", f"{what} must be base64 (proto3 JSON bytes)") from None


def timestamp(unix: float) -> str:
    """A ``google.protobuf.Timestamp`` in JSON (RFC 3339, UTC)."""
    when = datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

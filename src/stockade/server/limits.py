"""Request-body limits: a JSON route never reads more than ``max_body`` bytes.

File uploads (``PUT /sandboxes/{id}/files``) are streamed to the sandbox and bounded by its disk
quota instead.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import json_error

UNLIMITED = (
    ("PUT", re.compile(r"^/sandboxes/[^/]+/files$")),
    # E2B: uploads streamed like the PUT; RPCs bounded by compat/e2b/connect.py
    ("POST", re.compile(r"^/e2b/(files|process\.Process/\w+|filesystem\.Filesystem/\w+)$")),
    # E2B template build files: bounded by engine/build_jobs.py's MAX_FILE
    ("PUT", re.compile(r"^/e2b/template-files/[0-9a-f]+$")),
    # build contexts and images: bounded by routes/templates.py's MAX_UPLOAD
    ("POST", re.compile(r"^/templates/(build|import)$")),
    # Daytona's uploads: streamed like the PUT (compat/daytona/upload.py)
    ("POST", re.compile(r"^/daytona/toolbox/[^/]+/files/(bulk-upload|upload-v2)$")),
)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body larger than {limit} bytes; send files with "
            f"PUT /sandboxes/{{id}}/files, which streams",
        )


class BodyLimit:
    """Refuse (413) bodies over ``max_body`` bytes, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(
            scope["method"] == m and p.match(scope["path"]) for m, p in UNLIMITED
        ):
            return await self.app(scope, receive, send)
        limit = self.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await json_error(
                        scope, send, 400, "invalid_request", "Content-Length is not a number"
                    )
                if declared > limit:
                    return await json_error(scope, send, 413, "too_large", BodyTooLarge(limit).detail)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)

"""Files in a sandbox (async core; the sync twin wraps it)."""

from __future__ import annotations

from typing import IO, Any, AsyncIterable, AsyncIterator, Iterable, Literal

import httpx

from ..models import EntryInfo
from . import exceptions as exc
from ._transport import Api, raise_for_error, translate_transport

UPLOAD_CHUNK = 1 << 20


Content = str | bytes | IO[bytes] | IO[str] | Iterable[bytes] | AsyncIterable[bytes]


async def _chunks(data: Content) -> AsyncIterator[bytes]:
    if isinstance(data, str):
        yield data.encode()
    elif isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
    elif hasattr(data, "read"):
        while chunk := data.read(UPLOAD_CHUNK):
            yield chunk.encode() if isinstance(chunk, str) else chunk
    elif hasattr(data, "__aiter__"):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk


class AsyncFiles:
    """``sandbox.files``: read, write, list and manage files inside the sandbox."""

    def __init__(self, api: Api, sandbox_id: str) -> None:
        self._api = api
        self._base = f"/sandboxes/{sandbox_id}/files"

    async def read(
        self, path: str, format: Literal["text", "bytes", "stream"] = "text", user: str | None = None
    ) -> Any:
        """The file's content: ``str`` (default), ``bytes``, or an async iterator of chunks."""
        params = _params(path=path, user=user)
        if format == "stream":
            return self._stream(params)
        if format not in ("text", "bytes"):
            raise ValueError("format must be 'text', 'bytes' or 'stream'")
        content = b"".join([chunk async for chunk in self._stream(params)])
        return content.decode(errors="replace") if format == "text" else content

    async def _stream(self, params: dict[str, Any]) -> AsyncIterator[bytes]:
        client = self._api.client
        try:
            request = client.build_request("GET", self._base, params=params)
            response = await client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    raise_for_error(response, await response.aread())
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()
        except httpx.TransportError as error:
            raise translate_transport(error) from None

    async def write(
        self, path: str, data: Content, user: str | None = None, mode: int | None = None
    ) -> EntryInfo:
        """Create or replace a file (parents are created); large data is streamed."""
        params = _params(path=path, user=user, mode=mode)
        body = await self._api.request("PUT", self._base, params=params, content=_chunks(data))
        return EntryInfo.model_validate(body)

    async def list(self, path: str, depth: int = 1, user: str | None = None) -> list[EntryInfo]:
        rows = await self._api.request(
            "GET", f"{self._base}/list", params=_params(path=path, user=user, depth=depth)
        )
        return [EntryInfo.model_validate(row) for row in rows]

    async def get_info(self, path: str, user: str | None = None) -> EntryInfo:
        return EntryInfo.model_validate(
            await self._api.request("GET", f"{self._base}/stat", params=_params(path=path, user=user))
        )

    async def exists(self, path: str, user: str | None = None) -> bool:
        try:
            await self.get_info(path, user)
        except exc.NotFoundError:
            return False
        return True

    async def remove(self, path: str, user: str | None = None) -> None:
        """Remove a file, or a directory with all it holds."""
        await self._api.request("DELETE", self._base, params=_params(path=path, user=user))

    async def rename(self, old_path: str, new_path: str, user: str | None = None) -> EntryInfo:
        body = await self._api.request(
            "POST", f"{self._base}/rename", json={"src": old_path, "dst": new_path, "user": user}
        )
        return EntryInfo.model_validate(body)

    async def make_dir(self, path: str, user: str | None = None) -> bool:
        """Create a directory (and parents); False if it already existed."""
        body = await self._api.request("POST", f"{self._base}/mkdir", json={"path": path, "user": user})
        return bool(body["created"])


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}

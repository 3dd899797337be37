"""How the SDK reaches a server: remote over HTTP(S), or the local daemon over a unix socket.

Remote mode is used whenever ``STOCKADE_API_URL`` (or ``api_url=``) is set. Otherwise the SDK
talks to the local daemon on ``<data dir>/private/stockade.sock`` and starts it if it is not running
(as root: the engine needs root on the host). The daemon exits by itself once it has had no
sandbox and no request for a while.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..config import default_data_dir, local_socket
from . import exceptions as exc

DAEMON_IDLE_EXIT = float(os.environ.get("STOCKADE_DAEMON_IDLE_EXIT", "120"))


@dataclass(frozen=True)
class ConnectionConfig:
    """Where the server is and how to authenticate. Built from arguments, then environment."""

    api_url: str | None = None
    api_key: str | None = None
    data_dir: Path | None = None
    request_timeout: float = 60.0

    @classmethod
    def resolve(
        cls,
        api_url: str | None = None,
        api_key: str | None = None,
        data_dir: Path | str | None = None,
        request_timeout: float | None = None,
    ) -> "ConnectionConfig":
        return cls(
            api_url=api_url or os.environ.get("STOCKADE_API_URL") or None,
            api_key=api_key or os.environ.get("STOCKADE_API_KEY") or None,
            data_dir=Path(data_dir) if data_dir else default_data_dir(),
            request_timeout=request_timeout or 60.0,
        )

    @property
    def local(self) -> bool:
        return self.api_url is None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every client shares (httpx's defaults, read once per process):
    building them loads the CA bundle, which costs tens of milliseconds per client."""
    return httpx.create_ssl_context()


def make_client(config: ConnectionConfig) -> httpx.AsyncClient:
    """An HTTP client for ``config`` (unix socket in local mode)."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = httpx.Timeout(config.request_timeout, connect=10.0)
    if config.local:
        transport = httpx.AsyncHTTPTransport(uds=str(local_socket(config.data_dir)), verify=tls_context())
        return httpx.AsyncClient(
            transport=transport,
            base_url="http://stockade",
            headers=headers,
            timeout=timeout,
            verify=tls_context(),
        )
    return httpx.AsyncClient(
        base_url=config.api_url.rstrip("/"),  # type: ignore[union-attr]
        headers=headers,
        timeout=timeout,
        verify=tls_context(),
    )


async def ensure_local_daemon(config: ConnectionConfig, wait: float = 30.0) -> None:
    """Start the local daemon if its socket does not answer."""
    sock = local_socket(config.data_dir)
    if await _answers(sock):
        return
    if os.geteuid() != 0:
        raise exc.ConnectError(
            f"no Stockade daemon answers on {sock}, and only root can start one: run "
            f"'sudo stockade serve --local' or set STOCKADE_API_URL to a Stockade server"
        )
    assert config.data_dir is not None
    config.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.data_dir / "daemon.log"
    log = open(log_path, "ab")
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stockade.server",
            "--data-dir",
            str(config.data_dir),
            "--idle-exit",
            str(DAEMON_IDLE_EXIT),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if await _answers(sock):
            return
        if daemon.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise exc.ConnectError(f"the local Stockade daemon exited at start ({log_path}):\n{tail}")
        await asyncio.sleep(0.05)
    raise exc.ConnectError(
        f"started the local Stockade daemon but it did not answer on {sock} "
        f"within {wait:.0f} s; see {config.data_dir / 'daemon.log'}"
    )


async def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
    except OSError:
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def raise_for_error(response: httpx.Response, body: bytes | None = None) -> None:
    """Turn an error response into the matching SDK exception."""
    if response.status_code < 400:
        return
    raw = body if body is not None else response.content
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = {"message": raw.decode(errors="replace")[:500]}
    raise exc.from_response(response.status_code, parsed)


def translate_transport(error: httpx.TransportError) -> exc.TransportError:
    if isinstance(error, httpx.TimeoutException):
        return exc.TimeoutError(f"the Stockade server did not answer in time: {error}")
    return exc.ConnectError(f"cannot reach the Stockade server: {error}")


class Api:
    """JSON requests against one server, errors translated at this boundary."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.client = make_client(config)

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise translate_transport(error) from None
        raise_for_error(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    async def aclose(self) -> None:
        await self.client.aclose()

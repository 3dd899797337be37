"""``/ui/events``: the API's event stream (``GET /events``, Server-Sent Events) relayed to a
signed-in page as the session's key, which a browser's ``EventSource`` cannot send itself.

The pages listen to it to update at once when a sandbox changes state or ends (the list also
collects the recent ends it replays). The relay stops when the browser leaves or the session
ends (sign-out, revoked key), at the latest at the stream's next keepalive."""

from __future__ import annotations

from typing import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..sdk._transport import tls_context
from ..sdk.exceptions import from_response
from .sessions import Session, Sessions
from .web import HEADERS, Failure, api_url, signed_in

#: How a number of events (``since``, ``Last-Event-ID``) may look.
MAX_DIGITS = 20


def _number(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > MAX_DIGITS:
        raise Failure(400, f"{what} must be the number of an event")
    return value


@signed_in
async def events(request: Request, session: Session) -> Response:
    params = {}
    if since := _number(request.query_params.get("since"), "since"):
        params["since"] = since
    headers = {"Authorization": f"Bearer {session.key}"}
    if last := _number(request.headers.get("last-event-id"), "Last-Event-ID"):
        headers["Last-Event-ID"] = last  # the browser reconnecting: go on from there
    client = httpx.AsyncClient(
        base_url=api_url(request), verify=tls_context(), timeout=httpx.Timeout(30, read=None)
    )
    try:
        upstream = await client.send(
            client.build_request("GET", "/events", params=params, headers=headers), stream=True
        )
        if upstream.status_code == 401:  # the key was revoked: the next page signs out
            await upstream.aclose()
            await client.aclose()
            return Response("the API key is no longer valid", 401, headers=HEADERS)
        if upstream.status_code != 200:  # say, a cluster replica, which has no stream
            await upstream.aread()
            raise from_response(upstream.status_code, upstream.json() if upstream.content else None)
    except httpx.TransportError as exc:
        await client.aclose()
        raise Failure(502, f"the API did not answer: {exc}") from None
    except BaseException:
        await client.aclose()
        raise
    return StreamingResponse(
        _relay(upstream, client, request.app.state.sessions, request.state.session_id),
        media_type="text/event-stream",
        headers={**HEADERS, "X-Accel-Buffering": "no"},
    )


async def _relay(
    upstream: httpx.Response, client: httpx.AsyncClient, sessions: Sessions, session_id: str
) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            if sessions.get(session_id) is None:
                return
            yield chunk
    except httpx.TransportError:
        return  # the server is going away: the browser reconnects by itself
    finally:
        await upstream.aclose()
        await client.aclose()


ROUTES = [Route("/ui/events", events)]

"""Who may reach what through ``/e2b``: API keys on the control plane, per-sandbox tokens on
envd and the code interpreter, and E2B's error shape for refusals.

Control-plane calls carry ``X-API-Key`` (a Stockade key); the tenant layer
(``server.control``) decides ownership, and another tenant's sandbox reads as missing (404).
Sandbox-bound calls carry no API key: they name the sandbox in ``E2b-Sandbox-Id`` and prove
the right to it with the token the create/connect response handed out (``X-Access-Token``
for envd, ``E2B-Traffic-Access-Token`` or ``X-Access-Token`` for the code interpreter).
Tokens are HMACs of the sandbox id under the server's token secret: nothing is stored, they
survive restarts and pause/resume, and they die with the secret.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ...engine import Engine, EngineError, SandboxNotFound
from ...models import SandboxInfo
from ...server.auth import Principal
from ...server.control import Control

ENVD_PORT = "49983"
#: States a sandbox created with ``auto_resume`` is woken from by the next envd call.
WAKEABLE = ("paused", "stopped", "archived")
INTERPRETER_PORT = "49999"


class E2BError(Exception):
    """A refusal answered as E2B does: ``{"code": <status>, "message": ...}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def control(request: Request) -> Control:
    found: Control | None = request.app.state.main.state.control
    if found is None:
        raise E2BError(503, "the server is starting")
    return found


def engine(request: Request) -> Engine:
    return control(request).engine


async def principal(request: Request) -> Principal:
    """The caller of a control-plane route, from ``X-API-Key`` (401 if missing or invalid)."""
    ctl = control(request)
    key = request.headers.get("x-api-key", "").strip() or None
    if ctl.needs_keys and key is None:
        raise E2BError(401, "missing API key: send 'X-API-Key: <Stockade API key>' (E2B_API_KEY)")
    who = await ctl.authenticate(key)
    if who is None:
        raise E2BError(401, "invalid, revoked or expired API key")
    request.state.principal = who
    return who


def owned(request: Request, who: Principal, sandbox_id: str) -> str:
    """``sandbox_id`` if the caller may see it; another tenant's reads as missing (404)."""
    control(request).check_owner(who, sandbox_id)
    return sandbox_id


def _mac(request: Request, purpose: str, sandbox_id: str) -> str:
    secret: bytes = request.app.state.main.state.access_tokens.secret
    digest = hmac.new(secret, f"e2b-{purpose}\n{sandbox_id}".encode(), hashlib.sha256)
    return digest.hexdigest()


def envd_token(request: Request, sandbox_id: str) -> str:
    return "ea_" + _mac(request, "envd", sandbox_id)


def traffic_token(request: Request, sandbox_id: str) -> str:
    return "ta_" + _mac(request, "traffic", sandbox_id)


def volume_token(request: Request, volume: str) -> str:
    return "va_" + _mac(request, "volume", volume)


@dataclass(frozen=True)
class Target:
    """The sandbox a sandbox-bound request is for, and the user it acts as."""

    sandbox_id: str
    engine: Engine


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


async def target(request: Request, tokens: tuple[str, ...] = ("envd",)) -> Target:
    """Resolve ``E2b-Sandbox-Id`` to a running sandbox the caller holds a token for.

    Missing or foreign token: 401. No such sandbox, or not running: 502 (as E2B's proxy)."""
    sandbox_id = request.headers.get("e2b-sandbox-id", "")
    if not sandbox_id or len(sandbox_id) > 64:
        raise E2BError(400, "send the sandbox id in the 'E2b-Sandbox-Id' header")
    envd = _same(request.headers.get("x-access-token"), envd_token(request, sandbox_id))
    traffic = "traffic" in tokens and _same(
        request.headers.get("e2b-traffic-access-token"), traffic_token(request, sandbox_id)
    )
    if not (envd or traffic):
        raise E2BError(
            401,
            "missing or invalid access token for this sandbox (the "
            "envdAccessToken of its create or connect response)",
        )
    eng = engine(request)
    try:
        info = await eng.sandboxes.get(sandbox_id)
    except SandboxNotFound:
        raise not_running(sandbox_id, None, await end_words(eng, sandbox_id)) from None
    check_usable(info)
    return Target(sandbox_id, eng)


def check_usable(info: SandboxInfo) -> None:
    """502 unless the sandbox runs, or sleeps with ``auto_resume`` (the engine wakes it on
    the call that follows, as E2B's ``autoResume``)."""
    if info.state != "running" and not (info.auto_resume and info.state in WAKEABLE):
        raise not_running(info.id, info.state, info.message)


async def end_words(eng: Engine, sandbox_id: str) -> str | None:
    """Why a sandbox that ended ended, from its end record: ``"it ended at ... (out of
    memory (python3))"``; None when no record is kept (or it has not ended)."""
    try:
        end = await eng.sandboxes.end(sandbox_id)
    except EngineError:
        return None
    when = datetime.datetime.fromtimestamp(end.ended_at, datetime.timezone.utc)
    return f"it ended at {when:%Y-%m-%dT%H:%M:%SZ} ({end.message})"


async def gone(request: Request, sandbox_id: str) -> str | None:
    """A control-plane 404's message for a sandbox that ended, with why; None unless the
    caller owned it (another tenant's reads exactly as a missing one)."""
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None or not who.may_see(control(request).owner(sandbox_id)):
        return None
    why = await end_words(engine(request), sandbox_id)
    return f"sandbox {sandbox_id} was not found: {why}" if why else None


def not_running(sandbox_id: str, state: str | None, why: str | None = None) -> E2BError:
    """E2B's proxy answer for a sandbox it cannot reach: 502, and the words "was not found",
    from which the SDK concludes that the sandbox is not running (its exception carries this
    message: the state and why, or the end reason)."""
    if state:
        why = f"it is {state}{': ' + why if why else ''}; connect to it to resume it"
    now = f" ({why})" if why else ""
    return E2BError(502, f"The sandbox was not found running{now}", sandboxId=sandbox_id)


def rpc_user(request: Request) -> str | None:
    """The user an envd RPC acts as: ``Authorization: Basic base64("name:")``; None = the
    sandbox's default user."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        name = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
    except ValueError:
        raise E2BError(401, "malformed Authorization header: expected Basic base64('user:')") from None
    return name or None


def _signature(path: str, op: str, user: str, token: str, expiration: str) -> str:
    raw = f"{path}:{op}:{user}:{token}" + (f":{expiration}" if expiration else "")
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).decode().rstrip("=")


async def signed_target(request: Request, op: str) -> Target:
    """The sandbox a signed ``/files`` URL is for, found from the signature alone (the URL
    names no sandbox): each live sandbox's token is tried. 401 if expired or forged."""
    query = request.query_params
    signature, expiration = query.get("signature", ""), query.get("signature_expiration", "")
    if expiration:
        if not expiration.isdigit() or len(expiration) > 12:
            raise E2BError(401, "signature_expiration must be unix seconds")
        if int(expiration) < time.time():
            raise E2BError(401, "signature is already expired")
    eng = engine(request)
    for info in await eng.sandboxes.list():
        expected = _signature(
            query.get("path", ""), op, query.get("username", ""), envd_token(request, info.id), expiration
        )
        if _same(signature, expected):
            check_usable(info)
            return Target(info.id, eng)
    raise E2BError(401, "invalid signature")

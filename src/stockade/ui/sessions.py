"""Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie names the API key
(kept in server memory only) and a CSRF token that every form and the terminal must carry.

A sign-in link carries a one-time token instead of a key: it is minted by an authenticated
API call (``POST /dashboard/links``), names that caller's key in memory, and is exchanged,
once and within :data:`LINK_LIFETIME`, for a session."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "stockade_ui"
#: A session ends this long after sign-in, whatever happens.
LIFETIME = 8 * 3600.0
MAX_SESSIONS = 10000
#: A sign-in link works once, within this many seconds of being made.
LINK_LIFETIME = 600.0
MAX_LINKS = 1000


class Note(str):
    """What the last action did, shown once on the next page; ``failed``: it was refused."""

    failed: bool = False

    @classmethod
    def refusal(cls, text: str) -> "Note":
        note = cls(text)
        note.failed = True
        return note


@dataclass(frozen=True)
class Session:
    """One signed-in browser."""

    key: str
    tenant: str
    admin: bool
    #: Signed in to the keyless local daemon (no keys, tenants or audit log to show).
    local: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.time() + LIFETIME)


class Sessions:
    """Sessions by id, in memory (a server restart signs everyone out)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._notes: dict[str, Note] = {}
        self._links: dict[str, Session] = {}

    def link(self, key: str, tenant: str, admin: bool, local: bool = False) -> tuple[str, float]:
        """A one-time sign-in token for ``key`` and when it stops working."""
        now = time.time()
        self._links = {t: s for t, s in self._links.items() if s.expires > now}
        while len(self._links) >= MAX_LINKS:  # the oldest go first
            del self._links[next(iter(self._links))]
        token = secrets.token_urlsafe(32)
        self._links[token] = Session(key, tenant, admin, local, expires=now + LINK_LIFETIME)
        return token, now + LINK_LIFETIME

    def peek_link(self, token: str) -> Session | None:
        """Who a sign-in token would sign in as (it stays usable)."""
        found = self._links.get(token)
        return found if found is not None and found.expires > time.time() else None

    def redeem(self, token: str) -> tuple[str, Session] | None:
        """Exchange a sign-in token for a new session; the token is spent either way."""
        found = self._links.pop(token, None)
        if found is None or found.expires <= time.time():
            return None
        return self.open(found.key, found.tenant, found.admin, found.local)

    def open(self, key: str, tenant: str, admin: bool, local: bool = False) -> tuple[str, Session]:
        now = time.time()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
            while len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest go first
                del self._by_id[next(iter(self._by_id))]
            self._notes = {k: n for k, n in self._notes.items() if k in self._by_id}
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = session = Session(key, tenant, admin, local)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is not None and session.expires <= time.time():
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)
        self._notes.pop(session_id or "", None)

    def note(self, session_id: str, text: str, failed: bool = False) -> None:
        """Keep ``text`` to show on the session's next page (what the last action did, or
        why it was refused)."""
        if session_id in self._by_id:
            self._notes[session_id] = Note.refusal(text) if failed else Note(text)

    def take_note(self, session_id: str) -> Note:
        return self._notes.pop(session_id, Note())


def csrf_ok(session: Session, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(session.csrf.encode(), token.encode())


def cookie_value(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session id from a request's Cookie headers."""
    for name, value in headers:
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE and val:
                return val
    return None

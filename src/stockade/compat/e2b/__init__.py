"""E2B compatibility: unmodified ``e2b`` and ``e2b-code-interpreter`` code against Stockade.

Point the SDK at ``http://HOST:PORT/e2b`` (``E2B_API_URL`` and ``E2B_SANDBOX_URL``) with a
Stockade API key in ``E2B_API_KEY``. Everything under ``/e2b`` is served by ``front.E2BFront``,
a separate app with E2B's error shapes and its own authentication (see gate.py), placed in
front of the native app's key check. docs/compat-e2b.md says what is served.
"""

"""Secrets (docs/secrets.md): values a sandbox uses on the wire but never sees."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import Request, Result

#: Letters, digits, ``_``, ``-``, ``.`` (Daytona's and E2B's names fit).
SecretName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
#: The environment variable a sandbox sees a secret's placeholder under.
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class CreateSecret(Request):
    """A secret: ``value`` is sent only to ``hosts`` (names or ``*.domain`` wildcards), in
    request headers (and bodies with ``inject_body``), by the egress proxy."""

    name: SecretName
    value: str = Field(min_length=1, max_length=8192, repr=False)
    hosts: list[str] = Field(min_length=1, max_length=32)
    inject_body: bool = False
    description: str | None = Field(default=None, max_length=1024)


class SecretInfo(Result):
    """A secret as listed: never its value."""

    name: str
    hosts: list[str]
    inject_body: bool = False
    description: str | None = None
    created_at: float
    updated_at: float


class SecretPage(Result):
    items: list[SecretInfo]
    next_cursor: str | None = None

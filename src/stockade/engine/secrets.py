"""The secrets service (``engine.secrets``): store, list and delete an owner's secrets, and
bind them to a new sandbox as placeholders (docs/secrets.md).

The engine stays tenant-agnostic: ``owner`` is whatever the control plane passes (the tenant).
Values go in and never come out of this service; only the egress proxy reads them.
"""

from __future__ import annotations

import secrets as random
from typing import TYPE_CHECKING

from ..models import CreateSecret, SecretInfo, SecretPage
from ..net import NetworkPolicy
from ..net.vault import Secret, SecretError, Vault
from .errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from .engine import Engine

PLACEHOLDER_PREFIX = "STOCKADE_SECRET_"


def _info(secret: Secret) -> SecretInfo:
    return SecretInfo(
        name=secret.name,
        hosts=list(secret.hosts),
        inject_body=secret.inject_body,
        description=secret.description,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


class Secrets:
    """Per-owner secrets, encrypted at rest in the engine's data directory."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine

    @property
    def _vault(self) -> Vault:
        return self._engine.net.vault

    async def create(self, owner: str, spec: CreateSecret) -> SecretInfo:
        """Create secret ``spec.name`` of ``owner``, or replace its value and hosts."""
        try:
            return _info(
                self._vault.put(owner, spec.name, spec.value, spec.hosts, spec.inject_body, spec.description)
            )
        except SecretError as exc:
            raise InvalidRequest(str(exc)) from None

    async def update(
        self,
        owner: str,
        name: str,
        value: str | None = None,
        hosts: list[str] | None = None,
        description: str | None = None,
    ) -> SecretInfo:
        """Change some of secret ``name``'s value, hosts and description (the rest are kept)."""
        secret = self._vault.get(owner, name)
        kept = self._vault.reveal(owner, name)
        if secret is None or kept is None:
            raise NotFound(f"no secret {name!r}; create it first (POST /secrets)")
        try:
            return _info(
                self._vault.put(
                    owner,
                    name,
                    kept.decode() if value is None else value,
                    list(secret.hosts) if hosts is None else hosts,
                    secret.inject_body,
                    secret.description if description is None else description,
                )
            )
        except SecretError as exc:
            raise InvalidRequest(str(exc)) from None

    async def list(self, owner: str) -> SecretPage:
        return SecretPage(items=[_info(s) for s in self._vault.list(owner)])

    async def get(self, owner: str, name: str) -> SecretInfo:
        secret = self._vault.get(owner, name)
        if secret is None:
            raise NotFound(f"no secret {name!r}; create it first (POST /secrets)")
        return _info(secret)

    async def delete(self, owner: str, name: str) -> None:
        """Delete it; sandboxes holding its placeholder stop getting it from their next
        connection on."""
        if not self._vault.delete(owner, name):
            raise NotFound(f"no secret {name!r}; create it first (POST /secrets)")

    def bind(
        self, owner: str, wanted: dict[str, str], policy: NetworkPolicy | None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """For a new sandbox asking for ``{env var: secret name}``: ``({placeholder: name},
        {env var: placeholder})``, after checking that each secret exists and that ``policy``
        allows every host it is bound to."""
        if policy is None:
            raise InvalidRequest(
                "secrets need a network policy that allows the hosts they are "
                "bound to, e.g. network={'allow_out': ['api.example.com']}"
            )
        bound: dict[str, str] = {}
        envs: dict[str, str] = {}
        for env, name in wanted.items():
            secret = self._vault.get(owner, name)
            if secret is None:
                raise InvalidRequest(
                    f"secrets: no secret {name!r}; create it first (POST /secrets, 'stockade secret set')"
                )
            # A wildcard must be allowed as a wildcard (any subdomain), not one name of it.
            closed = [h for h in secret.hosts if not policy.allows_name(h.replace("*", "stockade-check", 1))]
            if closed:
                raise InvalidRequest(
                    f"secrets: {name!r} is bound to {', '.join(closed)}, which "
                    f"the network policy does not allow; add it to allow_out"
                )
            placeholder = f"{PLACEHOLDER_PREFIX}{random.token_hex(16)}"
            bound[placeholder], envs[env] = name, placeholder
        return bound, envs

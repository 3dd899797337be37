"""The server's settings: a TOML file, then ``STOCKADE_*`` environment variables, then flags.

Every setting has a default that works on one machine with no configuration at all::

    # stockade.toml (pass with --config or $STOCKADE_CONFIG)
    host = "127.0.0.1"
    port = 8800
    data_dir = "/var/lib/stockade"
    database_url = "postgresql://stockade@db/stockade"   # default: SQLite in the data dir
    max_body_bytes = 8388608
    proxy_domain = "sandboxes.example.com"   # ports also at {port}-{id}.sandboxes.example.com

    [quotas]            # defaults for tenants that have none of their own
    max_sandboxes = 20
    max_vcpu = 16
    max_memory_mb = 32768
    max_lifetime = 86400
    max_disk_mb = 102400  # what sandboxes in any state hold on disk (docs/limits.md)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import default_data_dir


@dataclass(frozen=True)
class Quotas:
    """What one tenant may use at once: sandboxes, vCPUs, memory, one sandbox's lifetime, and
    host disk. Sandboxes count in every state (running, paused, stopped, archived)."""

    max_sandboxes: int = 20
    max_vcpu: float = 16.0
    max_memory_mb: int = 32768
    max_lifetime: float = 86400.0
    max_disk_mb: int = 102400


@dataclass(frozen=True)
class ServerSettings:
    """How ``stockade serve`` runs in remote mode (TCP, API keys, a store)."""

    host: str = "127.0.0.1"
    port: int = 8800
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None  # None: SQLite at <data_dir>/private/stockade.db
    admin_key: str | None = None  # None: read or create <data_dir>/private/admin.key
    max_body_bytes: int = 8 << 20  # every body but file uploads
    quotas: Quotas = field(default_factory=Quotas)
    #: Seconds between sweeps that drop the store rows of sandboxes that ended by themselves.
    reap_interval: float = 5.0
    #: Seconds a validated API key is trusted before the store is asked again (revocations
    #: made through this server apply at once; through another replica, within this delay).
    key_cache_seconds: float = 10.0
    #: Also serve sandbox ports at ``{port}-{id}.{proxy_domain}`` (docs/ports-and-pty.md).
    proxy_domain: str | None = None

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "private" / "admin.key"


ENV = {
    "host": "STOCKADE_HOST",
    "port": "STOCKADE_PORT",
    "data_dir": "STOCKADE_DATA_DIR",
    "database_url": "STOCKADE_DATABASE_URL",
    "admin_key": "STOCKADE_ADMIN_KEY",
    "max_body_bytes": "STOCKADE_MAX_BODY_BYTES",
    "reap_interval": "STOCKADE_REAP_INTERVAL",
    "key_cache_seconds": "STOCKADE_KEY_CACHE_SECONDS",
    "proxy_domain": "STOCKADE_PROXY_DOMAIN",
}


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(ServerSettings)}[name]
    try:
        if "int" in str(kind):
            return int(value)
        if "float" in str(kind):
            return float(value)
        if "Path" in str(kind):
            return Path(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r}: {value!r} is not a valid value") from None


def load_settings(config_file: Path | None = None, **flags: Any) -> ServerSettings:
    """Merge the file (``config_file`` or ``$STOCKADE_CONFIG``), the environment and ``flags``
    (None means "not given"), later ones winning."""
    values: dict[str, Any] = {}
    config_file = config_file or (Path(p) if (p := os.environ.get("STOCKADE_CONFIG")) else None)
    quotas = Quotas()
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read the config file {config_file}: {exc}") from None
        quota_table = data.pop("quotas", {})
        unknown = set(data) - set(ENV)
        unknown |= {f"quotas.{k}" for k in set(quota_table) - {f.name for f in dataclasses.fields(Quotas)}}
        if unknown:
            raise ValueError(f"unknown settings in {config_file}: {', '.join(sorted(unknown))}")
        quotas = Quotas(**quota_table)
        values.update(data)
    for name, var in ENV.items():
        if os.environ.get(var):
            values[name] = os.environ[var]
    values.update({k: v for k, v in flags.items() if v is not None})
    coerced = {k: (_coerce(k, v) if k in ENV else v) for k, v in values.items()}
    return ServerSettings(quotas=quotas, **coerced)

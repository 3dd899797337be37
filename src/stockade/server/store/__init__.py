"""The control plane's store: tenants, API keys, sandbox ownership, audit log.

SQLite in the data directory by default, PostgreSQL when ``STOCKADE_DATABASE_URL`` names one;
the schema is kept by Alembic migrations (``migrations/``), applied at start.
"""

from .schema import ApiKey, AuditEvent, OwnedSandbox, Tenant
from .store import STORE_DOWN, Store, StoreUnavailable, database_url

__all__ = [
    "STORE_DOWN",
    "ApiKey",
    "AuditEvent",
    "OwnedSandbox",
    "Store",
    "StoreUnavailable",
    "Tenant",
    "database_url",
]

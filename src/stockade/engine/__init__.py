"""The engine: one per host, owning images, sandboxes and their runtimes."""

from .engine import Engine, EngineConfig
from .errors import (
    Conflict,
    EngineError,
    Forbidden,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    SandboxNotFound,
    SandboxUnavailable,
    Unsupported,
)
from .process import ProcessRun

__all__ = [
    "Conflict",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Forbidden",
    "InsufficientStorage",
    "InvalidRequest",
    "NotFound",
    "ProcessRun",
    "QuotaExceeded",
    "SandboxNotFound",
    "SandboxUnavailable",
    "Unsupported",
]

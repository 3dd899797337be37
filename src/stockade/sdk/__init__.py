"""The Stockade SDK: the same in local and remote mode."""

from ..models import EntryInfo, ProcessInfo, SandboxInfo, SecretInfo
from .code import Context, Execution, ExecutionError, ExecutionTimeout, Logs, Result
from .commands import AsyncCommandHandle, CommandResult
from .exceptions import (
    ApiError,
    ArchiveCorrupt,
    AuthenticationError,
    CheckpointCorrupt,
    CommandExitError,
    CommandTimeout,
    ConflictError,
    ConnectError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    SandboxError,
    SandboxNotFound,
    SandboxUnavailable,
    ServerError,
    StockadeError,
    StorageFullError,
    TimeoutError,
    TransportError,
)
from .sandbox import AsyncSandbox
from .secrets import AsyncSecret
from .sync import CommandHandle, Sandbox, Secret, Template, Volume
from .templates import AsyncTemplate, TemplateBuildError, TemplateInfo
from .volumes import AsyncVolume

__all__ = [
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AsyncSecret",
    "AsyncTemplate",
    "AsyncVolume",
    "CommandHandle",
    "CommandResult",
    "Context",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "ExecutionTimeout",
    "Logs",
    "ProcessInfo",
    "Result",
    "Sandbox",
    "SandboxInfo",
    "Secret",
    "SecretInfo",
    "Template",
    "TemplateBuildError",
    "TemplateInfo",
    "Volume",
    "ApiError",
    "ArchiveCorrupt",
    "AuthenticationError",
    "CheckpointCorrupt",
    "CommandExitError",
    "CommandTimeout",
    "ConflictError",
    "ConnectError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "SandboxError",
    "SandboxNotFound",
    "SandboxUnavailable",
    "ServerError",
    "StockadeError",
    "StorageFullError",
    "TimeoutError",
    "TransportError",
]

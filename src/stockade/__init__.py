"""Stockade: sandboxes for untrusted, AI-generated code.

from stockade import Sandbox

with Sandbox.create(isolation="gvisor") as sb:
    print(sb.commands.run("python3 -c 'print(6*7)'").stdout)
"""

from .sdk import (
    ApiError,
    AsyncCommandHandle,
    AsyncSandbox,
    AuthenticationError,
    CommandExitError,
    CommandHandle,
    CommandResult,
    CommandTimeout,
    ConflictError,
    ConnectError,
    EntryInfo,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProcessInfo,
    QuotaExceededError,
    Sandbox,
    SandboxError,
    SandboxInfo,
    SandboxNotFound,
    SandboxUnavailable,
    ServerError,
    StockadeError,
    StorageFullError,
    TimeoutError,
    TransportError,
)
from .sdk import Context, Execution, ExecutionError, ExecutionTimeout, Logs, Result
from .sdk import ArchiveCorrupt, AsyncVolume, CheckpointCorrupt, Volume
from .sdk import AsyncTemplate, Template, TemplateBuildError, TemplateInfo
from .sdk import AsyncSecret, Secret, SecretInfo

__all__ = [
    "ApiError",
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AuthenticationError",
    "CommandExitError",
    "CommandHandle",
    "CommandResult",
    "CommandTimeout",
    "ConflictError",
    "ConnectError",
    "EntryInfo",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProcessInfo",
    "QuotaExceededError",
    "Sandbox",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFound",
    "SandboxUnavailable",
    "ServerError",
    "StockadeError",
    "StorageFullError",
    "TimeoutError",
    "TransportError",
    "Context",
    "Execution",
    "ExecutionError",
    "ExecutionTimeout",
    "Logs",
    "Result",
    "ArchiveCorrupt",
    "AsyncVolume",
    "CheckpointCorrupt",
    "Volume",
    "AsyncTemplate",
    "Template",
    "TemplateBuildError",
    "TemplateInfo",
    "AsyncSecret",
    "Secret",
    "SecretInfo",
]

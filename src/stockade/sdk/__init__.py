"""The Stockade SDK: the same in local and remote mode."""

from ..models import EntryInfo, ProcessInfo, SandboxInfo
from .code import Context, Execution, ExecutionError, ExecutionTimeout, Logs, Result
from .commands import AsyncCommandHandle, CommandResult
from .exceptions import (ApiError, ArchiveCorrupt, AuthenticationError, CheckpointCorrupt,
                         CommandExitError, CommandTimeout, ConflictError, ConnectError,
                         InvalidRequestError, NotFoundError, PermissionDeniedError,
                         QuotaExceededError, SandboxError, SandboxNotFound, SandboxUnavailable,
                         ServerError, StockadeError, StorageFullError, TimeoutError,
                         TransportError)
from .sandbox import AsyncSandbox
from .sync import CommandHandle, Sandbox, Template, Volume
from .templates import AsyncTemplate, TemplateBuildError, TemplateInfo
from .volumes import AsyncVolume

__all__ = ["AsyncCommandHandle", "AsyncSandbox", "AsyncTemplate", "AsyncVolume",
           "CommandHandle", "CommandResult", "Context", "EntryInfo", "Execution",
           "ExecutionError", "ExecutionTimeout", "Logs", "ProcessInfo", "Result", "Sandbox",
           "SandboxInfo", "Template", "TemplateBuildError", "TemplateInfo", "Volume",
           "ApiError", "ArchiveCorrupt", "AuthenticationError", "CheckpointCorrupt",
           "CommandExitError", "CommandTimeout", "ConflictError", "ConnectError",
           "InvalidRequestError", "NotFoundError", "PermissionDeniedError", "QuotaExceededError",
           "SandboxError", "SandboxNotFound", "SandboxUnavailable", "ServerError",
           "StockadeError", "StorageFullError", "TimeoutError", "TransportError"]

"""The Stockade SDK: the same in local and remote mode."""

from .commands import AsyncCommandHandle, CommandResult, ProcessInfo
from .code import Context, Execution, ExecutionError, ExecutionTimeout, Logs, Result
from .exceptions import *  # noqa: F403
from .files import EntryInfo
from .sandbox import AsyncSandbox, SandboxInfo
from .sync import CommandHandle, Sandbox, Volume
from .volumes import AsyncVolume
from .sync import Template
from .templates import AsyncTemplate, TemplateBuildError, TemplateInfo

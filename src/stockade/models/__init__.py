"""The typed values every layer passes around: one set for the server, the engine and the SDK.

Requests are frozen and strict (an unknown field is an error, named in the message); results are
frozen and tolerant (an unknown field is ignored), so an older SDK keeps working against a newer
server. Aliases and defaults are resolved here, once, at the edge; every layer below passes the
same object down unchanged. This package imports pydantic and the standard library only.
"""

from .files import EntryInfo, FileEvent, MakeDirResult, SandboxPath, check_path
from .fork import MAX_FORK, ForkResult, ForkSpec
from .processes import WAITING_TAG, ProcessInfo, ProcessSelector, ProcessSpec, PtySize, Resize, Signal
from .sandboxes import (
    EgressEntry,
    EgressLog,
    Isolation,
    NetworkPolicy,
    Persistence,
    ResizeSpec,
    SandboxEnd,
    SandboxEvent,
    SandboxInfo,
    SandboxPage,
    SandboxSpec,
    SandboxStats,
    UsageHistory,
    UsageSample,
    VolumeMount,
)
from .secrets import CreateSecret, EnvName, SecretInfo, SecretName, SecretPage
from .templates import BuildLog, BuildStatus, TemplateInfo, TemplatePage
from .volumes import CreateVolume, VolumeInfo, VolumeName, VolumePage

__all__ = [
    "BuildLog",
    "BuildStatus",
    "CreateSecret",
    "CreateVolume",
    "EgressEntry",
    "EgressLog",
    "EntryInfo",
    "EnvName",
    "FileEvent",
    "Isolation",
    "ForkResult",
    "ForkSpec",
    "MAX_FORK",
    "MakeDirResult",
    "NetworkPolicy",
    "Persistence",
    "ProcessInfo",
    "ProcessSelector",
    "ProcessSpec",
    "PtySize",
    "Resize",
    "ResizeSpec",
    "SandboxEnd",
    "SandboxEvent",
    "SandboxInfo",
    "SandboxPage",
    "SandboxPath",
    "SandboxSpec",
    "SandboxStats",
    "SecretInfo",
    "SecretName",
    "SecretPage",
    "Signal",
    "TemplateInfo",
    "TemplatePage",
    "UsageHistory",
    "UsageSample",
    "VolumeInfo",
    "VolumeMount",
    "VolumeName",
    "VolumePage",
    "WAITING_TAG",
    "check_path",
]

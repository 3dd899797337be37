"""The container tier: runc with a user namespace, seccomp, dropped capabilities, cgroups."""

from __future__ import annotations

import os

from .ocidriver import OciDriver

#: Host uid of root inside every container-tier sandbox (uids 0-65535 map above it).
DEFAULT_UID_BASE = int(os.environ.get("STOCKADE_UID_BASE", "1000000000"))


class RuncDriver(OciDriver):
    """``isolation="container"``: a hardened container on the host kernel."""

    tier = "container"
    binary = "runc"
    uid_base = DEFAULT_UID_BASE

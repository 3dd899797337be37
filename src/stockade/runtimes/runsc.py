"""The gVisor tier: the same OCI bundle run by runsc, under gVisor's user-space kernel."""

from __future__ import annotations

from .ocidriver import OciDriver


class RunscDriver(OciDriver):
    """``isolation="gvisor"``: the application talks to the Sentry, not the host kernel."""

    tier = "gvisor"
    binary = "runsc"

    def global_flags(self) -> list[str]:
        # ptrace is the platform that works on every host (ENVIRONMENT.md: kvm hangs here);
        # host-uds=create lets the agent listen on a socket in its bind-mounted run directory;
        # oci-seccomp makes gVisor apply the bundle's seccomp profile too (defence in depth).
        return ["--root", str(self.runtime_root), "--platform=ptrace", "--network=none",
                "--host-uds=create", "--oci-seccomp"]

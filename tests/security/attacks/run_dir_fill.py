# attack: fill the host disk through the agent's socket directory (a host bind mount)
# users: root
# sandbox: fresh
# expect-microvm: blocked
import os

from _lib import ENV, verdict

budget = (int(ENV["STOCKADE_DISK_MB"]) + 32) << 20
written = 0
chunk = b"\0" * (1 << 20)
try:
    with open("/.stockade/run/fill", "wb") as f:
        while written < budget:
            written += f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    result = "wrote everything"
except OSError as exc:
    result = exc.strerror
finally:
    try:
        os.unlink("/.stockade/run/fill")
    except OSError:
        pass
mb = written >> 20
# Writing more than the sandbox's disk quota means the writes landed outside it.
outcome = "succeeded" if written >= budget else ("contained" if mb else "blocked")
verdict(outcome, {"written_mb": mb, "quota_mb": int(ENV["STOCKADE_DISK_MB"]), "result": result})

# attack: root plants a setuid-root copy of python; `user` runs it hoping to become root
# users: root
# expect-microvm: contained
import os
import shutil
import subprocess

from _lib import privileged

planted = "/usr/local/bin/rootpy"
shutil.copy("/usr/bin/python3", planted)
os.chmod(planted, 0o4755)
probe = "import os; print(os.geteuid())"
out = subprocess.run(
    ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", planted, "-c", probe],
    capture_output=True,
    text=True,
)
if out.returncode != 0:  # setpriv absent: drop privileges by hand

    def drop() -> None:
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)

    out = subprocess.run([planted, "-c", probe], capture_output=True, text=True, preexec_fn=drop)
euid = out.stdout.strip()
os.unlink(planted)
# No no_new_privs in a microVM's guest: there root (who planted it) is the sandbox's own root.
privileged({"euid 0 as user": "ok" if euid == "0" else f"{euid or '?'} {out.stderr[-200:]}"})

# attack: climb out of the bind mounts (agent code, agent socket dir) to their host parents
# users: user root
# expect-microvm: blocked
import os

from _lib import ENV, canary_paths, judge_reads

own = ENV["STOCKADE_SANDBOX_DIR"]
paths = []
for mount in ("/.stockade/agent", "/.stockade/run"):
    for canary in canary_paths():
        paths.append(mount + "/.." * 12 + canary)
    paths += [f"{mount}/../state.json", f"{mount}/../../state.json", f"{mount}/../agent.log"]
paths += [own + "/state.json", own + "/agent.log", own + "/bundle/config.json"]
with open("/proc/self/mountinfo") as f:
    print("mountinfo:", f.read()[:1500])
judge_reads(paths)

# attack: read the host's canary files and data directory at their host paths
# users: user root
# expect-microvm: blocked
from _lib import ENV, canary_paths, judge_reads

data = ENV["STOCKADE_HOST_DATA_DIR"]
judge_reads(
    canary_paths()
    + [f"{data}/engine.lock", f"{data}/daemon.log", f"{ENV['STOCKADE_SANDBOX_DIR']}/state.json"]
)

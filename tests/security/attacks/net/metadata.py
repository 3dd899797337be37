# attack: the cloud metadata address 169.254.169.254 (TCP 80 and the played service, UDP)
# users: root
from _lib import verdict
from _net import ENV, TCP_PORT, UDP_PORT, marker, opened, tcp, udp

metadata = ENV["NET_METADATA"]
results = {
    f"tcp {metadata}:80": tcp(metadata, 80),
    f"tcp {metadata}:{TCP_PORT}": tcp(metadata, TCP_PORT),
    f"udp {metadata}": udp(metadata, UDP_PORT, marker("udp")),
}
verdict("succeeded" if opened(results) else "blocked", results)

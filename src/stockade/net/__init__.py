"""Sandbox networking: namespaces, veths, nftables rules and a policy-enforcing resolver.

The privileged part of the engine's network, kept apart so it can be read in one sitting.
``engine -> net``; nothing here imports the engine or the runtimes. See docs/network.md.
"""

from .config import NetConfig
from .host import NetError
from .leaks import find_net_leaks
from .manager import Attachment, NetworkManager
from .policy import NetworkPolicy, PolicyError

__all__ = [
    "Attachment",
    "NetConfig",
    "NetError",
    "NetworkManager",
    "NetworkPolicy",
    "PolicyError",
    "find_net_leaks",
]

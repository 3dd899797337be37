"""The in-sandbox agent. Standard library only: it runs under any image's python3.

Start-up: the agent starts in every sandbox, and each module it imports costs file-system
round trips (under gVisor, through the Sentry and the gofer) and CPU. So its modules import at
start-up only what the first command needs (hello, then ``process.start``): ``typing`` only
for the type checker (``TYPE_CHECKING = False``, which mypy reads as true), and modules that
only some requests use inside the function that needs them, each with a comment. See
docs/performance.md; ``tests/unit/agent/test_agent_startup.py`` checks the list.
"""

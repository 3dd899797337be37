"""The in-sandbox agent. Standard library only: it runs under any image's python3."""

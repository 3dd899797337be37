"""Stockade on many machines: host actors on Ray, API replicas sharing PostgreSQL (docs/cluster.md).

Nothing here is imported in single-machine mode; ``ray`` is imported only by the commands that
take ``--cluster``.
"""

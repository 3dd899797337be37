"""The cluster's tables (docs/cluster.md): hosts, and each sandbox with its placement.

A cluster made before this migration created them itself (``create_all``): they are kept with
their rows, and the columns added since are added.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "cluster_hosts" not in tables:
        op.create_table(
            "cluster_hosts",
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("node_id", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(512), nullable=True),
            sa.Column("seen_at", sa.Float, nullable=False),
            sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
        )
    elif "draining" not in _columns("cluster_hosts"):
        with op.batch_alter_table("cluster_hosts") as batch:
            batch.add_column(sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()))
    if "cluster_sandboxes" not in tables:
        op.create_table(
            "cluster_sandboxes",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(128), nullable=False),
            sa.Column("placement", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(512), nullable=True),
            sa.Column("message", sa.String(512), nullable=True),
            sa.Column("info", sa.JSON, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        op.create_index("ix_cluster_sandboxes_host", "cluster_sandboxes", ["host"])
    elif "message" not in _columns("cluster_sandboxes"):
        with op.batch_alter_table("cluster_sandboxes") as batch:
            batch.add_column(sa.Column("message", sa.String(512), nullable=True))


def downgrade() -> None:
    op.drop_table("cluster_sandboxes")
    op.drop_table("cluster_hosts")

"""The cluster's tables come from the store's Alembic migrations (0004): a fresh database gets
exactly what ``cluster/state.py`` declares, a database of the previous schema (with or without
the tables an earlier cluster made itself) is upgraded keeping its rows, and the rows say what
became of a host's sandboxes when it died."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from stockade.cluster.state import LOST, MOVING, Base, ClusterState
from stockade.models import SandboxInfo
from stockade.server.store import Store
from stockade.server.store.store import MIGRATIONS


def _info(sandbox_id: str, state: str = "running", persistence: str = "ephemeral") -> SandboxInfo:
    now = time.time()
    return SandboxInfo(
        id=sandbox_id,
        isolation="container",
        template="base",
        state=state,
        persistence=persistence,
        cpu=1,
        memory_mb=512,
        disk_mb=1024,
        pids=256,
        created_at=now,
        expires_at=now + 60,
        timeout=60,
    )


def _at(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def _version(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as c:
        found = str(c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar())
    engine.dispose()
    return found


def test_a_fresh_database_gets_the_cluster_tables_from_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ClusterState(url).close()  # opening the state applies the store's migrations
    assert _version(url) == "0005"
    engine = sa.create_engine(url)
    with engine.connect() as c:
        context = MigrationContext.configure(
            c,
            opts={
                "compare_type": True,  # the store's own tables are not in the cluster's metadata
                "include_name": lambda name, kind, _parents: kind != "table"
                or str(name).startswith("cluster_"),
            },
        )
        assert compare_metadata(context, Base.metadata) == []
        assert {"cluster_hosts", "cluster_sandboxes"} <= set(sa.inspect(c).get_table_names())
    engine.dispose()


def test_the_previous_schema_is_upgraded_keeping_tenants_and_an_old_clusters_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _at(url, "0003")
    engine = sa.create_engine(url)
    # The tables as the previous cluster made them with create_all (no draining, no message).
    old = sa.MetaData()
    hosts = sa.Table(
        "cluster_hosts",
        old,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("node_id", sa.String(64)),
        sa.Column("state", sa.String(16)),
        sa.Column("reason", sa.String(512), nullable=True),
        sa.Column("seen_at", sa.Float),
    )
    boxes = sa.Table(
        "cluster_sandboxes",
        old,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(128), index=True),
        sa.Column("placement", sa.String(64)),
        sa.Column("state", sa.String(16)),
        sa.Column("reason", sa.String(512), nullable=True),
        sa.Column("info", sa.JSON),
        sa.Column("updated_at", sa.Float),
    )
    old.create_all(engine)
    info = _info("sb" + "1" * 18).model_dump(mode="json")
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO tenants (name, created_at) VALUES ('acme', 1)"))
        c.execute(hosts.insert().values(name="a", node_id="n1", state="alive", seen_at=1.0))
        c.execute(
            boxes.insert().values(
                id=info["id"], host="a", placement="sbp-1", state="running", info=info, updated_at=1.0
            )
        )
    engine.dispose()

    state = ClusterState(url)
    try:
        assert _version(url) == "0005"
        [host] = state.hosts()
        assert (host.name, host.node_id, host.draining) == ("a", "n1", False)
        row = state.sandbox(info["id"])
        assert row is not None and row.placement == "sbp-1" and row.message is None
        assert Store(url).tenant("acme") is not None
        # The new columns work: the host is drained, then dies: its sandbox is lost.
        assert state.set_draining("a", True) is not None and state.hosts()[0].draining
        state.host_down("a", "host_lost")
        lost = state.sandbox(info["id"])
        assert lost is not None and (lost.state, lost.reason) == (LOST, "host_lost")
        assert lost.message == "lost with its host a"
    finally:
        state.close()


def test_a_dead_hosts_sandboxes_say_whether_another_host_can_start_them(tmp_path: Path) -> None:
    state = ClusterState(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        state.host_seen("a", "n1")
        ids = {}
        for n, (persistence, st) in enumerate(
            (
                ("workspace", "stopped"),
                ("workspace", "running"),
                ("workspace", "archived"),
                ("ephemeral", "running"),
            )
        ):
            ids[(persistence, st)] = f"sb{n:018d}"
            state.add_sandbox(_info(f"sb{n:018d}", st, persistence), "a", f"sbp-{n}")
        state.host_down("a", "host_lost")
        rows = {key: state.sandbox(i) for key, i in ids.items()}
        assert all(r is not None and r.state == LOST for r in rows.values())
        stopped = rows[("workspace", "stopped")]
        assert (
            stopped is not None
            and stopped.movable
            and "start it to restart it on another" in str(stopped.sandbox().message)
        )
        running = rows[("workspace", "running")]
        assert running is not None and not running.movable
        assert "its disk is only on a" in str(running.sandbox().message)
        assert running.sandbox().reason == "host_lost"
        assert rows[("workspace", "archived")] is not None and rows[("workspace", "archived")].movable  # type: ignore[union-attr]
        # One replica at a time takes a lost workspace over; a failed move leaves it lost.
        claimed = state.claim_move(stopped.id)
        assert claimed is not None and claimed.state == MOVING
        assert state.claim_move(stopped.id) is None
        state.unclaim(stopped.id)
        again = state.sandbox(stopped.id)
        assert again is not None and again.state == LOST and "another host" in str(again.message)
    finally:
        state.close()

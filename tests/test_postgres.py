"""stackctl.postgres: a real throw-away PostgreSQL 15 on a free loopback port, reached with psycopg 3."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from stackctl.postgres import PostgresError, PostgresServer, find_pg_bindir, traversable_by
from stackctl.processes import port_is_free

pytestmark = pytest.mark.skipif(find_pg_bindir() is None, reason="PostgreSQL binaries not installed (make deps)")


def process_uid(pid: int) -> int:
    """Real uid of a running process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with PostgresServer(tmp_path_factory.mktemp("pg")) as pg:
        yield pg


def test_accepts_connections_on_loopback_and_stores_rows(server):
    assert server.url.startswith(f"postgresql://oncall:{server.password}@127.0.0.1:{server.port}/oncall")
    assert server.password not in server.display_url and "***" in server.display_url
    with psycopg.connect(server.url) as conn:
        conn.execute("CREATE TABLE leases (name text PRIMARY KEY, holder text NOT NULL)")
        conn.execute("INSERT INTO leases VALUES (%s, %s)", ("incident-1", "agent-1"))
        conn.commit()
        row = conn.execute(
            "SELECT current_database(), current_user, host(inet_server_addr()), current_setting('listen_addresses'),"
            " current_setting('server_version_num')::int / 10000 FROM leases"
        ).fetchone()
    assert row == ("oncall", "oncall", "127.0.0.1", "127.0.0.1", 15)
    with psycopg.connect(server.url) as other:  # a second connection sees the committed row
        assert other.execute("SELECT holder FROM leases WHERE name = 'incident-1'").fetchone() == ("agent-1",)
    assert server.start_seconds is not None and server.start_seconds > 0


def test_tcp_needs_the_password(server):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://oncall:wrong@127.0.0.1:{server.port}/oncall", connect_timeout=5)


def test_unix_socket_lives_in_the_run_folder(server):
    assert (server.socket_dir / f".s.PGSQL.{server.port}").is_socket()
    assert oct(server.socket_dir.stat().st_mode & 0o777) == "0o700"
    with psycopg.connect(host=str(server.socket_dir), port=server.port, dbname="oncall", user="oncall") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has to drop to the postgres user")
def test_runs_as_the_postgres_user_when_root(server):
    assert server.pid is not None
    assert process_uid(server.pid) == pwd.getpwnam("postgres").pw_uid
    assert server.data_dir.stat().st_uid == pwd.getpwnam("postgres").pw_uid


def test_stop_ends_the_server_by_pid_and_frees_the_port():
    # A run folder the postgres user can enter (mode 0755 all the way down): data stays in it.
    run_dir = Path(tempfile.mkdtemp(prefix="pg-run-"))
    run_dir.chmod(0o755)
    try:
        pg = PostgresServer(run_dir, password=None)  # trust on 127.0.0.1
        url = pg.start()
        assert url == f"postgresql://oncall@127.0.0.1:{pg.port}/oncall"
        assert pg.data_dir == run_dir.resolve() / "postgres" / "data"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pid, port = pg.pid, pg.port
        assert pid is not None and not port_is_free(port)
        pg.stop()
        assert pg.pid is None and port_is_free(port)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert (pg.data_dir / "PG_VERSION").exists(), "data in the run folder is kept for a post-mortem"
        assert "database system is shut down" in pg.log_file.read_text()
        pg.stop()  # idempotent
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback exists for root only")
def test_unreachable_run_folder_uses_a_temporary_data_folder_removed_at_stop(tmp_path):
    account = pwd.getpwnam("postgres")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert not traversable_by(private, account.pw_uid, {account.pw_gid})
    pg = PostgresServer(private)
    pg.start()
    try:
        assert not pg.base_dir.is_relative_to(private) and pg.data_dir.exists()
        assert (private / "logs" / "postgres.log").exists()
    finally:
        pg.stop()
    assert not pg.base_dir.exists()


def test_a_second_start_is_refused(server):
    with pytest.raises(PostgresError, match="already started"):
        server.start()

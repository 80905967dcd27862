"""A throw-away PostgreSQL server for one run: ``initdb`` into the run folder, ``postgres`` on 127.0.0.1.

The server runs in the foreground as a child process (its PID is ours to signal), listens on one free
loopback TCP port and on a unix socket in the run folder, and accepts password (SCRAM-SHA-256) or trust
authentication from 127.0.0.1 only. ``stop()`` ends it by PID with PostgreSQL's fast shutdown and waits
until the port is free.

initdb and postgres refuse to run as root. When we are root they run as the unprivileged ``postgres``
user (the Debian package creates it): the data folder is chowned to it and the child process drops to
its uid/gid with ``setgid``/``setgroups([])``/``setuid`` before exec (what ``runuser -u postgres --``
does, without a PAM session and with the server's own PID in our hands).

Protocol facts: PostgreSQL 15 manual, "Shutting Down the Server" (SIGINT = fast shutdown, SIGQUIT =
immediate shutdown), "The pg_hba.conf File", "initdb", "Connection Strings" (libpq URIs).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql

from stackctl.processes import free_port, port_is_free, wait_until

PG_VERSION = "15"
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SERVICE_USER = "postgres"
START_ATTEMPTS = 3  # a free port can be taken by another process before the server binds it


class PostgresError(RuntimeError):
    """PostgreSQL cannot start: binaries or the service user missing, initdb failed, or the server did not come up."""


def find_pg_bindir(version: str = PG_VERSION) -> Path | None:
    """Folder holding ``initdb`` and ``postgres``, or None.

    Looks at ``$PG_BINDIR``, Debian's ``/usr/lib/postgresql/<version>/bin`` (off PATH), the newest other
    ``/usr/lib/postgresql/*/bin``, then the folder of ``initdb`` on PATH (other distributions).
    """
    candidates = [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []
    candidates.append(DEBIAN_PG_ROOT / version / "bin")
    others = DEBIAN_PG_ROOT.glob("*/bin") if DEBIAN_PG_ROOT.is_dir() else []
    candidates += sorted(others, key=lambda path: _version_key(path.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """True when a process with ``uid``/``gids`` may enter every existing folder from ``/`` down to ``path``."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            break
        st = folder.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


@dataclass
class PostgresServer:
    """One throw-away PostgreSQL server.

    Args:
        run_dir: the run folder; data in ``run_dir/postgres/data``, unix socket in ``run_dir/postgres/socket``,
            log in ``run_dir/logs/postgres.log``. When we are root and the ``postgres`` user cannot enter
            ``run_dir`` (e.g. pytest's 0700 ``/tmp/pytest-of-root``), data and socket go to a private
            temporary folder instead, removed by ``stop()``.
        database: database created at start (owned by ``user``).
        user: the database superuser created by initdb.
        password: password of ``user`` (SCRAM-SHA-256 on 127.0.0.1); a random one by default.
            None means ``trust`` authentication on 127.0.0.1.
        port: TCP port on 127.0.0.1; 0 picks a free one (retried if taken before the server binds it).
        durable: False (throw-away) turns off fsync, synchronous_commit and full_page_writes for speed.

    Use as a context manager, or call ``start()`` and always ``stop()``.
    """

    run_dir: Path
    database: str = "oncall"
    user: str = "oncall"
    password: str | None = field(default_factory=lambda: secrets.token_hex(18), repr=False)
    port: int = 0
    durable: bool = False
    start_seconds: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.log_file = self.run_dir / "logs" / "postgres.log"
        self.base_dir = self.run_dir / "postgres"
        self._temporary_base = False
        self._proc: subprocess.Popen | None = None
        self._bindir: Path | None = None

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (PGDATA)."""
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Folder of the unix socket ``.s.PGSQL.<port>`` (mode 0700)."""
        return self.base_dir / "socket"

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def url(self) -> str:
        """libpq URI of the database: ``postgresql://user[:password]@127.0.0.1:PORT/database`` (contains the secret)."""
        return self._url(self.database, secret=True)

    @property
    def display_url(self) -> str:
        """``url`` with the password masked, for logs and the console."""
        return self._url(self.database, secret=False)

    def _url(self, database: str, secret: bool) -> str:
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + (quote(self.password, safe="") if secret else "***")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def start(self, timeout: float = 30.0, step: Callable[[str], None] = lambda message: None) -> str:
        """initdb, start the server, create ``database``; return its URL (``url``). Sets ``start_seconds``.

        Raises:
            PostgresError: binaries or the postgres user missing, initdb failed, or the server did not
                accept connections within ``timeout`` seconds (the message carries the log's tail).
        """
        if self._proc is not None:
            raise PostgresError("this PostgreSQL server was already started; use a new PostgresServer")
        started = time.monotonic()
        self._bindir = find_pg_bindir()
        if self._bindir is None:
            raise PostgresError(
                f"PostgreSQL {PG_VERSION} binaries (initdb, postgres) not found in {DEBIAN_PG_ROOT}/*/bin, $PG_BINDIR "
                "or PATH. Install them with `make deps` (Debian package postgresql) and try again."
            )
        try:
            self._prepare_dirs()
            self._initdb()
            self._serve(timeout)
            self._create_database()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        step(f"PostgreSQL up on 127.0.0.1:{self.port} ({self.start_seconds:.1f}s), database {self.database}")
        return self.url

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server by PID: SIGINT (fast shutdown), SIGQUIT after ``grace`` s, then SIGKILL; wait for the port.

        Idempotent. Removes the data folder only when it was a temporary one (see ``run_dir``).
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, grace), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait_s)
                    break
        if self.port and proc is not None:
            wait_until(lambda: port_is_free(self.port), timeout=10, interval=0.05, what=f"port {self.port} free")
        if self._temporary_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self._temporary_base = False

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------------------

    def _service_account(self) -> pwd.struct_passwd | None:
        """The account to run as: ``postgres`` when we are root, None (ourselves) otherwise."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError as exc:
            raise PostgresError(
                f"running as root, but there is no {SERVICE_USER!r} user to run PostgreSQL as "
                "(initdb and postgres refuse root). Install the Debian package postgresql (`make deps`) or run as "
                "an unprivileged user."
            ) from exc

    def _prepare_dirs(self) -> None:
        account = self._service_account()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if account is not None and not traversable_by(self.run_dir, account.pw_uid, {account.pw_gid}):
            self.base_dir = Path(tempfile.mkdtemp(prefix="stackctl-pg-"))
            self._temporary_base = True
            if not traversable_by(self.base_dir.parent, account.pw_uid, {account.pw_gid}):
                raise PostgresError(f"the {SERVICE_USER} user can enter neither {self.run_dir} nor {self.base_dir}")
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PostgresError(f"{self.data_dir} is not empty: a throw-away server needs a fresh run folder")
        for folder in (self.base_dir, self.data_dir, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            if account is not None:
                os.chown(folder, account.pw_uid, account.pw_gid)

    def _run_as_service(self, args: list[str], **kwargs: object) -> subprocess.Popen:
        """Popen ``args`` as the service account (when root), in the base folder, with a minimal environment."""
        account = self._service_account()
        ids: dict[str, object] = {}
        if account is not None:
            ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base_dir), "LC_ALL": "C"}
        # initdb/postgres from the PostgreSQL bin folder with arguments built here (no shell, no outside input)
        return subprocess.Popen(args, cwd=self.base_dir, env=env, stdin=subprocess.DEVNULL, **ids, **kwargs)  # type: ignore[call-overload]  # noqa: S603

    def _initdb(self) -> None:
        assert self._bindir is not None
        args = [str(self._bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "-E", "UTF8", "--no-locale"]
        args += ["--auth-local=trust", "--auth-host=" + ("trust" if self.password is None else "scram-sha-256")]
        if not self.durable:
            args.append("--no-sync")
        pwfile = self.base_dir / "initdb.pw"
        if self.password is not None:
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            account = self._service_account()
            if account is not None:
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            args.append(f"--pwfile={pwfile}")
        try:
            proc = self._run_as_service(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            output, _ = proc.communicate(timeout=60)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(output)
        if proc.returncode != 0:
            raise PostgresError(f"initdb failed (exit {proc.returncode}):\n{output.decode(errors='replace')[-2000:]}")
        self._write_hba()

    def _write_hba(self) -> None:
        """Only the unix socket (folder mode 0700) and 127.0.0.1 may connect; no replication, no other host."""
        method = "trust" if self.password is None else "scram-sha-256"
        (self.data_dir / "pg_hba.conf").write_text(
            "# stackctl: throw-away server, loopback only\n"
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            f"host    all       all   127.0.0.1/32  {method}\n"
        )

    def _server_args(self) -> list[str]:
        assert self._bindir is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": "100",
        }
        if not self.durable:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        args = [str(self._bindir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        return args

    def _serve(self, timeout: float) -> None:
        """Start the postmaster in the foreground and wait until it accepts connections; retry a taken port."""
        chosen = self.port
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = chosen or free_port()
            with open(self.log_file, "ab") as log:
                self._proc = self._run_as_service(self._server_args(), stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return
            port_taken = "could not bind" in self._log_tail() or "already in use" in self._log_tail()
            if chosen or not port_taken or attempt == START_ATTEMPTS:
                raise PostgresError(
                    f"PostgreSQL did not accept connections on 127.0.0.1:{self.port}; see {self.log_file}\n"
                    f"{self._log_tail()}"
                )

    def _wait_ready(self, timeout: float) -> bool:
        """True once a connection succeeds; False when the server exited first. Raises PostgresError on timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                with psycopg.connect(self._url("postgres", secret=True), connect_timeout=2):
                    return True
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.05)
        raise PostgresError(f"PostgreSQL not ready within {timeout:.0f}s: {last_error}; see {self.log_file}")

    def _create_database(self) -> None:
        with psycopg.connect(self._url("postgres", secret=True), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _log_tail(self, lines: int = 15) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

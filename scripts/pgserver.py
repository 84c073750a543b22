"""A throw-away PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package).

``PgServer`` runs ``initdb`` into a temporary folder and starts ``postgres`` on 127.0.0.1 at a free
port, with its unix socket in the same folder; :meth:`PgServer.stop` ends that one process by its pid
and removes the folder. PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` system user (which the Debian package creates). Nothing here is used by a party in
production: a bank points ``store.url`` at its own server.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, postgres) were not found; install Debian's postgresql package "
    "(`apt-get install postgresql`; scripts/test.sh does this when run as root)"
)


class PgServerError(RuntimeError):
    """The throw-away server could not be found or started."""


def find_bindir() -> Path:
    """The folder holding ``initdb`` and ``postgres`` (PATH first, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").exists() and (Path(cand) / "postgres").exists():
            return Path(cand)
    raise PgServerError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One temporary PostgreSQL server; use as a context manager."""

    def __init__(self, database: str = "fed", user: str = "fed") -> None:
        self.bindir = find_bindir()
        self.database, self.user = database, user
        self.root = Path(tempfile.mkdtemp(prefix="fedcredit-pg-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PgServerError("running as root and there is no 'postgres' user; " + INSTALL_HINT) from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._run_as = "postgres"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3) of the server's database."""
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create another database on this server; returns its URL."""
        self._run(str(self.bindir / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U", self.user, name)
        return self.url_of(name)

    def _run(self, *args: str) -> None:
        r = subprocess.run(list(args), capture_output=True, user=self._run_as, check=False, cwd=self.root)
        if r.returncode != 0:
            raise PgServerError(f"{' '.join(args)} failed: {r.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> PgServer:
        data = self.root / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--no-sync")
        log = open(self.root / "server.log", "wb")
        self._log = log
        self._proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_wal_size=4GB", "-c", "shared_buffers=256MB",
            ],
            stdout=log, stderr=subprocess.STDOUT, user=self._run_as, cwd=self.root,
        )
        try:
            self._wait_ready()
            self.create_database(self.database)
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll until the server accepts connections (or its process ends: then report its log)."""
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise PgServerError(f"postgres exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                r = subprocess.run(
                    [str(self.bindir / "pg_isready"), "-h", str(self.root), "-p", str(self.port)],
                    capture_output=True, check=False,
                )
                if r.returncode == 0:
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown of our own server process, by its pid; then remove the folder."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fast shutdown: ends open connections, then exits
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

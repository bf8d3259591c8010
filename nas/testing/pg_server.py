"""A throwaway local PostgreSQL server (tests and benchmarks of distributed search).

Uses Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``),
installing the package with apt-get when asked and able to. The cluster lives in
a fresh temporary directory, listens on 127.0.0.1 on a free port with trust
authentication, and is deleted by :meth:`PostgresServer.stop`. PostgreSQL refuses
to run as root, so under root every server command runs as the ``postgres``
system user (created by the Debian package).

    with PostgresServer() as pg:
        url = pg.create_database("nas")   # postgresql://postgres@127.0.0.1:PORT/nas
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (and they could not be installed)."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb``, else the directory of an ``initdb`` on
    PATH."""
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if dirs:
        return Path(dirs[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def ensure_installed(install: bool = True) -> Path:
    """The server's bin directory; with ``install``, ``apt-get install postgresql`` first when it is
    missing."""
    bin_dir = find_bin_dir()
    if bin_dir is None and install and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            subprocess.run(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False
            )
        bin_dir = find_bin_dir()
    if bin_dir is None:
        how = (
            "apt-get install postgresql failed"
            if install and os.geteuid() == 0 and shutil.which("apt-get")
            else "install the Debian package postgresql (as root: apt-get install postgresql)"
        )
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries (initdb) in /usr/lib/postgresql/*/bin or on PATH: {how}"
        )
    return bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory; ``start``/``stop`` or use as a context
    manager."""

    def __init__(self, install: bool = True, port: int | None = None):
        self.install, self.port = install, port
        self.root: Path | None = None
        self.bin_dir: Path | None = None
        self._user: str | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} failed ({proc.returncode}):"
                f" {(proc.stderr or proc.stdout).strip()[-1500:]}\n{tail}".strip()
            )
        return proc

    def start(self) -> "PostgresServer":
        self.bin_dir = ensure_installed(self.install)
        self.root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the postgres system user
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' system user to run the server as"
                ) from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._user = "postgres"
        self.port = self.port or free_port()
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c"
            " synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            opts,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    @property
    def version(self) -> str:
        """The server's major version (the name of its ``/usr/lib/postgresql/<version>`` directory)."""
        return self.bin_dir.parent.name if self.bin_dir is not None else "unknown"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by the ``postgres`` role); returns its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop"
                )  # the cluster is deleted next
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A throw-away PostgreSQL server for tests and benchmarks, from the distribution's `initdb` and `pg_ctl`.

One server per test process (a session fixture), in a temporary folder, on a free loopback port and
a socket folder of its own, with trust authentication for loopback only; every test that wants a
database gets a new one (``CREATE DATABASE``), so tests never see each other's rows. PostgreSQL
refuses to run as root: as root (CI), the folder is given to the ``postgres`` system user and the
server runs as that user. ``stop`` shuts it down (fast, then immediate) and removes the folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where the distribution keeps the server's programs (Debian: one folder per major version).
_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin")
START_TIMEOUT_S = 30


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest version first), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    for pattern in _BIN_GLOBS:
        for found in sorted(glob.glob(pattern), reverse=True):
            if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists():
                return Path(found)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server on loopback, for the length of a test session."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="fb-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.port = 0
        self.user = "fedbroker"
        self._as: pwd.struct_passwd | None = None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # The distribution's own programs, fixed arguments; as root, as the postgres user (the server refuses root).
        if self._as is None:
            return subprocess.run(
                list(args), capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
            )
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            user=self._as.pw_uid,
            group=self._as.pw_gid,
            extra_groups=[],
        )

    def start(self) -> None:
        """initdb, then start on a free port; raises RuntimeError with the server's own words."""
        self.sockets.mkdir()
        if os.geteuid() == 0:
            self._as = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, self._as.pw_uid, self._as.pw_gid)
        init = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        for _ in range(5):  # a port taken between probing and binding: try another
            self.port = _free_port()
            started = self._pg_start()
            if started.returncode == 0:
                return
            log = (self.root / "server.log").read_text(errors="replace")
            if "could not bind" not in log and "Address already in use" not in log:
                raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log[-2000:]}")
        raise RuntimeError("pg_ctl start failed: no free port after 5 tries")

    def _pg_start(self) -> subprocess.CompletedProcess[str]:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        return self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
            timeout=START_TIMEOUT_S + 10,
        )

    def halt(self) -> None:
        """Stop the server, keeping its data (a database outage, for the tests that need one)."""
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")

    def resume(self) -> None:
        """Start the halted server again, on the same port."""
        started = self._pg_start()
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}")

    def dsn(self, dbname: str = "postgres") -> str:
        """The libpq connection string to one database of this server."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def new_database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server (immediate: its data goes with the folder) and remove its folder."""
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            if self.data.exists():
                for _ in range(3):
                    done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                    if done.returncode == 0 or "Is server running?" in done.stderr:
                        break
                    time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["PostgresServer", "find_bindir"]

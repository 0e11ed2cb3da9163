"""A throw-away PostgreSQL cluster for the tests: Debian's `postgresql` package, initdb
into a temporary directory, on a free loopback port, stopped at the end.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to
`nobody` (its directory is made for it, outside pytest's root-only tmp dirs) and every
server command runs through setpriv. As any other user it runs as that user.

Without the server binaries or the driver (psycopg, from the test extra) the tests that
need them skip, saying how to install them, or fail under --require-tools (CI).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from support import MissingTool, free_port, require_tool

INSTALL = ("the PostgreSQL tests start their own server from Debian's package: "
           "`apt-get install -y postgresql` (bash .ci/run does this)")
SUPERUSER = "postgres"
# A role that logs in with a password, for the tests that prove it never shows.
PASSWORD_USER, PASSWORD = "bridge_pw", "s3cret-Pa55word-never-shown"
_SETTINGS = {
    # Durability is not what the tests measure, and fsync makes them slow; what a
    # commit means to other connections is unchanged.
    "fsync": "off", "full_page_writes": "off", "synchronous_commit": "on",
    "max_connections": "300", "shared_buffers": "64MB", "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning", "log_line_prefix": "'%m [%p] '",
}


def bin_dir() -> Path:
    """Debian's versioned server directory (the newest installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise MissingTool(f"PostgreSQL's initdb is not installed: {INSTALL}")
    return Path(found[-1]).parent


def require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise MissingTool("psycopg and psycopg_pool are not installed: pip install -e '.[test]'") from None


class Cluster:
    """One server: `start()`, `stop()`, `restart()`, `dsn()`, and a database per use."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """`settings` override the tests' postgresql.conf lines (the benchmarks turn fsync
        back on: there, what a durable commit costs is the point)."""
        require_driver()
        self.bin = bin_dir()
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            setpriv = require_tool("setpriv", "apt-get install util-linux")
            self.as_user = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--"]
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in {**_SETTINGS, **(settings or {}), "port": str(self.port),
                                                            "unix_socket_directories": f"'{self.root}'"}.items()))
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\nhost all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n")
        self.start()
        self.sql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                                timeout=120, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                               f"--- server log ---\n{self.log()}")
        return result

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-10_000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-m", "fast", "-w", "restart")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database (for a test that runs a whole service on it)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        self.sql(f"GRANT ALL ON DATABASE {name} TO {PASSWORD_USER}")
        return name


def new_schema() -> str:
    """A fresh schema name: per test, in one database, cheaper than a database each."""
    return f"t_{uuid.uuid4().hex[:16]}"

"""Bridge replicas sharing one PostgreSQL database, as the chart's pods do: each a
`feishu-alert-bridge serve` under gunicorn on a port of its own, all configured with the
same `storage.postgres` (the session's throw-away server, tests/support/postgres.py).

The DSN reaches the config through the environment, without its password, which comes
from `password_file` as the chart mounts it: so a password in any replica's log shows
as a leak (`Replicas.stop_all`).
"""

from __future__ import annotations

from pathlib import Path

from procs import BridgeProcess

from .postgres import PASSWORD, PASSWORD_USER, Cluster

DSN_ENV = "BRIDGE_TEST_DSN"


def postgres_storage(tmp_path: Path) -> dict:
    """The config's `storage` section; the DSN comes from Replicas' environment."""
    (tmp_path / "pg-password").write_text(PASSWORD + "\n")
    return {"postgres": {"dsn": "${" + DSN_ENV + "}", "password_file": "pg-password", "pool_size": 4}}


class Replicas:
    """Starts replicas on one database, and stops them all at the end."""

    def __init__(self, tmp_path: Path, cluster: Cluster, database: str):
        self.tmp_path = tmp_path
        self.env = {DSN_ENV: cluster.dsn(database, user=PASSWORD_USER)}
        self.started: list[BridgeProcess] = []

    def start(self, config: Path, env: dict[str, str] | None = None, *, workers: int = 2) -> BridgeProcess:
        replica = BridgeProcess(config, self.tmp_path / f"replica-{len(self.started) + 1}.log", workers=workers,
                                env={**self.env, **(env or {})})
        self.started.append(replica)
        return replica

    def again(self, replica: BridgeProcess) -> BridgeProcess:
        """`replica`, stopped, started anew on its port (its log goes on in the same file)."""
        fresh = replica.again()
        self.started.append(fresh)
        return fresh

    def stop_all(self) -> None:
        for replica in self.started:
            replica.stop()
        for replica in self.started:
            assert PASSWORD not in replica.log(), f"the database password is in {replica.log_path.name}"

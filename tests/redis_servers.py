"""
Real Redis servers for the scale-out tests (issue 13): a primary, its replica and
three Sentinels watching them, each a process of its own on a free loopback port,
with its files (Sentinel rewrites its config file) in a temporary directory. Every
process is a ChildProcess, so it always stops.

    with SentinelSet(tmp_path) as redis:
        redis.url            # REDIS_URL for tokenserver: redis+sentinel://…/mymaster/0
        redis.primary.kill() # SIGKILL the primary; the Sentinels promote the replica
        redis.primary_port() # where the Sentinels say the primary is now
"""

import shutil
from contextlib import ExitStack
from pathlib import Path

import redis

from tests.helpers import ChildProcess, free_port, wait_until

SERVICE = "mymaster"
#: The Sentinels' timings, short so a test sees a failover in seconds: the primary
#: is taken for down after DOWN_AFTER_MS without an answer; a failover that has not
#: finished within FAILOVER_TIMEOUT_MS is tried again.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def redis_available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-sentinel"))


def _ping(port) -> bool:
    """Whether a Redis server (or Sentinel) on `port` answers."""
    try:
        return redis.Redis("127.0.0.1", port, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


class RedisServer(ChildProcess):
    """One redis-server, no persistence, optionally a replica of `replica_of` (a port)."""

    def __init__(self, directory: Path, *, replica_of: int | None = None):
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", self.port, "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", directory]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", replica_of]
        super().__init__(
            args, ready=lambda: _ping(self.port), log=directory / "redis.log", start_timeout=15
        )

    def client(self):
        return redis.Redis("127.0.0.1", self.port, socket_timeout=2, socket_connect_timeout=2)


class Sentinel(ChildProcess):
    """One redis-sentinel watching `primary_port` under SERVICE (quorum 2 of 3)."""

    def __init__(self, directory: Path, primary_port: int):
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        super().__init__(
            ["redis-sentinel", config],
            ready=lambda: _ping(self.port),
            log=directory / "sentinel.log",
            start_timeout=15,
        )

    def client(self):
        return redis.Redis("127.0.0.1", self.port, socket_timeout=1, socket_connect_timeout=1)

    def knows_everyone(self, sentinels: int, replicas: int) -> bool:
        """True once it has found the other Sentinels and the replicas (via the primary)."""
        try:
            state = self.client().sentinel_masters()[SERVICE]
            return (
                int(state["num-other-sentinels"]) >= sentinels
                and int(state["num-slaves"]) >= replicas
            )
        except (redis.RedisError, KeyError):
            return False


class SentinelSet:
    """A primary, one replica and three Sentinels, started and stopped together."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._stack = ExitStack()
        self.primary = self.replica = None
        self.sentinels = []

    def __enter__(self):
        try:
            self.primary = self._stack.enter_context(RedisServer(self.directory / "primary"))
            self.replica = self._stack.enter_context(
                RedisServer(self.directory / "replica", replica_of=self.primary.port)
            )
            wait_until(self._replica_in_sync, 15, message="the replica synced")
            self.sentinels = [
                self._stack.enter_context(
                    Sentinel(self.directory / f"sentinel{number}", self.primary.port)
                )
                for number in (1, 2, 3)
            ]
            # Sentinels find each other and the replica through the primary (hello
            # messages every 2 s): a failover needs them to.
            wait_until(
                lambda: all(s.knows_everyone(2, 1) for s in self.sentinels),
                30,
                interval=0.1,
                message="the Sentinels found each other and the replica",
            )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self._stack.close()

    def _replica_in_sync(self):
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    @property
    def url(self) -> str:
        where = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{where}/{SERVICE}/0"

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the Sentinels report it (None if no majority)."""
        seen = []
        for sentinel in self.sentinels:
            try:
                seen.append(int(sentinel.client().sentinel_masters()[SERVICE]["port"]))
            except (redis.RedisError, KeyError):
                continue
        for port in set(seen):
            if seen.count(port) >= 2:
                return port
        return None

"""Real Redis servers on 127.0.0.1 for the tests: one server, a 3-node cluster, a Sentinel.

Each runs ``redis-server`` without persistence from a temporary directory. A test
that needs one is skipped when redis-server or the redis package is missing (and
fails under CI, where both must be there).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
_CLUSTER_SLOTS = 16384


def redis_server_executable() -> str:
    """The redis-server to run, or a skip (a failure under CI) when it cannot run."""
    executable = shutil.which("redis-server")
    try:
        import redis  # noqa: F401, PLC0415 - the optional dependency
    except ImportError:
        executable = None
    if executable is None:
        message = "redis-server or the redis package is missing (scripts/bootstrap installs both)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    import redis  # noqa: PLC0415 - the optional dependency

    for _ in range(400):  # 10 s at most
        if process.poll() is not None:
            break
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        time.sleep(0.025)
    raise RuntimeError(f"{what} did not start")


class RedisServer:
    """A real redis-server on a free 127.0.0.1 port, without persistence."""

    def __init__(self, *args: str) -> None:
        import redis  # noqa: PLC0415 - the optional dependency

        executable = redis_server_executable()
        for _ in range(5):  # another process may grab the free port first
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            command = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            self.process = subprocess.Popen(
                [*command, *_NO_PERSISTENCE, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            try:
                _wait_until(self.client.ping, "redis-server", self.process)
            except RuntimeError:
                self.stop()
            else:
                return
        pytest.fail("redis-server did not start")

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class RedisCluster:
    """Three redis-server nodes in cluster mode, each the primary of a third of the slots."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="chaveiro-redis-cluster-"))
        self.nodes: list[RedisServer] = []
        self.bus_ports: list[int] = []
        try:
            for index in range(3):
                config = self.directory / f"nodes-{index}.conf"
                self.bus_ports.append(free_port())
                self.nodes.append(
                    RedisServer(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(config),
                        "--cluster-port",
                        str(self.bus_ports[-1]),
                    )
                )
            self._join()
        except BaseException:
            self.stop()
            raise
        self.url = self.nodes[0].url
        """The URL of one node: what a user would write."""

    def _join(self) -> None:
        share = _CLUSTER_SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = _CLUSTER_SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
            node.client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            meet = ("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            self.nodes[0].client.execute_command(*meet)

        def ready() -> bool:
            for node in self.nodes:
                info = node.client.execute_command("CLUSTER", "INFO")
                info = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
            return True

        _wait_until(ready, "the Redis cluster", self.nodes[0].process)

    def flush(self) -> None:
        for node in self.nodes:
            node.client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisSentinel:
    """A redis-server master watched by one Sentinel, which names it ``mymaster``."""

    def __init__(self) -> None:
        import redis  # noqa: PLC0415 - the optional dependency

        self.directory = Path(tempfile.mkdtemp(prefix="chaveiro-redis-sentinel-"))
        self.master = RedisServer()
        try:
            self.port = free_port()
            config = self.directory / "sentinel.conf"
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            )
            self.process = subprocess.Popen(
                [redis_server_executable(), str(config), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
            _wait_until(
                lambda: bool(
                    self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
                ),
                "redis-server --sentinel",
                self.process,
            )
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/mymaster/0"

    def stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(10)
        self.master.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

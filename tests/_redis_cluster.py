"""A real Redis Cluster for tests: six ``redis-server`` processes in cluster mode on
127.0.0.1 (three primaries, one replica each), joined with ``redis-cli --cluster create``.

The session fixture ``redis_cluster`` yields one ``LocalCluster`` shared by the whole
session. A test that kills a node starts its own (``with LocalCluster() as cluster:``) so
the shared one stays whole:

    primary = cluster.primary_for("some key")
    cluster.kill(primary)                       # SIGKILL, as a crash
    promoted = cluster.wait_for_failover(primary)
    cluster.restart(primary)                    # back, as the replica of ``promoted``

Every question to a node goes through ``redis-cli``, so this module does not depend on
the redis-py version under test (``benchmarks/cluster_race.py`` runs it with several).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._redis import REDIS_SERVER
from ._servers import START_TIMEOUT, free_port

__all__ = ["ClusterNode", "LocalCluster", "redis_cluster"]

REDIS_CLI = "redis-cli"
SLOTS = 16384
#: how long a replica may take to be promoted after its primary died
FAILOVER_TIMEOUT = 30.0
#: milliseconds without an answer before a node is marked failing (Redis' default is
#: 15000; a short one keeps a failover near three seconds, a long enough one keeps two
#: busy cores from failing a node that is only slow)
NODE_TIMEOUT_MS = 2000


@dataclass
class ClusterNode:
    """One ``redis-server`` of the cluster; ``process`` is None once it was killed."""

    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``, as one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str  # "-" for a primary
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags and not self.flags & {"fail", "fail?"}

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, no persistence; ``start``
    returns once every node says ``cluster_state:ok`` with all slots served and every
    replica is in sync."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: list[ClusterNode] = []
        self._directory: Path | None = None

    @property
    def url(self) -> str:
        """A startup node's URL for ``RedisCluster.from_url``: the first node alive."""
        return self.live_nodes()[0].url

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def start(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        try:
            for _ in range(self.primaries * (1 + self.replicas)):
                node = ClusterNode(free_port(), free_port(), self._directory / str(len(self.nodes)))
                node.directory.mkdir()
                self.nodes.append(node)
                self._launch(node)
            for node in self.nodes:
                _poll(lambda node=node: _cli(node, "PING") == "PONG", f"{node.address} to start")
            create = ["--cluster", "create", *(node.address for node in self.nodes)]
            create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            joined = subprocess.run(
                [_executable(REDIS_CLI), *create], capture_output=True, timeout=START_TIMEOUT
            )
            if joined.returncode != 0:
                said = (joined.stdout + joined.stderr).decode(errors="replace")
                raise RuntimeError(f"redis-cli --cluster create failed:\n{said}")
            _poll(self.healthy, "the cluster to be ok")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            _end(node, signal.SIGTERM)
        self.nodes = []
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    # -- what the failover tests need ------------------------------------------------
    def slot(self, key: str | bytes) -> int:
        """The hash slot of ``key`` (honouring ``{hash tags}``), as the cluster says."""
        text = key.decode() if isinstance(key, bytes) else key
        return int(_cli(self.live_nodes()[0], "CLUSTER", "KEYSLOT", text))

    def primary_for(self, key: str | bytes) -> ClusterNode:
        """The node that is primary for ``key``'s slot now."""
        slot = self.slot(key)
        for view in self.views():
            if view.is_primary and view.serves(slot):
                return self._node(view.port)
        raise RuntimeError(f"no primary serves slot {slot}")

    def primaries_now(self) -> list[ClusterNode]:
        return [self._node(view.port) for view in self.views() if view.is_primary]

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        views = self.views()
        primary_id = next(view.node_id for view in views if view.port == primary.port)
        return [self._node(view.port) for view in views if view.primary_id == primary_id]

    def replicated(self, primary: ClusterNode, timeout_ms: int = 10_000) -> bool:
        """Whether every replica of ``primary`` has acknowledged all it wrote so far
        (``WAIT``), within ``timeout_ms``."""
        wanted = len(self.replicas_of(primary))
        return int(_cli(primary, "WAIT", str(wanted), str(timeout_ms)) or 0) >= wanted

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node``: a crash, no goodbye to the cluster."""
        _end(node, signal.SIGKILL)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed ``node`` again on its port with its ``nodes.conf``: it rejoins
        (a former primary as a replica of its heir); returns once the cluster is ok."""
        self._launch(node)
        _poll(lambda: _cli(node, "PING") == "PONG", f"{node.address} to start")
        _poll(lambda: self.healthy() and not self._failing(), f"{node.address} to rejoin")

    def wait_for_failover(self, dead: ClusterNode) -> ClusterNode:
        """Wait until a replica of the ``dead`` primary has taken over its slots and the
        cluster is ok again on every node alive; returns the new primary."""
        before = _parse_nodes(_cli(self.live_nodes()[0], "CLUSTER", "NODES"))
        dead_id = next(view.node_id for view in before if view.port == dead.port)
        heirs = {view.port for view in before if view.primary_id == dead_id}
        promoted: list[ClusterNode] = []

        def taken_over() -> bool:
            if not self.healthy():
                return False
            for port in heirs:
                node = self._node(port)
                if node.alive and _cli(node, "ROLE").splitlines()[:1] == ["master"]:
                    promoted[:] = [node]
                    return True
            return False

        _poll(taken_over, f"a replica of {dead.address} to take over", FAILOVER_TIMEOUT)
        return promoted[0]

    def views(self) -> list[NodeView]:
        """``CLUSTER NODES`` as the first node alive sees it."""
        return _parse_nodes(_cli(self.live_nodes()[0], "CLUSTER", "NODES"))

    def healthy(self) -> bool:
        """Every node alive says ``cluster_state:ok`` with every slot served by a live
        primary, and every live replica's link to its primary is up."""
        for node in self.live_nodes():
            info = dict(
                line.split(":", 1)
                for line in _cli(node, "CLUSTER", "INFO").splitlines()
                if ":" in line
            )
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
            role = _cli(node, "ROLE").splitlines()
            if role[:1] == ["slave"] and "connected" not in role:
                return False
        return True

    def _failing(self) -> bool:
        return any(view.flags & {"fail", "fail?"} for view in self.views())

    def _launch(self, node: ClusterNode) -> None:
        command = [_executable(REDIS_SERVER), "--port", str(node.port), "--bind", "127.0.0.1"]
        command += ["--cluster-enabled", "yes", "--cluster-port", str(node.bus_port)]
        command += ["--cluster-config-file", "nodes.conf", "--dir", str(node.directory)]
        command += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        # A replica syncs at once, through an RDB file: with redis-server 7.0's diskless
        # sync, a write landing as a replica's first sync ended sometimes left it stuck
        # at offset 0 for good (it acknowledged nothing after), so a failover lost data
        # the test had written long before.
        command += ["--repl-diskless-sync", "no", "--repl-diskless-sync-delay", "0"]
        command += ["--appendonly", "no", "--save", "", "--daemonize", "no"]
        command += ["--logfile", str(node.directory / "redis.log")]
        node.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH: apt-get install redis-server")
    return found


def _cli(node: ClusterNode, *command: str) -> str:
    """``command``'s answer from ``node`` as text ("" when it cannot be reached)."""
    if not node.alive:
        return ""
    done = subprocess.run(
        [_executable(REDIS_CLI), "-h", "127.0.0.1", "-p", str(node.port), *command],
        capture_output=True,
        timeout=10,
    )
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else ""


def _parse_nodes(text: str) -> list[NodeView]:
    views = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots = []
        for part in fields[8:]:
            if part.startswith("["):  # a slot being migrated
                continue
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        address = fields[1].partition("@")[0]
        views.append(
            NodeView(
                node_id=fields[0],
                port=int(address.rpartition(":")[2]),
                flags=frozenset(fields[2].split(",")),
                primary_id=fields[3],
                slots=tuple(slots),
            )
        )
    return views


def _end(node: ClusterNode, how: signal.Signals) -> None:
    process, node.process = node.process, None
    if process is None:
        return
    if process.poll() is None:
        os.kill(process.pid, how)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
        process.kill()
        process.wait()


def _poll(ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``ready`` until it holds; raise when ``timeout`` passes first.

    Readiness only, as ``_servers.wait_until_serving``: a cluster forming or failing over
    has no event to wait on from outside.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster of six nodes shared by the whole session (fails, never skips,
    without ``redis-server`` on PATH). Do not kill its nodes: start your own."""
    with LocalCluster() as cluster:
        yield cluster

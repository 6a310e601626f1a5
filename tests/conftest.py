"""Test fixtures: a real server, never a mock.

Order: ``STREAMJOBS_TEST_REDIS_URL`` if set; a testcontainers Valkey where a Docker
engine answers; else a private server from the local binary (streamjobs.embedded). Tests
are isolated by random type names (each its own hash tag), never by FLUSHALL.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest

from streamjobs import Producer
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.embedded import EmbeddedServer
from tests import servers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from redis.asyncio import Redis


def _docker_engine_answers() -> bool:
    if not os.path.exists("/var/run/docker.sock") and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("STREAMJOBS_TEST_REDIS_URL")
    if url:
        yield url
        return
    with ExitStack() as stack:
        if _docker_engine_answers():
            from testcontainers.redis import RedisContainer

            c = stack.enter_context(RedisContainer("valkey/valkey:8.1"))
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
            return
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sj-test-"))
        server = stack.enter_context(EmbeddedServer(tmp, port=0, appendonly=False))
        yield server.url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def type_name() -> str:
    """A fresh job type: every key of the test lives under its own hash tag."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url)


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[Redis]:
    client = client_from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    async with Producer(redis_url) as p:
        yield p


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses a test starts; killed and reaped when it ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


# ---- other topologies: started only by the tests that ask for them ---------------------
# Mark those tests ``@pytest.mark.xdist_group("topologies")`` so one xdist worker owns
# each session fixture (a session fixture is per worker process).


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 6-node cluster (3 primaries, 3 replicas); yields its ``redis+cluster://`` URL."""
    with servers.cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c.url


@pytest.fixture(scope="session")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Sentinel]:
    """A primary, a replica and one sentinel; ``.url`` is the ``redis+sentinel://`` URL."""
    with servers.sentinel(tmp_path_factory.mktemp("sentinel")) as s:
        yield s


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.Certs, int]]:
    """(certificates, port) of a TLS front requiring client certificates, before a plain
    server of its own."""
    base = tmp_path_factory.mktemp("tls")
    certs = servers.make_certs(base)
    with EmbeddedServer(base / "server", port=0, appendonly=False) as server, \
            servers.TlsProxy(certs, server.port) as proxy:
        yield certs, proxy.port

"""The HTTP API against a real server: every route, its errors, auth and limits."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from fastapi import WebSocket
from redis._parsers.resp3 import _RESP3Parser
from redis.exceptions import OutOfMemoryError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamjobs import Job, Registry, Settings, Worker
from streamjobs.api import create_app
from streamjobs.api.errors import UNMAPPED, answer_for
from streamjobs.api.server import API_LIMIT_CONCURRENCY, server_config
from streamjobs.connection import client_from_url
from streamjobs.embedded import EmbeddedServer, free_port
from streamjobs.keys import TypeKeys
from tests.helpers import FAST, running, serving, wait_equal

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(redis_url: str) -> AsyncIterator[MakeClient]:
    """An API client for the test server; the app's lifespan runs around the test."""
    async with AsyncExitStack() as stack:

        async def make(redis_url_override: str | None = None,
                       **overrides: Any) -> httpx.AsyncClient:
            url = redis_url_override or redis_url
            settings = Settings(redis_url=url, **overrides)
            app = create_app(url, settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app)
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://api")
            )

        yield make


@pytest.fixture
async def client(make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client()


async def _state(client: httpx.AsyncClient, type_name: str, job_id: str) -> str | None:
    r = await client.get(f"/jobs/{type_name}/{quote(job_id, safe='')}")
    return r.json()["state"] if r.status_code == 200 else None


async def wait_state(client: httpx.AsyncClient, type_name: str, job_id: str, want: str) -> None:
    await wait_equal(lambda: _state(client, type_name, job_id), want)


# ---- enqueue ------------------------------------------------------------------------


async def test_enqueue_then_status(client: httpx.AsyncClient, type_name: str) -> None:
    r = await client.post(f"/jobs/{type_name}", json={"payload": {"n": 1},
                                                       "headers": {"traceparent": "t1"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "waiting" and body["id"]
    r = await client.get(f"/jobs/{type_name}/{body['id']}")
    assert r.status_code == 200
    st = r.json()
    assert st["state"] == "waiting" and st["payload"] == {"n": 1}
    assert st["headers"] == {"traceparent": "t1"} and st["attempts"] == 0


async def test_enqueue_plain_curl_body(client: httpx.AsyncClient, type_name: str) -> None:
    """`curl -d` sends a form Content-Type; the body is still read as JSON."""
    r = await client.post(f"/jobs/{type_name}", content=b'{"payload":{"n":1}}',
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201, r.text


async def test_duplicate_id_is_409_with_existing_state(
    client: httpx.AsyncClient, type_name: str
) -> None:
    first = await client.post(f"/jobs/{type_name}", json={"payload": 1, "id": "order-1",
                                                           "delay": 60})
    assert first.status_code == 201 and first.json() == {"id": "order-1", "state": "delayed",
                                                      "deduplicated": False}
    again = await client.post(f"/jobs/{type_name}", json={"payload": 2, "id": "order-1"})
    assert again.status_code == 409
    body = again.json()
    assert body["id"] == "order-1" and body["state"] == "delayed" and "order-1" in body["error"]


async def test_run_at_iso_and_epoch(client: httpx.AsyncClient, type_name: str) -> None:
    r = await client.post(f"/jobs/{type_name}",
                          json={"payload": 1, "run_at": "2999-01-01T00:00:00"})
    assert r.json()["state"] == "delayed"
    st = (await client.get(f"/jobs/{type_name}/{r.json()['id']}")).json()
    assert st["due_at"] == 32472144000000  # naive datetimes are UTC
    r = await client.post(f"/jobs/{type_name}", json={"payload": 1, "run_at": 1.0})
    assert r.json()["state"] == "waiting"  # in the past: runs now


async def test_bulk_keeps_order_and_flags_duplicates(
    client: httpx.AsyncClient, type_name: str
) -> None:
    await client.post(f"/jobs/{type_name}", json={"payload": 0, "id": "b"})
    jobs = [{"payload": 1, "id": "a"}, {"payload": 2, "id": "b"}, {"payload": 3},
            {"payload": 4, "delay": 30}]
    r = await client.post(f"/jobs/{type_name}/bulk", json={"jobs": jobs})
    assert r.status_code == 201, r.text
    out = r.json()["jobs"]
    assert [j["duplicate"] for j in out] == [False, True, False, False]
    assert [j["state"] for j in out] == ["waiting", "waiting", "waiting", "delayed"]
    assert out[0]["id"] == "a" and out[1]["id"] == "b"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "payload"),
        ({"payload": 1, "id": "has space"}, "id"),
        ({"payload": 1, "id": "x" * 129}, "id"),
        ({"payload": 1, "delay": -1}, "delay"),
        ({"payload": 1, "max_attempts": 0}, "max_attempts"),
        ({"payload": 1, "timeout": 0}, "timeout"),
        ({"payload": 1, "headers": {"a": 1}}, "headers"),
        ({"payload": 1, "unknown": 1}, "unknown"),
        ({"payload": 1, "run_at": "tomorrow"}, "run_at"),
    ],
)
async def test_invalid_enqueue_bodies_are_422(
    client: httpx.AsyncClient, type_name: str, body: dict[str, Any], field: str
) -> None:
    r = await client.post(f"/jobs/{type_name}", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"payload": 1, "headers": {"payload": "x"}}', "reserved"),
        (b'{"payload": 100000000000000000000000}', "JSON"),
        (b'{"payload": 1, "delay": Infinity}', "Infinity"),
    ],
)
async def test_bad_input_never_500(
    client: httpx.AsyncClient, type_name: str, content: bytes, why: str
) -> None:
    r = await client.post(f"/jobs/{type_name}", content=content,
                          headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert why in r.json()["error"]


@pytest.mark.parametrize("name", ["has space", "x" * 65, "a{b}", "ünï"])
async def test_invalid_type_name_is_422(client: httpx.AsyncClient, name: str) -> None:
    for method, path in [("POST", f"/jobs/{quote(name)}"), ("GET", f"/jobs/{quote(name)}/1"),
                         ("GET", f"/dead/{quote(name)}")]:
        r = await client.request(method, path, json={"payload": 1})
        assert r.status_code == 422, (method, path, r.text)
        assert "invalid job type" in r.json()["error"]


async def test_body_limit_413(make_client: MakeClient, type_name: str) -> None:
    client = await make_client(max_payload_bytes=1000)
    ok = await client.post(f"/jobs/{type_name}", json={"payload": "x" * 900})
    assert ok.status_code == 201
    # A payload over the limit inside a body the envelope admits.
    r = await client.post(f"/jobs/{type_name}", json={"payload": "x" * 1200})
    assert r.status_code == 413 and "1000" in r.json()["error"]
    # A body over the limit: refused from its Content-Length, before parsing.
    r = await client.post(f"/jobs/{type_name}", content=b"x" * 100_000)
    assert r.status_code == 413 and r.json()["limit"] > 1000
    # Streamed without a Content-Length: counted while read.

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 10_000

    r = await client.post(f"/jobs/{type_name}", content=chunks())
    assert r.status_code == 413


async def _plain_and_routed(client: httpx.AsyncClient, path: str, content: bytes
                            ) -> tuple[httpx.Response, httpx.Response]:
    """``{"payload": ...}`` alone (served by api/fast.py) and the same body with an empty
    ``headers`` (served by the FastAPI route)."""
    routed = content[:-1] + b', "headers": {}}'
    hdrs = {"content-type": "application/json"}
    return (await client.post(path, content=content, headers=hdrs),
            await client.post(path, content=routed, headers=hdrs))


@pytest.mark.parametrize(("payload", "status"), [
    (b'{"n": 1}', 201),
    (b'"' + b"x" * 100 + b'"', 413),  # over max_payload_bytes, inside the body limit
    (b"100000000000000000000000", 422),  # JSON, but no wire format carries it
    (b"NaN", 422),  # not JSON: the framework answers it for both
])
async def test_the_plain_enqueue_answers_as_the_route_does(
        make_client: MakeClient, type_name: str, payload: bytes, status: int) -> None:
    client = await make_client(max_payload_bytes=64)
    fast, routed = await _plain_and_routed(client, f"/jobs/{type_name}",
                                           b'{"payload": ' + payload + b"}")
    assert fast.status_code == routed.status_code == status, (fast.text, routed.text)
    a, b = fast.json(), routed.json()
    if status == 201:
        assert a.pop("id") != b.pop("id")
    assert a == b
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert int(fast.headers["content-length"]) == len(fast.content)


@pytest.mark.parametrize(("jobs", "status"), [
    (b'{"payload": 1}, {"payload": {"n": 2}}', 201),
    (b'{"payload": 1}, {"payload": "' + b"x" * 100 + b'"}', 413),
    (b'{"payload": 100000000000000000000000}', 422),
])
async def test_the_plain_bulk_enqueue_answers_as_the_route_does(
        make_client: MakeClient, type_name: str, jobs: bytes, status: int) -> None:
    client = await make_client(max_payload_bytes=64)
    hdrs = {"content-type": "application/json"}
    path = f"/jobs/{type_name}/bulk"
    fast = await client.post(path, content=b'{"jobs": [' + jobs + b"]}", headers=hdrs)
    routed = await client.post(path, content=b'{"jobs": [{"payload": 0, "headers": {}}, '
                               + jobs + b"]}", headers=hdrs)
    assert fast.status_code == routed.status_code == status, (fast.text, routed.text)
    a, b = fast.json(), routed.json()
    if status == 201:
        b["jobs"] = b["jobs"][1:]  # the routed body's extra first job
        assert len(a["jobs"]) == 2
        for x, y in zip(a["jobs"], b["jobs"], strict=True):
            assert x.pop("id") != y.pop("id")
            assert list(x) == list(y)  # same fields, same order
    assert a == b
    assert fast.headers["content-type"] == routed.headers["content-type"]


async def test_the_plain_enqueue_keeps_auth_and_server_errors() -> None:
    from streamjobs.embedded import free_port

    app = create_app(f"redis://127.0.0.1:{free_port()}/0",
                     Settings(enqueue_deadline=0, api_keys=("k1",)))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://api"
    ) as client:
        r = await client.post("/jobs/t", json={"payload": 1})
        assert r.status_code == 401  # auth runs before the plain route
        client.headers["authorization"] = "Bearer k1"
        fast, routed = await _plain_and_routed(client, "/jobs/t", b'{"payload": 1}')
        assert fast.status_code == routed.status_code == 503
        assert fast.json() == routed.json()
        assert fast.headers["retry-after"] == routed.headers["retry-after"] == "1"


# ---- reading and listing ------------------------------------------------------------


async def test_unknown_job_404(client: httpx.AsyncClient, type_name: str) -> None:
    r = await client.get(f"/jobs/{type_name}/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = await client.get(f"/jobs/{type_name}/has%20space")
    assert r.status_code == 422


async def test_job_id_with_slash(client: httpx.AsyncClient, type_name: str) -> None:
    r = await client.post(f"/jobs/{type_name}", json={"payload": 1, "id": "a/b?c"})
    assert r.status_code == 201
    r = await client.get(f"/jobs/{type_name}/{quote('a/b?c', safe='')}")
    assert r.status_code == 200 and r.json()["id"] == "a/b?c"


async def _list_all(client: httpx.AsyncClient, type_name: str, state: str,
                    limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"state": state, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(f"/jobs/{type_name}", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["jobs"]) <= limit
        ids += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


async def test_list_waiting_and_delayed_pages(client: httpx.AsyncClient, type_name: str) -> None:
    waiting = [{"payload": i, "id": f"w{i:02}"} for i in range(7)]
    # Same delay in one bulk call: many ties at one due time, paged by (score, id).
    delayed = [{"payload": i, "id": f"d{i:02}", "delay": 60} for i in range(7)]
    await client.post(f"/jobs/{type_name}/bulk", json={"jobs": waiting + delayed})
    assert await _list_all(client, type_name, "waiting", 3) == [j["id"] for j in waiting]
    assert await _list_all(client, type_name, "delayed", 3) == [j["id"] for j in delayed]
    assert await _list_all(client, type_name, "running", 3) == []
    assert await _list_all(client, type_name, "dead", 3) == []


async def test_list_rejects_bad_query(client: httpx.AsyncClient, type_name: str) -> None:
    for params in ({"state": "sleeping"}, {"limit": 0}, {"limit": 100_000},
                   {"cursor": "garbage"}, {"state": "delayed", "cursor": "x"}):
        r = await client.get(f"/jobs/{type_name}", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]


async def test_delayed_page_survives_its_cursor_leaving(
    client: httpx.AsyncClient, type_name: str
) -> None:
    jobs = [{"payload": i, "id": f"d{i}", "delay": 60} for i in range(6)]
    await client.post(f"/jobs/{type_name}/bulk", json={"jobs": jobs})
    page = (await client.get(f"/jobs/{type_name}",
                             params={"state": "delayed", "limit": 2})).json()
    assert [j["id"] for j in page["jobs"]] == ["d0", "d1"]
    assert (await client.delete(f"/jobs/{type_name}/d1")).status_code == 200
    rest = (await client.get(f"/jobs/{type_name}", params={
        "state": "delayed", "limit": 10, "cursor": page["next_cursor"]})).json()
    assert [j["id"] for j in rest["jobs"]] == ["d2", "d3", "d4", "d5"]


# ---- cancel -------------------------------------------------------------------------


async def test_cancel(client: httpx.AsyncClient, type_name: str) -> None:
    await client.post(f"/jobs/{type_name}", json={"payload": 1, "id": "c1"})
    await client.post(f"/jobs/{type_name}", json={"payload": 1, "id": "c2", "delay": 60})
    for job_id, prev in (("c1", "waiting"), ("c2", "delayed")):
        r = await client.delete(f"/jobs/{type_name}/{job_id}")
        assert r.status_code == 200 and r.json() == {
            "id": job_id, "state": "cancelled", "previous_state": prev,
            "outcome": "cancelled"}
    assert (await client.get(f"/jobs/{type_name}/c1")).json()["state"] == "cancelled"
    r = await client.delete(f"/jobs/{type_name}/c1")
    assert r.status_code == 409
    r = await client.delete(f"/jobs/{type_name}/never")
    assert r.status_code == 404


async def test_a_running_async_job_is_cancelled_by_delete(
    client: httpx.AsyncClient, redis_url: str, type_name: str
) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        await anyio.sleep(30)

    await client.post(f"/jobs/{type_name}", json={"payload": 7, "id": "k1"})
    async with running(Worker(redis_url, reg, block_ms=100)):
        await wait_state(client, type_name, "k1", "running")
        r = await client.delete(f"/jobs/{type_name}/k1")
        assert r.status_code == 200 and r.json() == {
            "id": "k1", "state": "cancelled", "previous_state": "running",
            "outcome": "cancelled"}
    assert (await client.get(f"/jobs/{type_name}/k1")).json()["state"] == "cancelled"
    assert (await client.delete(f"/jobs/{type_name}/k1")).status_code == 409


async def test_dedup_and_expiry_fields_of_enqueue(client: httpx.AsyncClient,
                                                  type_name: str) -> None:
    body = {"payload": 1, "dedup_key": "acct-1", "dedup_mode": "throttle", "dedup_ttl": 60,
            "expires_in": 120}
    first = await client.post(f"/jobs/{type_name}", json=body)
    again = await client.post(f"/jobs/{type_name}", json=body)
    assert first.status_code == 201 and not first.json()["deduplicated"]
    assert again.status_code == 200 and again.json() == {
        "id": first.json()["id"], "state": "waiting", "deduplicated": True}
    bulk = await client.post(f"/jobs/{type_name}/bulk", json={"jobs": [body]})
    assert bulk.json()["jobs"][0]["deduplicated"] is True
    bad = await client.post(f"/jobs/{type_name}", json={**body, "dedup_mode": "often"})
    assert bad.status_code == 422
    page = await client.get(f"/jobs/{type_name}", params={"state": "expired"})
    assert page.status_code == 200 and page.json()["jobs"] == []


async def test_running_sync_job_cancel_says_uninterruptible_and_completes(
    client: httpx.AsyncClient, redis_url: str, type_name: str
) -> None:
    reg = Registry()
    release = threading.Event()

    @reg.handler(type_name)
    def h(job: Job) -> dict[str, Any]:
        release.wait(10)
        return {"done": job.payload}

    r = await client.post(f"/jobs/{type_name}", json={"payload": 7, "id": "r1"})
    async with running(Worker(redis_url, reg, concurrency=2, block_ms=100)):
        await wait_state(client, type_name, "r1", "running")
        page = (await client.get(f"/jobs/{type_name}", params={"state": "running"})).json()
        assert [j["id"] for j in page["jobs"]] == ["r1"] and page["jobs"][0]["consumer"]
        r = await client.delete(f"/jobs/{type_name}/r1")
        assert r.status_code == 200 and r.json() == {
            "id": "r1", "state": "running", "previous_state": "running",
            "outcome": "uninterruptible"}
        workers = (await client.get("/workers")).json()["workers"]
        mine = [w for w in workers if type_name in w["types"]]
        assert len(mine) == 1 and mine[0]["concurrency"] == 2 and mine[0]["pid"] > 0
        release.set()
        await wait_state(client, type_name, "r1", "completed")
    st = (await client.get(f"/jobs/{type_name}/r1")).json()
    assert st["result"] == {"done": 7} and st["finished_at"]
    assert await _list_all(client, type_name, "completed", 5) == ["r1"]
    types = {t["type"]: t for t in (await client.get("/types")).json()["types"]}
    assert types[type_name]["completed"] == 1 and types[type_name]["waiting"] == 0


# ---- dead letters -------------------------------------------------------------------


async def test_dead_letters_list_show_retry_purge(
    client: httpx.AsyncClient, redis_url: str, type_name: str
) -> None:
    reg = Registry()
    healed = anyio.Event()

    @reg.handler(type_name, max_attempts=2, immediate_retries=1, **FAST)
    async def h(job: Job) -> str:
        if not healed.is_set():
            raise RuntimeError(f"boom {job.payload}")
        return "ok"

    ids = [f"j{i}" for i in range(4)]
    await client.post(f"/jobs/{type_name}/bulk",
                      json={"jobs": [{"payload": i, "id": j} for i, j in enumerate(ids)]})
    async with running(Worker(redis_url, reg, concurrency=4, block_ms=100)):
        for j in ids:
            await wait_state(client, type_name, j, "dead")
        page = (await client.get(f"/dead/{type_name}", params={"limit": 3})).json()
        assert len(page["jobs"]) == 3 and page["next_cursor"]
        rest = (await client.get(f"/dead/{type_name}",
                                 params={"cursor": page["next_cursor"]})).json()
        assert sorted(j["id"] for j in page["jobs"] + rest["jobs"]) == ids
        assert rest["next_cursor"] is None
        assert page["jobs"][0]["reason"] == "attempts exhausted"
        assert await _list_all(client, type_name, "dead", 2) != []

        shown = (await client.get(f"/dead/{type_name}/j0")).json()
        assert shown["state"] == "dead" and "RuntimeError: boom 0" in shown["error"]
        assert "Traceback" in shown["traceback"]
        assert (await client.get(f"/dead/{type_name}/nope")).status_code == 404

        healed.set()
        r = await client.post(f"/dead/{type_name}/j0/retry")
        assert r.status_code == 200 and r.json() == {"id": "j0", "state": "waiting"}
        await wait_state(client, type_name, "j0", "completed")
        r = await client.post(f"/dead/{type_name}/j0/retry")
        assert r.status_code == 409
        assert (await client.post(f"/dead/{type_name}/nope/retry")).status_code == 404

        r = await client.post(f"/dead/{type_name}/retry", params={"error_contains": "boom 1"})
        assert r.json() == {"count": 1}
        await wait_state(client, type_name, "j1", "completed")

    r = await client.delete(f"/dead/{type_name}")
    assert r.status_code == 400 and "confirm=true" in r.json()["error"]
    r = await client.delete(f"/dead/{type_name}/j2")
    assert r.status_code == 200 and r.json()["state"] == "purged"
    r = await client.delete(f"/dead/{type_name}", params={"confirm": "true"})
    assert r.json() == {"count": 1}
    assert (await client.get(f"/dead/{type_name}")).json()["jobs"] == []
    assert (await client.post(f"/dead/{type_name}/retry")).json() == {"count": 0}


# ---- operations, auth ---------------------------------------------------------------


async def test_health_ready_docs(client: httpx.AsyncClient, redis_url: str) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ready"}
    doc = (await client.get("/openapi.json")).json()
    assert "/jobs/{type}" in doc["paths"] and "/dead/{type}/{id}/retry" in doc["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]
    r = await client.put("/health")
    assert r.status_code == 405 and r.json()["error"]


async def test_ready_loads_flushed_scripts(client: httpx.AsyncClient, r: Any) -> None:
    await r.script_flush()
    assert (await client.get("/ready")).status_code == 200
    from streamjobs.scripts import Scripts

    shas = [s.sha for s in Scripts(r)._registered.values()]
    assert all(await r.script_exists(*shas))


async def test_server_down_is_503_not_500(make_client: MakeClient, type_name: str) -> None:
    from streamjobs.embedded import free_port

    app = create_app(f"redis://127.0.0.1:{free_port()}/0", Settings(enqueue_deadline=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://api"
    ) as client:
        assert (await client.get("/health")).status_code == 200
        r = await client.get("/ready")
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        r = await client.post(f"/jobs/{type_name}", json={"payload": 1})
        assert r.status_code == 503 and "cannot be reached" in r.json()["error"]
        metrics = (await client.get("/metrics")).text
        assert "streamjobs_scrape_error 1.0" in metrics


async def test_auth(make_client: MakeClient, type_name: str) -> None:
    client = await make_client(api_keys=("k-one", "k-two"))
    r = await client.post(f"/jobs/{type_name}", json={"payload": 1})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["error"]
    r = await client.get("/types", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "not valid" in r.json()["error"]
    r = await client.get("/types", headers={"Authorization": "Bearer ünïcode".encode()})
    assert r.status_code == 401
    for key in ("k-one", "k-two"):
        r = await client.post(f"/jobs/{type_name}", json={"payload": 1},
                              headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201
    for open_path in ("/health", "/ready"):
        assert (await client.get(open_path)).status_code == 200
    for closed in ("/metrics", "/openapi.json", "/docs", f"/dead/{type_name}"):
        assert (await client.get(closed)).status_code == 401, closed
    doc = (await client.get("/openapi.json", headers={"Authorization": "Bearer k-one"})).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Without a key the body is not even read: a huge body is still a 401.
    r = await client.post(f"/jobs/{type_name}", content=b"x" * 10_000_000)
    assert r.status_code == 401


async def test_metrics_public_opens_only_metrics(make_client: MakeClient) -> None:
    client = await make_client(api_keys=("k",), metrics_public=True)
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/types")).status_code == 401


async def test_api_owns_nothing_of_other_types(
    client: httpx.AsyncClient, r: Any, type_name: str
) -> None:
    """Enqueue through the API writes only the type's own keys (and the types set)."""
    await client.post(f"/jobs/{type_name}", json={"payload": 1})
    tk = TypeKeys("sj", type_name)
    keys = [k.decode() async for k in r.scan_iter(match=f"*{{{type_name}}}*")]
    assert keys and all(k.startswith(tk.base) for k in keys)


# ---- edges (issue 8): every request answered correctly ---------------------------------

OUT_OF_RANGE_CURSORS = ("99999999999999999999-0", "18446744073709551615-18446744073709551615",
                        "0-18446744073709551616", "\u0661-\u0660")  # Arabic-Indic digits


@pytest.mark.parametrize("cursor", OUT_OF_RANGE_CURSORS)
async def test_out_of_range_cursor_is_422(
    client: httpx.AsyncClient, type_name: str, cursor: str
) -> None:
    for state in ("waiting", "running", "dead"):
        r = await client.get(f"/jobs/{type_name}", params={"state": state, "cursor": cursor})
        assert r.status_code == 422, (state, r.text)
        assert "cursor" in r.json()["error"]
    r = await client.get(f"/dead/{type_name}", params={"cursor": cursor})
    assert r.status_code == 422 and "cursor" in r.json()["error"], r.text


@pytest.mark.parametrize("cursor", ["\u00b2:x", "\u0661:x", "1e5:x", "x"])
async def test_bad_score_cursor_is_422(
    client: httpx.AsyncClient, type_name: str, cursor: str
) -> None:
    for state in ("delayed", "completed"):
        r = await client.get(f"/jobs/{type_name}", params={"state": state, "cursor": cursor})
        assert r.status_code == 422 and "cursor" in r.json()["error"], (state, r.text)


async def test_largest_cursor_is_accepted(client: httpx.AsyncClient, type_name: str) -> None:
    top = "18446744073709551615-18446744073709551614"
    r = await client.get(f"/jobs/{type_name}", params={"state": "waiting", "cursor": top})
    assert r.status_code == 200 and r.json()["jobs"] == []
    r = await client.get(f"/dead/{type_name}", params={"cursor": top})
    assert r.status_code == 200 and r.json()["jobs"] == []


@pytest.mark.parametrize("confirm", ["yes", "1", "on", "True", "TRUE", ""])
async def test_purge_needs_literal_true(
    client: httpx.AsyncClient, r: Any, type_name: str, confirm: str
) -> None:
    tk = TypeKeys("sj", type_name)
    await r.xadd(tk.dead, {"id": "d1", "reason": "poison", "error": "x"})
    resp = await client.delete(f"/dead/{type_name}", params={"confirm": confirm})
    assert resp.status_code in (400, 422) and "confirm=true" in resp.json()["error"], resp.text
    assert await r.xlen(tk.dead) == 1


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"payload": NaN}', "NaN"),
        (b'{"payload": {"a": [1, Infinity]}}', "Infinity"),
        (b'{"payload": -Infinity}', "Infinity"),
        (b'{"payload": 1e400}', "finite"),
        (b'{"payload": 1, "run_at": -1}', "run_at"),
        (b'{"payload": 1, "run_at": -1.5}', "run_at"),
        (b'{"payload": 1, "delay": true}', "delay"),
        (b'{"payload": 1, "delay": "5"}', "delay"),
        (b'{"payload": 1, "timeout": true}', "timeout"),
        (b'{"payload": 1, "max_attempts": true}', "max_attempts"),
        (b'{"payload": 1, "max_attempts": 2.0}', "max_attempts"),
        (b'{"payload": 1, "run_at": true}', "run_at"),
        (b'\xff', "UTF-8"),
        (b'{"payload": "\xff"}', "UTF-8"),
        (b"[" * 100_000, "JSON"),
    ],
)
async def test_lax_bodies_are_refused(
    client: httpx.AsyncClient, r: Any, type_name: str, content: bytes, field: str
) -> None:
    resp = await client.post(f"/jobs/{type_name}", content=content)
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["error"]
    assert await r.xlen(TypeKeys("sj", type_name).stream) == 0


async def test_strict_numbers_still_take_plain_values(
    client: httpx.AsyncClient, type_name: str
) -> None:
    r = await client.post(f"/jobs/{type_name}", json={
        "payload": {"x": 1.5e300}, "delay": 5, "timeout": 2.5, "max_attempts": 3})
    assert r.status_code == 201 and r.json()["state"] == "delayed"
    st = (await client.get(f"/jobs/{type_name}/{r.json()['id']}")).json()
    assert st["payload"] == {"x": 1.5e300} and st["max_attempts"] == 3
    r = await client.post(f"/jobs/{type_name}", json={"payload": 1, "run_at": 0})
    assert r.status_code == 201 and r.json()["state"] == "waiting"


@pytest.mark.parametrize("name", [".", ".."])
async def test_dot_type_names_are_refused(client: httpx.AsyncClient, name: str) -> None:
    encoded = name.replace(".", "%2E")
    r = await client.post(f"/jobs/{encoded}", json={"payload": 1})
    assert r.status_code == 422 and "invalid job type" in r.json()["error"], r.text


async def test_405_allow_lists_every_method(client: httpx.AsyncClient, type_name: str) -> None:
    cases = {f"/jobs/{type_name}": {"GET", "POST"},
             f"/jobs/{type_name}/x": {"GET", "DELETE"},
             f"/dead/{type_name}": {"GET", "DELETE"},
             f"/dead/{type_name}/retry": {"POST", "GET", "DELETE"},
             "/health": {"GET"}, "/openapi.json": {"GET", "HEAD"}}
    for path, methods in cases.items():
        r = await client.put(path)
        assert r.status_code == 405, path
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods, path


async def _websocket(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """One websocket session through the ASGI app as a server drives it: what it sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws",
             "raw_path": b"/ws", "root_path": "", "query_string": b"", "headers": headers,
             "scheme": "ws", "server": ("api", 80), "client": ("127.0.0.1", 1),
             "subprotocols": []}
    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


async def test_websocket_scope_needs_a_key(redis_url: str) -> None:
    app = create_app(redis_url, Settings(redis_url=redis_url, api_keys=("k",)))
    calls: list[str] = []

    @app.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        calls.append("in")
        await sock.accept()
        await sock.send_text("hello")
        await sock.close()

    async with app.router.lifespan_context(app):
        for headers in ([], [(b"authorization", b"Bearer wrong")]):
            sent = await _websocket(app, headers)
            assert [m["type"] for m in sent] == ["websocket.close"] and calls == []
            assert sent[0]["code"] == 1008 and "Bearer" in sent[0]["reason"]
        sent = await _websocket(app, [(b"authorization", b"Bearer k")])
        assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send",
                                             "websocket.close"]
        assert sent[1]["text"] == "hello" and calls == ["in"]


# ---- a server that refuses: 503 + Retry-After, never a leaked 500 -----------------------


@pytest.fixture
def private_url(tmp_path: Any) -> Iterator[str]:
    """A server of the test's own, free to be filled up or made read-only."""
    with EmbeddedServer(tmp_path, port=0, appendonly=False) as server:
        yield server.url


async def _fill(r: Any, type_name: str) -> int:
    """Set a small maxmemory (noeviction) and write until the server refuses."""
    used = int((await r.info("memory"))["used_memory"])
    await r.config_set("maxmemory-policy", "noeviction")
    await r.config_set("maxmemory", used + 512 * 1024)
    blob = b"x" * 16 * 1024
    for i in range(1000):
        try:
            await r.set(f"fill:{{{type_name}}}:{i}", blob)
        except OutOfMemoryError:
            return i
    raise AssertionError("the server never refused a write")


async def test_full_server_is_503_and_not_ready(
    make_client: MakeClient, private_url: str, type_name: str
) -> None:
    client = await make_client(redis_url_override=private_url)
    assert (await client.get("/ready")).status_code == 200
    r = client_from_url(private_url)
    try:
        assert await _fill(r, type_name) > 0
        resp = await client.post(f"/jobs/{type_name}", json={"payload": 1})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1", resp.text
        assert "full" in resp.json()["error"]
        resp = await client.post(f"/jobs/{type_name}/bulk", json={"jobs": [{"payload": 1}]})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1", resp.text
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1", ready.text
        assert "refuses writes" in ready.json()["error"]
        assert (await client.get(f"/jobs/{type_name}/nope")).status_code == 404  # reads work
        await r.config_set("maxmemory", 0)
        assert (await client.get("/ready")).status_code == 200
        assert (await client.post(f"/jobs/{type_name}", json={"payload": 1})).status_code == 201
    finally:
        await r.aclose()


async def test_read_only_server_is_503_and_not_ready(
    make_client: MakeClient, private_url: str, type_name: str
) -> None:
    """A replica whose master is gone: READONLY for writes, MASTERDOWN for everything."""
    client = await make_client(redis_url_override=private_url, enqueue_deadline=0)
    r = client_from_url(private_url)
    try:
        await r.replicaof("127.0.0.1", str(free_port()))
        resp = await client.post(f"/jobs/{type_name}", json={"payload": 1})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1", resp.text
        assert (await client.get("/ready")).status_code == 503
        await r.config_set("replica-serve-stale-data", "no")
        resp = await client.get(f"/jobs/{type_name}/x")
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1", resp.text
    finally:
        await r.replicaof("NO", "ONE")
        await r.aclose()
    assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize("reply", [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "MOVED 3999 127.0.0.1:6381",
    "ASK 3999 127.0.0.1:6381",
    "BUSY Redis is busy running a script.",
])
def test_passing_refusals_map_to_503(reply: str) -> None:
    """Each reply as redis-py turns it into an exception (its class, the code stripped)."""
    exc = _RESP3Parser.parse_error(reply)
    answer = answer_for(exc)
    assert (answer.status, answer.retry_after) == (503, 1), (type(exc), str(exc))


async def test_server_error_body_leaks_nothing(
    client: httpx.AsyncClient, r: Any, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await r.set(TypeKeys("sj", type_name).stream, "not a stream")  # WRONGTYPE in the script
    resp = await client.post(f"/jobs/{type_name}", json={"payload": {"secret": "s3"}})
    assert resp.status_code == 500
    assert resp.json() == {"error": "the job server answered an error (logged by the API "
                                    "process)"}
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "WRONGTYPE" in logged or "wrong kind" in logged.lower(), logged


async def test_unreadable_server_data_is_a_logged_500(
    client: httpx.AsyncClient, r: Any, type_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record the engine cannot read (a newer version's state) is the operator's
    problem: 500, never 422."""
    await r.hset(TypeKeys("sj", type_name).job("j1"), mapping={"state": "frobnicated"})
    resp = await client.get(f"/jobs/{type_name}/j1")
    assert resp.status_code == 500, resp.text
    assert "frobnicated" not in resp.text and "logged" in resp.json()["error"]
    assert any(rec.levelname == "ERROR" and f"/jobs/{type_name}/j1" in rec.getMessage()
               for rec in caplog.records)


async def test_one_unreadable_dead_entry_does_not_break_the_listing(
    client: httpx.AsyncClient, r: Any, type_name: str
) -> None:
    """A dead entry with a number this engine cannot read is listed (the field as 0),
    so one bad entry never makes a whole type's dead letters unreachable."""
    await r.xadd(TypeKeys("sj", type_name).dead, {"id": "d1", "attempts": "1.5"})
    resp = await client.get(f"/dead/{type_name}")
    assert resp.status_code == 200, resp.text
    assert [(j["id"], j["attempts"]) for j in resp.json()["jobs"]] == [("d1", 0)]


# ---- slow clients: bounded, not held open -----------------------------------------------


def _slow_post(port: int, type_name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST /jobs/{type_name} HTTP/1.1\r\nHost: api\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                 '{"payload":'.encode())  # 11 bytes of 100,000, then nothing
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_bodies_time_out_with_408(redis_url: str, type_name: str) -> None:
    app = create_app(redis_url, Settings(redis_url=redis_url), body_timeout=1.0)
    port = free_port()
    with serving(server_config(app, Settings(), "127.0.0.1", port, "warning")):
        t0 = time.monotonic()
        socks = [_slow_post(port, type_name) for _ in range(100)]
        try:
            answers = [_read_all(s) for s in socks]  # EOF: the server closed each one
        finally:
            for s in socks:
                s.close()
        took = time.monotonic() - t0
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0]
        assert b"body" in answers[0].partition(b"\r\n\r\n")[2]
        assert took < 8, took
        # The server still serves.
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_slow_headers_are_cut_off(redis_url: str) -> None:
    app = create_app(redis_url, Settings(redis_url=redis_url))
    port = free_port()
    config = server_config(app, Settings(), "127.0.0.1", port, "warning", header_timeout=1.0)
    with serving(config):
        t0 = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        partial = socket.create_connection(("127.0.0.1", port), timeout=10)
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n")  # no blank line, ever
        try:
            assert _read_all(silent) == b"" and _read_all(partial) == b""  # closed
        finally:
            silent.close()
            partial.close()
        assert time.monotonic() - t0 < 5
        # A keep-alive connection between requests: the same bound, then closed.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert _read_all(sock) == b""


def test_server_config_bounds_connections() -> None:
    config = server_config(create_app("redis://127.0.0.1:1/0", Settings()), Settings(),
                           "127.0.0.1", 1)
    assert config.limit_concurrency == API_LIMIT_CONCURRENCY
    assert 0 < config.timeout_keep_alive <= 10
    assert issubclass(config.http, HttpToolsProtocol)  # type: ignore[arg-type]
    assert config.server_header is False and config.proxy_headers is False
    assert config.access_log is False  # a log line per request is opt-in (--access-log)
    assert server_config("m:f", Settings(), access_log=True, workers=2).access_log is True


def _subclasses(cls: type[Exception]) -> list[type[Exception]]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_engine_exception_has_an_explicit_answer() -> None:
    from streamjobs import errors

    signals = set(_subclasses(errors.HandlerSignal))  # raised by handlers, never in the API
    for cls in _subclasses(errors.StreamJobsError):
        if cls in signals or cls is errors.StreamJobsError:
            continue
        exc = cls.__new__(cls)
        assert answer_for(exc) is not UNMAPPED, cls
    assert answer_for(errors.InvalidArgument("x")).status == 422
    assert answer_for(errors.CorruptData("x")).status == 500
    assert answer_for(ValueError("x")) is UNMAPPED  # no blanket ValueError -> 422


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_load_every_asset_from_the_api(client: httpx.AsyncClient, page: str) -> None:
    """/docs works with no internet: every script, style and icon comes from this API."""
    html = await client.get(page)
    assert html.status_code == 200 and "<html" in html.text.lower()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    urls += re.findall(r"""(?:url|specUrl)\s*:\s*["']([^"']+)["']""", html.text)
    assert len(urls) >= 2, html.text
    for url in urls:
        assert not re.match(r"^(?:[a-z]+:)?//", url, re.I), f"{page} loads {url} from elsewhere"
        asset = await client.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        assert asset.content, url


# ---- the types index: plain-XADD types and foreign names -------------------------------


async def test_a_type_fed_only_by_plain_xadd_is_listed(
        make_client: MakeClient, redis_url: str, type_name: str) -> None:
    """No producer or worker of ours ever touched these types: the API finds them by
    their streams at start, and again while it runs."""
    from tests.test_cli import cli

    prefix = "x" + type_name  # a keyspace of its own: /types lists only what the test made
    r = client_from_url(redis_url)
    try:
        await r.xadd(TypeKeys(prefix, "before").stream, {"payload": "1"})
        client = await make_client(prefix=prefix, types_rescan_s=0.2)
        rows = {t["type"]: t for t in (await client.get("/types")).json()["types"]}
        assert rows["before"]["waiting"] == 1
        await r.xadd(TypeKeys(prefix, "later").stream, {"payload": "2"})

        async def listed() -> list[str]:
            return sorted(t["type"] for t in (await client.get("/types")).json()["types"])

        await wait_equal(listed, ["before", "later"], timeout=5)
        text = (await client.get("/metrics")).text
        assert 'streamjobs_queue_waiting{type="later"} 1.0' in text
        await r.xadd(TypeKeys(prefix, "cli_only").stream, {"payload": "3"})
        res = await anyio.to_thread.run_sync(
            lambda: cli("stats", url=redis_url, STREAMJOBS_PREFIX=prefix))
        assert res.returncode == 0, res.stderr
        assert "cli_only" in res.stdout
    finally:
        await r.aclose()


async def test_a_foreign_name_in_the_types_index_breaks_no_listing(
        make_client: MakeClient, redis_url: str, type_name: str) -> None:
    """sj:types is written by anyone: a name that is no type is left out (and logged),
    the other types are listed by /types, /metrics, stats and the dashboard's views."""
    from streamjobs.keys import types_key
    from tests.test_cli import cli

    prefix = "y" + type_name
    r = client_from_url(redis_url)
    try:
        await r.xadd(TypeKeys(prefix, "good").stream, {"payload": "1"})
        await r.sadd(types_key(prefix), "good", "bad name!", "x" * 100, "{T}", "T#1")
        client = await make_client(prefix=prefix)
        res = await client.get("/types")
        assert res.status_code == 200, res.text
        assert [t["type"] for t in res.json()["types"]] == ["good"]
        res = await client.get("/metrics")
        assert res.status_code == 200 and 'streamjobs_queue_waiting{type="good"} 1.0' in res.text
        assert (await client.get("/throughput?minutes=2")).status_code == 200
        assert (await client.get("/schedules")).status_code == 200
        out = await anyio.to_thread.run_sync(
            lambda: cli("stats", url=redis_url, STREAMJOBS_PREFIX=prefix))
        assert out.returncode == 0, out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["good"]
    finally:
        await r.aclose()

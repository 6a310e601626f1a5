"""The dashboard's server side against a real server: its page and assets, the session
cookie, CSRF, read-only keys, and the routes the page reads (type detail, throughput,
workers' running jobs, dead letters filtered by error). The browser tests click through
the same in Chromium (test_ui_browser.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest

from streamjobs import Job, Registry, Settings, Worker
from streamjobs.api import create_app
from streamjobs.api.middleware import CSRF_COOKIE, SESSION_COOKIE, session_token
from streamjobs.api.ui import ASSETS
from streamjobs.dead import DeadLetters
from streamjobs.history import MINUTE_MS, _per_minute, throughput
from streamjobs.keys import TypeKeys
from tests.helpers import FAST, running, wait_for

pytestmark = pytest.mark.anyio
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
ORIGIN = "http://api"


@pytest.fixture
async def make_client(redis_url: str) -> AsyncIterator[MakeClient]:
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            settings = Settings(redis_url=redis_url, **overrides)
            app = create_app(redis_url, settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            return await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url=ORIGIN))

        yield make


# ---- page and assets ------------------------------------------------------------------


async def test_root_redirects_to_the_page_served_from_the_package(
    make_client: MakeClient,
) -> None:
    client = await make_client(api_keys=("k",))  # open without a key: no data in it
    r = await client.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/ui"
    page = await client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    # Every script and style the page names is served here (nothing from a CDN).
    for ref in ("/ui/static/app.js", "/ui/static/style.css", "/ui/static/favicon.svg"):
        assert ref in page.text
        asset = await client.get(ref)
        assert asset.status_code == 200 and asset.content == ASSETS[ref.rsplit("/", 1)[1]]
    js = await client.get("/ui/static/chart.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "http" not in "".join(ASSETS[n].decode() for n in ("index.html", "style.css"))
    missing = await client.get("/ui/static/nope.js")
    assert missing.status_code == 404 and "nope.js" in missing.json()["error"]
    assert "/ui" not in str(client._transport.app.openapi()["paths"])  # type: ignore[attr-defined]


# ---- session, CSRF, roles -------------------------------------------------------------


async def test_login_sets_httponly_strict_cookies_and_csrf_is_double_submitted(
    make_client: MakeClient, type_name: str,
) -> None:
    client = await make_client(api_keys=("admin-key",))
    s = (await client.get("/ui/session")).json()
    assert s["auth"] is True and s["role"] is None and s["csrf"]
    assert (await client.get("/types")).status_code == 401
    wrong = await client.post("/ui/login", json={"key": "nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    assert (await client.post("/ui/login", json={})).status_code == 422
    ok = await client.post("/ui/login", json={"key": "admin-key"})
    assert ok.status_code == 200 and ok.json()["role"] == "admin"
    set_cookies = ok.headers.get_list("set-cookie")
    session = next(c for c in set_cookies if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "admin-key" not in session
    assert all("HttpOnly" in c and "SameSite=strict" in c for c in set_cookies)
    token = ok.json()["csrf"]
    assert client.cookies[CSRF_COOKIE] == token
    assert client.cookies[SESSION_COOKIE] == session_token("admin-key")
    # Reads work with the cookie alone.
    assert (await client.get("/types")).status_code == 200
    assert (await client.get("/ui/session")).json()["role"] == "admin"
    # A write without the token, or with a wrong one, is refused; with it, done.
    body = {"payload": 1}
    bare = await client.post(f"/jobs/{type_name}", json=body)
    assert bare.status_code == 403 and "CSRF" in bare.json()["error"]
    forged = await client.post(f"/jobs/{type_name}", json=body, headers={"x-csrf-token": "x"})
    assert forged.status_code == 403
    done = await client.post(f"/jobs/{type_name}", json=body, headers={"x-csrf-token": token})
    assert done.status_code == 201
    # A bearer key needs no token (no browser sends it by itself).
    client.cookies.clear()
    keyed = await client.post(f"/jobs/{type_name}", json=body,
                              headers={"authorization": "Bearer admin-key"})
    assert keyed.status_code == 201
    # A session of a key no longer configured is void.
    client.cookies.set(SESSION_COOKIE, session_token("old-key"))
    gone = await client.get("/types")
    assert gone.status_code == 401 and "log in again" in gone.json()["error"]
    out = await client.post("/ui/logout")
    assert out.status_code == 200 and 'sj_session=""' in out.headers["set-cookie"]


async def test_read_only_key_reads_but_never_writes(
    make_client: MakeClient, type_name: str,
) -> None:
    client = await make_client(api_keys=("w",), api_read_keys=("r",))
    bearer = {"authorization": "Bearer r"}
    assert (await client.get("/types", headers=bearer)).status_code == 200
    refused = await client.post(f"/jobs/{type_name}", json={"payload": 1}, headers=bearer)
    assert refused.status_code == 403 and "read" in refused.json()["error"]
    login = await client.post("/ui/login", json={"key": "r"})
    assert login.json()["role"] == "read"
    token = login.json()["csrf"]
    purge = await client.delete(f"/dead/{type_name}?confirm=true",
                                headers={"x-csrf-token": token})
    assert purge.status_code == 403 and "read" in purge.json()["error"]


async def test_cross_site_writes_are_refused_even_without_keys(
    make_client: MakeClient, type_name: str,
) -> None:
    client = await make_client()
    body = {"payload": 1}
    evil = await client.post(f"/jobs/{type_name}", json=body,
                             headers={"origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
    fetch_meta = await client.post(f"/jobs/{type_name}", json=body,
                                   headers={"sec-fetch-site": "cross-site"})
    assert fetch_meta.status_code == 403
    # Cross-site login is refused too (login CSRF).
    assert (await client.post("/ui/login", json={"key": "x"},
                              headers={"origin": "http://evil.example"})).status_code == 403
    same = await client.post(f"/jobs/{type_name}", json=body, headers={"origin": ORIGIN})
    assert same.status_code == 201
    assert (await client.post(f"/jobs/{type_name}", json=body)).status_code == 201  # curl
    s = (await client.get("/ui/session")).json()
    assert s == {"auth": False, "role": "admin", "csrf": s["csrf"]}


# ---- what the pages read -----------------------------------------------------------------


async def test_workers_publish_running_jobs_and_policies(
    make_client: MakeClient, redis_url: str, type_name: str,
) -> None:
    client = await make_client()
    reg = Registry()
    release = anyio.Event()

    @reg.handler(type_name, max_attempts=4, timeout=60.0, **FAST)
    async def slow(job: Job) -> str:
        await release.wait()
        return "ok"

    await client.post(f"/jobs/{type_name}", json={"payload": 1, "id": "long-1"})
    t0 = time.monotonic()
    async with running(Worker(redis_url, reg, concurrency=3)):

        async def listed() -> bool:
            ws = (await client.get("/workers")).json()["workers"]
            return any(r["id"] == "long-1" for w in ws for r in w["running"])

        await wait_for(listed, timeout=5)
        # Published within about a second of the fetch, not the 5 s heartbeat period.
        assert time.monotonic() - t0 < 4
        ws = (await client.get("/workers")).json()["workers"]
        (mine,) = [w for w in ws if type_name in w["types"]]
        (job,) = mine["running"]
        assert job["type"] == type_name and job["attempt"] == 1
        assert abs(job["started_at"] - time.time() * 1000) < 5000
        assert mine["policies"][type_name]["max_attempts"] == 4
        detail = (await client.get(f"/types/{type_name}")).json()
        assert detail["policy"]["timeout"] == 60.0 and detail["workers"] == 1
        assert detail["stats"]["running"] == 1
        release.set()

        async def idle() -> bool:
            ws = (await client.get("/workers")).json()["workers"]
            return any(w["running"] == [] for w in ws if type_name in w["types"])

        await wait_for(idle, timeout=5)
    # A stopped worker deregisters: the type's policy is no longer known.
    nobody = (await client.get(f"/types/{type_name}")).json()
    assert nobody["policy"] is None and nobody["workers"] == 0


async def test_throughput_counts_completed_and_failed_per_minute(
    make_client: MakeClient, redis_url: str, type_name: str,
) -> None:
    client = await make_client()
    reg = Registry()

    @reg.handler(type_name, max_attempts=1, **FAST)
    async def work(job: Job) -> None:
        if job.payload["fail"]:
            raise RuntimeError("no")

    jobs = [{"payload": {"fail": i < 2}} for i in range(7)]
    assert (await client.post(f"/jobs/{type_name}/bulk", json={"jobs": jobs})).status_code == 201
    async with running(Worker(redis_url, reg)):
        async def settled() -> bool:
            t = (await client.get(f"/types/{type_name}")).json()["stats"]
            return bool(t["completed"] == 5 and t["dead"] == 2)

        await wait_for(settled)
    tp = (await client.get("/throughput?minutes=5")).json()
    (mine,) = [s for s in tp["types"] if s["type"] == type_name]
    assert len(mine["completed"]) == 5 and tp["minute_ms"] == MINUTE_MS
    assert sum(mine["completed"]) == pytest.approx(5) and sum(mine["failed"]) == pytest.approx(2)
    assert tp["start"] % MINUTE_MS == 0
    assert (await client.get("/throughput?minutes=0")).status_code == 422


def test_per_minute_spreads_gaps_and_survives_a_reset() -> None:
    # Snapshots at minutes 10 and 14 (none between: no API ran), then a reset at 15.
    points = [(10, (0, 0, 0)), (14, (8, 4, 0)), (15, (2, 0, 1))]
    completed, retried, dead = _per_minute(points, first=10, minutes=5)
    assert completed == [2.0, 2.0, 2.0, 2.0, 2.0]
    assert retried == [1.0, 1.0, 1.0, 1.0, 0.0] and dead == [0, 0, 0, 0, 1.0]


async def test_throughput_prunes_old_minutes(r: Any, type_name: str) -> None:
    tk = TypeKeys("sj", type_name)
    now = int(time.time() * 1000)
    old = now // MINUTE_MS - 500
    await r.hset(tk.minutes, mapping={str(old): "1 0 0", "junk": "x"})
    start, (series,) = await throughput(r, [tk], now, minutes=3)
    assert series.completed == [0.0, 0.0, 0.0] and start == (now // MINUTE_MS - 2) * MINUTE_MS
    assert str(old).encode() not in await r.hkeys(tk.minutes)


async def test_dead_letters_filtered_by_error_text_page_by_page(
    make_client: MakeClient, redis_url: str, type_name: str,
) -> None:
    client = await make_client()
    reg = Registry()

    @reg.handler(type_name, max_attempts=1, **FAST)
    async def fail(job: Job) -> None:
        raise RuntimeError(job.payload)

    jobs = [{"payload": "timeout talking to smtp" if i % 3 == 0 else "bad address",
             "id": f"d{i:02d}"} for i in range(12)]
    await client.post(f"/jobs/{type_name}/bulk", json={"jobs": jobs})
    async with running(Worker(redis_url, reg)):
        async def dead() -> bool:
            t = (await client.get(f"/types/{type_name}")).json()["stats"]
            return bool(t["dead"] == 12)

        await wait_for(dead)
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        q = f"?error_contains=smtp&limit=3{f'&cursor={cursor}' if cursor else ''}"
        page = (await client.get(f"/dead/{type_name}{q}")).json()
        seen += [j["id"] for j in page["jobs"]]
        assert all("smtp" in j["error"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["d00", "d03", "d06", "d09"]
    # A search bounded by entries read hands back a cursor to go on.
    dl = DeadLetters(redis_url)
    try:
        found, nxt = await dl.find(type_name, error_contains="smtp", count=10, scan=2)
        assert [j.id for j in found] == ["d00"] and nxt is not None
        more, _ = await dl.find(type_name, error_contains="smtp", after=nxt, count=10)
        assert [j.id for j in more] == ["d03", "d06", "d09"]
    finally:
        await dl.aclose()

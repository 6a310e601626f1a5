"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never
``playwright install``: its download does not work on these machines).

One API (with a key, so every click goes through the session cookie and CSRF token),
one worker and one browser for the module. The module's fixture seeds the data every
test reads, so the tests run in any order. Each test screenshots its page; with
``STREAMJOBS_SCREENSHOTS=1`` they are saved as docs/img/*.png (the README shows them),
otherwise under the test's temporary directory.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from streamjobs import Event, Job, JobState, Registry, Settings, Worker
from streamjobs.api import create_app
from streamjobs.api.server import server_config
from streamjobs.connection import client_from_url
from streamjobs.embedded import free_port
from streamjobs.events import switch_events
from streamjobs.keys import TypeKeys
from tests.helpers import FAST, ROOT, poll, running, serving

# The browser tests' own knobs: a short default wait (a hang fails fast).
expect.set_options(timeout=10_000)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page, Request

pytestmark = [pytest.mark.xdist_group("browser"), pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "dashboard-test-key"
PREFIX = "sjui"
BIG = 10_000


@dataclass
class Site:
    url: str
    api: httpx.Client
    shots: Path
    redis_url: str = ""
    fixed: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)


def _registry(site: Site) -> Registry:
    reg = Registry()

    @reg.handler("emails", **FAST)
    async def emails(job: Job) -> dict[str, Any]:
        await anyio.sleep(0.01)
        return {"sent_to": job.payload["to"], "message_id": f"<{job.id}@mail>"}

    @reg.handler("reports", **FAST)
    async def reports(job: Job) -> str:
        if job.payload.get("error") and job.id not in site.fixed:
            raise RuntimeError(job.payload["error"])
        return "report ready"

    @reg.handler("thumbnails", **FAST)
    async def thumbnails(job: Job) -> str:
        await anyio.to_thread.run_sync(site.release.wait)  # set by a test's thread
        return "done"

    @reg.handler("renders", **FAST)
    async def renders(job: Job) -> str:
        await job.progress(0.4, "rendered 4 of 10 pages")
        job.log(f"attempt {job.attempt}: fonts loaded")
        if job.attempt == 1:
            raise RuntimeError("font server timed out")
        await job.progress(1.0, "rendered 10 of 10 pages")
        return "render.pdf"

    @reg.handler("videos", max_running=2, rate_limit="100/s", **FAST)
    async def videos(job: Job) -> str:
        await anyio.sleep(60)  # until cancelled from the dashboard
        return "encoded"

    return reg


def _worker_thread(url: str, site: Site, settings: Settings,
                   stop: threading.Event) -> threading.Thread:
    async def main() -> None:
        worker = Worker(url, _registry(site), settings=settings, concurrency=4,
                        types=["emails", "reports", "thumbnails", "videos", "renders"],
                        name="web-1:4242")
        async with running(worker):
            await anyio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=anyio.run, args=(main,), daemon=True)
    thread.start()
    return thread


def _stats(site: Site, type_: str) -> dict[str, Any]:
    stats: dict[str, Any] = site.api.get(f"/types/{type_}").json()["stats"]
    return stats


def _seed(site: Site) -> None:
    post = site.api.post
    emails = [{"payload": {"to": f"user{i}@example.com", "template": "welcome"},
               "id": f"welcome-{i:03d}"} for i in range(40)]
    emails += [{"payload": {"to": f"late{i}@example.com"}, "delay": 3600} for i in range(3)]
    assert post("/jobs/emails/bulk", json={"jobs": emails}).status_code == 201
    reports = [{"payload": {"month": m, "error": "upstream 503 from billing"},
                "max_attempts": 1, "id": f"report-{m}"} for m in range(1, 6)]
    reports += [{"payload": {"row": r, "error": "bad row: missing customer id"},
                 "max_attempts": 1, "id": f"import-row-{r}"} for r in range(3)]
    reports += [{"payload": {"month": 12}}]
    assert post("/jobs/reports/bulk", json={"jobs": reports}).status_code == 201
    for start in range(0, BIG, 5000):  # a type no worker runs: all waiting
        big = [{"payload": {"file": f"batch-{i}.csv", "rows": i}} for i in
               range(start, start + 5000)]
        assert post("/jobs/imports/bulk", json={"jobs": big}).status_code == 201
    poll(lambda: _stats(site, "emails")["completed"] == 40
         and _stats(site, "reports")["dead"] == 8, timeout=20)


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = Settings(redis_url=redis_url, prefix=PREFIX, api_keys=(KEY,))
    app = create_app(redis_url, settings)
    shots = (ROOT / "docs" / "img" if os.environ.get("STREAMJOBS_SCREENSHOTS")
             else tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with serving(server_config(app, settings, "127.0.0.1", free_port(), "warning")) as url, \
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"},
                         timeout=30) as api:
        s = Site(url, api, shots, redis_url)
        thread = _worker_thread(redis_url, s, settings, stop)
        try:
            _seed(s)
            yield s
        finally:
            s.release.set()
            stop.set()
            thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _login(page: Page, site: Site, key: str) -> None:
    page.goto(f"{site.url}/ui")
    page.wait_for_selector("#key")
    page.fill("#key", key)
    page.click("button[type=submit]")


@pytest.fixture(scope="module")
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A logged-in tab at laptop width."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    _login(p, site, KEY)
    p.wait_for_selector("#types")
    try:
        yield p
    finally:
        context.close()


def _shot(page: Page, site: Site, name: str, full_page: bool = True) -> None:
    path = site.shots / f"{name}.png"
    page.evaluate("document.getElementById('flash').replaceChildren()")  # earlier toasts
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 5_000, name


@contextmanager
def _event_streams(page: Page) -> Iterator[list[str]]:
    """The URLs of the page's requests to /events while the block runs."""
    streams: list[str] = []

    def seen(request: Request) -> None:
        if "/events?" in request.url:
            streams.append(request.url)

    page.on("request", seen)
    try:
        yield streams
    finally:
        page.remove_listener("request", seen)


# ---- the tests --------------------------------------------------------------------------


def test_login_form_refuses_a_wrong_key_and_accepts_the_right_one(
    browser: Browser, site: Site,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    page = context.new_page()
    try:
        page.goto(f"{site.url}/")  # redirected to /ui, which asks for a key
        page.wait_for_selector("#key")
        assert page.url.endswith("/ui#/login")
        page.fill("#key", "not-the-key")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error:has-text('not valid')")
        _shot(page, site, "login")
        assert not [c for c in context.cookies() if c["name"] == "sj_session"]
        page.fill("#key", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#types")
        assert page.inner_text("#who").startswith("admin")
        (cookie,) = [c for c in context.cookies() if c["name"] == "sj_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and KEY not in cookie["value"]
        page.click("#who button")  # log out: back to the form
        page.wait_for_selector("#key")
        assert site.api.get("/types").status_code == 200  # the key itself still works
    finally:
        context.close()


def test_overview_shows_each_type_after_enqueues(page: Page, site: Site) -> None:
    site.api.post("/jobs/newsletters", json={"payload": {"issue": 7}, "delay": 600})
    page.goto(f"{site.url}/ui#/")
    # The overview polls: the new type shows up without a reload.
    row = page.wait_for_selector("#types tr[data-type=newsletters]", timeout=10_000)
    assert "1" in row.inner_text()
    imports = page.inner_text("#types tr[data-type=imports]")
    assert "10,000" in imports
    emails = page.inner_text("#types tr[data-type=emails]")
    assert "40" in emails  # completed, and counted in the last hour's throughput
    assert page.locator("svg.chart rect").count() > 0  # bars for the minute just done
    _shot(page, site, "overview")
    # A narrow window: nothing spills sideways out of the page.
    page.set_viewport_size({"width": 400, "height": 860})
    try:
        page.wait_for_timeout(200)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        _shot(page, site, "overview-narrow")
    finally:
        page.set_viewport_size({"width": 1280, "height": 860})


def test_dead_job_is_retried_from_its_page_and_completes(page: Page, site: Site) -> None:
    dead = site.api.get("/dead/reports?error_contains=upstream&limit=1").json()["jobs"]
    job_id = dead[0]["id"]
    page.goto(f"{site.url}/ui#/job/reports/{job_id}")
    page.wait_for_selector("#job-id")
    assert page.inner_text(".badge.dead") == "dead"
    assert "upstream 503" in page.inner_text("#job-error")
    _shot(page, site, "job")
    site.fixed.add(job_id)  # the upstream is back
    page.click("#actions button:has-text('Retry')")
    page.wait_for_selector(".badge.completed", timeout=15_000)
    assert "report ready" in page.inner_text("#job-result")
    assert site.api.get(f"/jobs/reports/{job_id}").json()["state"] == "completed"


def test_running_job_is_visible_on_the_workers_page(page: Page, site: Site) -> None:
    site.release.clear()
    r = site.api.post("/jobs/thumbnails", json={"payload": {"image": "cat.png", "w": 320}})
    job_id = r.json()["id"]
    try:
        page.goto(f"{site.url}/ui#/workers")
        card = page.wait_for_selector(".worker[data-name='web-1:4242']")
        page.wait_for_selector(f".worker ul.running a:has-text('{job_id}')", timeout=10_000)
        text = card.inner_text()
        assert "thumbnails" in text and "of 4" in text and "4242" in text
        _shot(page, site, "workers")
        page.click(f".worker ul.running a:has-text('{job_id}')")
        page.wait_for_selector(".badge.running")
    finally:
        site.release.set()
    page.wait_for_selector(".badge.completed", timeout=10_000)


def test_search_finds_a_job_by_id(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui#/type/emails?state=completed")
    page.wait_for_selector("#jobs")
    assert page.locator("#policy").inner_text().count("max attempts") == 1
    _shot(page, site, "type", full_page=False)
    page.fill("#job-search", "no-such-job")
    page.press("#job-search", "Enter")
    page.wait_for_selector("#search-msg:has-text('no job no-such-job')")
    page.fill("#job-search", "welcome-007")
    page.press("#job-search", "Enter")
    page.wait_for_selector("#job-id:has-text('welcome-007')")
    assert "user7@example.com" in page.inner_text("main")
    assert page.url.endswith("#/job/emails/welcome-007")


def test_dead_letters_filter_select_retry_and_purge_with_confirmation(
    page: Page, site: Site,
) -> None:
    page.goto(f"{site.url}/ui#/dead?type=reports")
    page.wait_for_selector("#dead")
    page.fill("#dead-error", "bad row")
    page.press("#dead-error", "Enter")
    expect(page.locator("#dead tbody tr")).to_have_count(3)
    assert all("bad row" in t for t in page.locator("#dead td.err").all_inner_texts())
    _shot(page, site, "dead")
    page.locator("#dead tbody input[type=checkbox]").first.check()
    page.click("#retry-selected")
    assert "1 selected job" in page.inner_text("#confirm-text")
    page.click("#confirm button[value=cancel]")  # nothing happens without confirming
    assert site.api.get("/types/reports").json()["stats"]["dead"] >= 3
    page.click("#retry-selected")
    page.click("#confirm-ok")
    page.wait_for_selector("#flash :text('retried 1')")

    def back_dead() -> bool:
        jobs = site.api.get("/dead/reports?error_contains=bad%20row").json()["jobs"]
        return len(jobs) == 3  # the retried one failed again

    poll(back_dead, timeout=10)
    page.click("#purge-all")
    assert "cannot be undone" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_selector("#flash :text('purged 3')")
    page.wait_for_selector(".empty:has-text('No dead job of reports whose error contains')")
    assert site.api.get("/dead/reports?error_contains=bad%20row").json()["jobs"] == []


def test_state_change_without_the_csrf_token_is_refused(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui#/")
    page.wait_for_selector("#types")
    script = """async ([withToken]) => {
        const s = await (await fetch('/ui/session')).json();
        const headers = {'content-type': 'application/json'};
        if (withToken) headers['x-csrf-token'] = s.csrf;
        const r = await fetch('/jobs/emails', {method: 'POST', headers,
                                               body: JSON.stringify({payload: {to: 'x'}})});
        return [r.status, await r.text()];
    }"""
    status, body = page.evaluate(script, [False])
    assert status == 403 and "CSRF" in body
    status, _ = page.evaluate(script, [True])
    assert status == 201


def test_type_page_with_10000_jobs_loads_quickly(page: Page, site: Site) -> None:
    assert _stats(site, "imports")["waiting"] == BIG
    page.goto(f"{site.url}/ui#/")
    page.wait_for_selector("#types")
    def load(cold: bool) -> float:
        page.goto("about:blank" if cold else f"{site.url}/ui#/workers")
        if not cold:
            page.wait_for_selector("h1:has-text('Workers')")
        t0 = time.perf_counter()
        page.goto(f"{site.url}/ui#/type/imports")
        expect(page.locator("#jobs tbody tr")).to_have_count(50)
        return time.perf_counter() - t0

    cold = [load(True) for _ in range(3)]  # a new document: page, modules, session, data
    warm = [load(False) for _ in range(3)]  # from another page of the dashboard
    api_ms = int(page.evaluate("document.getElementById('main').dataset.loadedMs"))
    first = page.locator("#jobs tbody tr td a").first.inner_text()
    page.click("#next-page")
    page.wait_for_selector("text=page 2")
    expect(page.locator("#jobs tbody tr td a").first).not_to_have_text(first)
    expect(page.locator("#jobs tbody tr")).to_have_count(50)
    ms = lambda ts: ", ".join(f"{t * 1000:.0f}" for t in ts)  # noqa: E731
    print(f"\ntype page, {BIG:,} waiting jobs, first 50 rows shown: full load {ms(cold)} ms; "
          f"from another page {ms(warm)} ms; API calls + render {api_ms} ms")
    assert min(cold) < 3.0 and min(warm) < 3.0


def test_a_type_is_paused_and_resumed_from_its_page(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui#/type/imports")
    page.wait_for_selector("#jobs")
    page.click("#pause-toggle:has-text('Pause')")
    page.wait_for_selector("#pause .badge.paused")
    assert _stats(site, "imports")["paused"] is True
    _shot(page, site, "type-paused", full_page=False)
    page.goto(f"{site.url}/ui#/")
    page.wait_for_selector("#types tr[data-type=imports] .badge.paused")
    assert not page.locator("#types tr[data-type=emails] .badge.paused").count()
    page.goto(f"{site.url}/ui#/type/imports")
    page.click("#pause-toggle:has-text('Resume')")
    page.wait_for_selector("#pause-toggle:has-text('Pause')")
    assert not page.locator("#pause .badge.paused").count()
    assert _stats(site, "imports")["paused"] is False


def test_schedules_are_paused_run_and_deleted_from_their_page(page: Page, site: Site) -> None:
    res = site.api.put("/schedules/nightly-digest", json={
        "type": "emails", "cron": "0 3 * * *", "tz": "Europe/Paris",
        "payload": {"to": "digest@example.com"}})
    assert res.status_code == 200, res.text
    page.goto(f"{site.url}/ui#/schedules")
    row = page.wait_for_selector("#schedules tr[data-schedule=nightly-digest]")
    assert "0 3 * * * (Europe/Paris)" in row.inner_text() and "emails" in row.inner_text()
    _shot(page, site, "schedules", full_page=False)
    page.click("tr[data-schedule=nightly-digest] button:has-text('Pause')")
    page.wait_for_selector("tr[data-schedule=nightly-digest] .badge.paused")
    assert site.api.get("/schedules/nightly-digest").json()["paused"] is True
    page.click("tr[data-schedule=nightly-digest] button:has-text('Run now')")
    flash = page.wait_for_selector("#flash :text('enqueued cron:nightly-digest')")
    job_id = flash.inner_text().split("enqueued ", 1)[1].strip()
    poll(lambda: site.api.get(f"/jobs/emails/{job_id}").json()["state"] == "completed",
         timeout=10)
    page.click("tr[data-schedule=nightly-digest] button:has-text('Delete')")
    assert "jobs it enqueued stay" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_selector("#flash :text('deleted nightly-digest')")
    expect(page.locator("tr[data-schedule=nightly-digest]")).to_have_count(0)
    assert site.api.get("/schedules/nightly-digest").status_code == 404


def test_a_running_job_is_stopped_from_its_page(page: Page, site: Site) -> None:
    job_id = site.api.post("/jobs/videos", json={"payload": {"file": "talk.mp4"}}).json()["id"]
    page.goto(f"{site.url}/ui#/job/videos/{job_id}")
    page.wait_for_selector(".badge.running", timeout=10_000)
    page.click("#actions button:has-text('Cancel')")
    assert "not retried" in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_selector(f"#flash :text('cancelled {job_id}')", timeout=10_000)
    page.wait_for_selector(".badge.cancelled", timeout=10_000)
    assert site.api.get(f"/jobs/videos/{job_id}").json()["state"] == "cancelled"


def test_job_page_shows_progress_logs_and_every_attempt(page: Page, site: Site) -> None:
    r = site.api.post("/jobs/renders", json={"payload": {"doc": "q3-report"},
                                             "max_attempts": 3, "id": "render-q3"})
    assert r.status_code == 201
    poll(lambda: site.api.get("/jobs/renders/render-q3").json()["state"] == "completed",
         timeout=20)
    page.goto(f"{site.url}/ui#/job/renders/render-q3")
    page.wait_for_selector("#job-progress")
    assert "rendered 10 of 10 pages" in page.inner_text("#job-progress")
    assert page.get_attribute("#job-progress progress", "value") == "1"
    logs = page.inner_text("#job-logs")
    assert "attempt 1: fonts loaded" in logs and "attempt 2: fonts loaded" in logs
    rows = page.locator("#job-history tbody tr")
    assert rows.count() == 2
    assert "font server timed out" in rows.nth(0).inner_text()
    assert "completed" in rows.nth(1).inner_text()
    assert "Not kept once a job has finished" in page.inner_text("#job-payload")
    _shot(page, site, "job-history")


def test_events_page_shows_a_job_enqueued_after_it_opened(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui#/events?types=emails,renders")
    # "live" only once the server said `ready`: its stream's start is fixed, so a job
    # enqueued from now on is always shown (headers alone could come before that).
    page.wait_for_selector("#events-state[data-state=live]")
    r = site.api.post("/jobs/emails", json={"payload": {"to": "fresh@example.com"},
                                           "id": "welcome-live"})
    assert r.status_code == 201
    page.wait_for_selector("#events tr[data-event=completed] a:has-text('welcome-live')")
    kinds = page.locator("#events tr:has(a:has-text('welcome-live'))").evaluate_all(
        "rows => rows.map(r => r.dataset.event)")
    assert kinds[:1] == ["completed"] and "enqueued" in kinds  # newest first
    # A job that fails once (progress, failed, retrying), for the screenshot's colours.
    r = site.api.post("/jobs/renders", json={"payload": {"doc": "invoice"}, "max_attempts": 3,
                                            "id": "render-live"})
    assert r.status_code == 201
    page.wait_for_selector("#events tr[data-event=completed] a:has-text('render-live')",
                           timeout=20_000)
    page.click("#events-pause")
    page.wait_for_selector("#events-state[data-state=paused]")
    site.api.post("/jobs/emails", json={"payload": {"to": "later@example.com"}})
    expect(page.locator("#events-pause")).to_have_text("Resume (3 new)")
    _shot(page, site, "events")


def test_events_page_says_why_when_a_types_events_are_off(
    page: Page, site: Site, redis_url: str,
) -> None:
    async def off() -> None:
        r = client_from_url(redis_url)
        try:
            await switch_events(r, TypeKeys(PREFIX, "audits"), on=False)
        finally:
            await r.aclose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs in this thread
        pool.submit(anyio.run, off).result()
    with _event_streams(page) as streams:
        page.goto(f"{site.url}/ui#/events?types=emails,audits")
        page.wait_for_selector("#events-error:has-text('switched off')")
        assert "streamjobs events audits on" in page.inner_text("#events-error")
        assert page.get_attribute("#events-state", "data-state") == "refused"
        page.wait_for_timeout(3500)  # past an EventSource's reconnection delay (3 s)
        assert len(streams) == 2  # the EventSource's request and the one asking why
        assert page.get_attribute("#events-state", "data-state") == "refused"
    res = site.api.get("/events", params={"types": "emails,audits"})
    assert res.status_code == 409 and res.json()["types"] == ["audits"]


def test_events_pause_holds_new_events_and_shows_them_on_resume(page: Page, site: Site) -> None:
    with _event_streams(page) as streams:
        page.goto(f"{site.url}/ui#/events?types=emails")
        page.wait_for_selector("#events-state[data-state=live]")
        page.click("#events-pause")
        page.wait_for_selector("#events-state[data-state=paused]")
        r = site.api.post("/jobs/emails", json={"payload": {"to": "held@example.com"},
                                               "id": "welcome-held"})
        assert r.status_code == 201
        poll(lambda: site.api.get("/jobs/emails/welcome-held").json()["state"] == "completed",
             timeout=10)
        # enqueued, started, completed: held, counted on the button, not shown yet
        expect(page.locator("#events-pause")).to_have_text("Resume (3 new)")
        held = page.locator("#events tr:has(a:has-text('welcome-held'))")
        assert held.count() == 0
        page.click("#events-pause")
        expect(held).to_have_count(3)
        assert held.evaluate_all("rows => rows.map(r => r.dataset.event)") == [
            "completed", "started", "enqueued"]  # newest first, as if never paused
        expect(page.locator("#events-pause")).to_have_text("Pause")
        assert page.get_attribute("#events-state", "data-state") == "live"
        # Held while paused: the last 200 (as many as the page keeps), all counted.
        page.click("#events-pause")
        bulk = [{"payload": {"to": f"many{i}@example.com"}, "id": f"many-{i:02d}"}
                for i in range(80)]
        assert site.api.post("/jobs/emails/bulk", json={"jobs": bulk}).status_code == 201
        expect(page.locator("#events-pause")).to_have_text("Resume (240 new)")
        page.click("#events-pause")
        expect(page.locator("#events tbody tr")).to_have_count(200)
        assert page.locator("#events tr:has(a:has-text('many-79'))").count() == 3
        assert page.locator("#events tr:has(a:has-text('many-00'))").count() < 3
        assert len(streams) == 1  # one connection all along: nothing missed


#: The state whose colour each event's badge wears (the event a state begins with).
EVENT_COLOUR = {Event.ENQUEUED: "waiting", Event.STARTED: "running", Event.PROGRESS: "running",
                Event.COMPLETED: "completed", Event.FAILED: "dead", Event.RETRYING: "delayed",
                Event.DEAD: "dead", Event.CANCELLED: "cancelled", Event.EXPIRED: "expired",
                Event.DEBOUNCED: "delayed", Event.DEAD_RETRIED: "waiting",
                Event.UNBLOCKED: "waiting"}


def test_every_event_and_state_badge_wears_its_state_colour(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui#/events?types=emails")
    page.wait_for_selector("#events-state[data-state=live]")
    names = [*JobState, *Event, "paused", "stale", "gone"]
    colours: dict[str, str] = page.evaluate("""names => {
        const out = {};
        for (const n of names) {
            const b = document.createElement('span');
            b.className = `badge ${n}`;
            document.getElementById('main').append(b);
            out[n] = getComputedStyle(b).backgroundColor;
            b.remove();
        }
        return out;
    }""", [str(n) for n in names])
    states = {s: colours[s] for s in ("waiting", "running", "delayed", "dead", "completed")}
    assert len(set(states.values())) == 5  # one colour each
    assert colours["cancelled"] == colours["expired"] not in states.values()
    assert set(EVENT_COLOUR) == set(Event)
    assert {e.value: colours[e] for e in Event} == {
        e.value: colours[s] for e, s in EVENT_COLOUR.items()}
    assert colours["paused"] == colours["stale"] == colours["blocked"] == states["delayed"]
    assert colours["gone"] == colours["cancelled"]
    # The page's own rows wear them too.
    site.api.post("/jobs/emails", json={"payload": {"to": "colour@example.com"}})
    started = page.wait_for_selector("#events tr[data-event=started] .badge")
    assert started.evaluate("b => getComputedStyle(b).backgroundColor") == states["running"]


def test_a_workflows_graph_shows_each_steps_state(page: Page, site: Site) -> None:
    steps = [{"name": "a", "type": "emails", "payload": {"to": "a@example.com"}, "id": "wf-a"},
             {"name": "b", "type": "emails", "payload": {"to": "b@example.com"}, "after": ["a"]},
             {"name": "c", "type": "emails", "payload": {"to": "c@example.com"}, "after": ["a"]},
             {"name": "zip", "type": "zips", "payload": {}, "after": ["b", "c"], "id": "wf-zip"},
             {"name": "notify", "type": "zips", "payload": {}, "after": ["zip"]}]
    r = site.api.post("/workflows", json={"steps": steps})
    assert r.status_code == 201, r.text
    poll(lambda: site.api.get("/jobs/zips/wf-zip").json()["state"] == "waiting", timeout=20)
    page.goto(f"{site.url}/ui#/job/zips/wf-zip")
    page.wait_for_selector("#workflow .wf-node")
    columns = page.locator("#workflow .wf-col")
    assert columns.count() == 4  # a; b and c; zip; notify
    assert columns.nth(1).locator(".wf-node").count() == 2
    states = page.locator("#workflow .wf-node .badge").all_inner_texts()
    assert sorted(states) == ["blocked", "completed", "completed", "completed", "waiting"]
    assert page.locator("#workflow .wf-node.here").get_attribute("data-ref") == "zips/wf-zip"
    page.locator("#workflow").scroll_into_view_if_needed()
    _shot(page, site, "workflow")
    page.click("#workflow .wf-node a:has-text('wf-a')")
    page.wait_for_selector("#job-id:has-text('wf-a')")
    page.goto(f"{site.url}/ui#/type/zips?state=blocked")
    page.wait_for_selector("#policy:has-text('waiting for their parents')")
    assert page.locator("#jobs tbody tr").count() == 1  # the blocked tab lists it


def test_a_types_limits_show_what_they_hold(page: Page, site: Site) -> None:
    assert site.api.post("/jobs/videos", json={"payload": {}, "id": "limits-v"}).status_code == 201
    poll(lambda: site.api.get("/jobs/videos/limits-v").json()["state"] == "running", timeout=10)
    page.goto(f"{site.url}/ui#/type/videos")
    page.wait_for_selector("#policy:has-text('max running')")
    facts = page.inner_text("#policy")
    assert "1 of 2 running" in facts and "100/s" in facts
    site.api.delete("/jobs/videos/limits-v")

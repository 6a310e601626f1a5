"""The CLI as a user runs it: subprocesses, real server, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from streamjobs import Producer
from streamjobs.admin import delete_type
from streamjobs.cli import parse_args
from streamjobs.contract import Failure
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import FailArgs, FailItem, Scripts
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio


def cli(*args: str, url: str | None, cwd: Path = ROOT, stdin: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    full_env.update(env)
    if url:
        full_env["STREAMJOBS_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "streamjobs", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60, input=stdin)


def one_line_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and text in lines[-1], res.stderr


def test_enqueue_then_status(redis_url: str, type_name: str) -> None:
    res = cli("enqueue", type_name, '{"to":"a@b.c"}', "--id", "job-1", url=redis_url)
    assert res.returncode == 0 and res.stdout.strip() == "job-1"
    res = cli("status", type_name, "job-1", url=redis_url)
    assert res.returncode == 0
    st = orjson.loads(res.stdout)
    assert st["state"] == "waiting" and st["payload"] == {"to": "a@b.c"}
    dup = cli("enqueue", type_name, "{}", "--id", "job-1", url=redis_url)
    one_line_error(dup, "duplicate")


def test_enqueue_delay_shows_delayed(redis_url: str, type_name: str) -> None:
    job_id = cli("enqueue", type_name, "1", "--delay", "60", url=redis_url).stdout.strip()
    st = orjson.loads(cli("status", type_name, job_id, url=redis_url).stdout)
    assert st["state"] == "delayed" and st["due_at"] > st["enqueued_at"]


def test_enqueue_dedup_cancel_and_list_expired(redis_url: str, type_name: str) -> None:
    first = cli("enqueue", type_name, "1", "--dedup-key", "k", "--dedup-mode", "throttle",
                "--dedup-ttl", "60", "--expires-in", "30", url=redis_url)
    again = cli("enqueue", type_name, "2", "--dedup-key", "k", url=redis_url)
    job_id = first.stdout.strip()
    assert first.returncode == 0 and again.returncode == 0
    assert again.stdout.startswith(f"{job_id} deduplicated")
    later = cli("enqueue", type_name, "3", "--delay", "60", url=redis_url).stdout.strip()
    res = cli("cancel", type_name, later, url=redis_url)
    assert res.returncode == 0 and res.stdout.strip() == f"{later} (delayed): cancelled"
    one_line_error(cli("cancel", type_name, later, url=redis_url), "cancelled")
    # A delayed job past its expiry ends expired when promoted; list shows it.
    expiring = cli("enqueue", type_name, "4", "--delay", "0.1", "--expires-in", "0.05",
                   url=redis_url).stdout.strip()
    time.sleep(0.2)
    anyio.run(_promote, redis_url, type_name)
    listed = orjson.loads(cli("list", type_name, "--state", "expired", url=redis_url).stdout)
    assert [j["id"] for j in listed["jobs"]] == [expiring]


async def _promote(url: str, type_name: str) -> None:
    r = AsyncRedis.from_url(url)
    try:
        await Scripts(r).promote(TypeKeys("sj", type_name))
    finally:
        await r.aclose()


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("enqueue", "bad type!", "{}"), "invalid job type"),
        (("enqueue", "ok", "{not json"), "invalid JSON payload"),
        (("status", "ok", "missing-id"), "no job 'missing-id'"),
        (("dlq", "purge", "ok"), "--yes"),
        (("dlq", "retry", "ok", "nope"), "not found"),
        (("worker", "no_such_module_xyz"), "cannot import handler module"),
    ],
)
def test_bad_input_is_one_line(redis_url: str, args: tuple[str, ...], text: str) -> None:
    one_line_error(cli(*args, url=redis_url), text)


def test_unreachable_server_is_one_line() -> None:
    one_line_error(cli("stats", url="redis://127.0.0.1:1/0"), "cannot reach the server")


def test_unknown_setting_is_one_line(redis_url: str) -> None:
    one_line_error(cli("stats", url=redis_url, STREAMJOBS_REDIS_ULR="x"), "unknown setting")


def test_no_server_configured_is_one_line(tmp_path: Any) -> None:
    one_line_error(cli("stats", url=None, STREAMJOBS_DATA_DIR=str(tmp_path)), "no server")


async def _dead_jobs(redis_url: str, type_name: str, n: int) -> list[str]:
    async with Producer(redis_url) as p:
        ids = [await p.enqueue(type_name, {"i": i}) for i in range(n)]
        tk = TypeKeys("sj", type_name)
        s = Scripts(p.redis)
        resp = await p.redis.xreadgroup(GROUP, "c", {tk.stream: ">"}, count=n)
        items = [FailItem(entry.decode(), job_id, FailArgs(f"KeyError: {job_id}", "tb", Failure.PERMANENT))
                 for (entry, _), job_id in zip(resp[0][1], ids, strict=True)]
        await s.fail(tk, GROUP, "c", items, max_attempts=3, immediate_retries=0,
                     backoff_base_ms=0, backoff_cap_ms=0, jitter=0)
    return ids


async def test_dlq_list_show_retry_purge(redis_url: str, type_name: str) -> None:
    ids = await _dead_jobs(redis_url, type_name, 3)
    res = cli("dlq", "list", type_name, "--count", "2", url=redis_url)
    assert res.returncode == 0
    assert ids[0] in res.stdout and ids[1] in res.stdout and "--after" in res.stdout
    shown = orjson.loads(cli("dlq", "show", type_name, ids[0], url=redis_url).stdout)
    assert shown["state"] == "dead" and shown["traceback"] == "tb" and shown["payload"] == {"i": 0}
    assert cli("dlq", "retry", type_name, ids[0], url=redis_url).returncode == 0
    res = cli("dlq", "retry", type_name, "--all", "--error-contains", ids[1], url=redis_url)
    assert res.stdout.strip() == "retried 1"
    res = cli("dlq", "purge", type_name, "--yes", url=redis_url)
    assert res.stdout.strip() == "purged 1"
    stats = cli("stats", url=redis_url).stdout
    row = next(line for line in stats.splitlines() if type_name in line).split()
    assert row[1:] == ["2", "0", "0", "0", "0", "0", "0", "0", "False"]
    # waiting running delayed dead completed cancelled expired paused


def test_version() -> None:
    res = cli("--version", url=None)
    assert res.returncode == 0 and res.stdout.startswith("streamjobs 0.")


def test_connection_error_hides_the_password() -> None:
    res = cli("stats", url="redis://admin:s3cret@127.0.0.1:1/0")
    one_line_error(res, "cannot reach the server")
    assert "s3cret" not in res.stderr and "admin:***@127.0.0.1" in res.stderr


def test_cli_finds_the_embedded_server_from_a_subdirectory(redis_url: str, tmp_path: Path,
                                                           type_name: str) -> None:
    (tmp_path / ".streamjobs").mkdir()
    (tmp_path / ".streamjobs" / "server.url").write_text(redis_url + "\n")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    res = cli("enqueue", type_name, "{}", "--id", "up-1", url=None, cwd=deep)
    assert res.returncode == 0 and res.stdout.strip() == "up-1", res.stderr
    # An explicit STREAMJOBS_DATA_DIR is where the CLI looks, and nowhere else.
    res = cli("stats", url=None, cwd=deep, STREAMJOBS_DATA_DIR=str(deep / ".streamjobs"))
    one_line_error(res, "no server")


def test_enqueue_reads_the_payload_from_a_file_or_stdin(redis_url: str, type_name: str,
                                                        tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"from": "file"}')
    assert cli("enqueue", type_name, f"@{tmp_path / 'p.json'}", "--id", "f",
               url=redis_url).returncode == 0
    assert cli("enqueue", type_name, "-", "--id", "s", url=redis_url,
               stdin='{"from": "stdin"}').returncode == 0
    for job_id, origin in (("f", "file"), ("s", "stdin")):
        st = orjson.loads(cli("status", type_name, job_id, url=redis_url).stdout)
        assert st["payload"] == {"from": origin}
    one_line_error(cli("enqueue", type_name, f"@{tmp_path / 'nope.json'}", url=redis_url),
                   "cannot read payload")


def test_bench_passes_its_own_options_through() -> None:
    args = parse_args(["-v", "bench", "--quick", "--workloads", "drain_noop"])
    assert args.command == "bench" and args.bench_args == ["--quick", "--workloads",
                                                           "drain_noop"]
    assert parse_args(["--url", "redis://x", "bench"]).bench_args == []


async def test_types_delete_removes_every_key_of_the_type_only(redis_url: str,
                                                               type_name: str) -> None:
    other = type_name + "-other"
    await _dead_jobs(redis_url, type_name, 2)
    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {"later": True}, delay=60)
        await p.enqueue(type_name, {"now": True})
        await p.enqueue(other, {"keep": True})
    r = redis.Redis.from_url(redis_url)
    try:
        assert len(r.keys(f"sj:{{{type_name}}}:*")) >= 5
        one_line_error(cli("types", "delete", type_name, url=redis_url), "--yes")
        res = cli("types", "delete", type_name, "--yes", url=redis_url)
        assert res.returncode == 0 and "deleted type" in res.stdout, res.stderr
        assert r.keys(f"sj:{{{type_name}}}:*") == []
        assert not r.sismember("sj:types", type_name) and r.sismember("sj:types", other)
        assert r.xlen(f"sj:{{{other}}}:stream") == 1
    finally:
        r.close()


async def test_delete_type_python_api_in_batches(r: Any, type_name: str) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(1_200):
            pipe.hset(f"sj:{{{type_name}}}:job:{i}", "state", "completed")
        await pipe.execute()
    await r.sadd("sj:types", type_name)
    assert await delete_type(r, type_name) == 1_200
    assert await r.exists(f"sj:{{{type_name}}}:job:7") == 0


def test_watch_prints_the_events(redis_url: str, type_name: str) -> None:
    cli("enqueue", type_name, "{}", "--id", "w-1", url=redis_url)
    cli("enqueue", type_name, "{}", "--id", "w-2", url=redis_url)
    res = cli("watch", type_name, "--since", "0", "--count", "2", url=redis_url)
    assert res.returncode == 0, res.stderr
    lines = [orjson.loads(x) for x in res.stdout.splitlines()]
    assert [(e["event"], e["id"], e["type"]) for e in lines] == [
        ("enqueued", "w-1", type_name), ("enqueued", "w-2", type_name)]


def test_pause_resume_and_schedules(redis_url: str, type_name: str) -> None:
    assert cli("pause", type_name, url=redis_url).stdout.strip() == f"paused {type_name}"
    assert "already paused" in cli("pause", type_name, url=redis_url).stdout
    stats = cli("stats", url=redis_url).stdout
    row = next(line for line in stats.splitlines() if type_name in line)
    assert row.split()[-1] == "True"
    assert cli("resume", type_name, url=redis_url).stdout.strip() == f"resumed {type_name}"
    name = "c-" + type_name
    added = cli("schedule", "add", name, type_name, '{"k": 1}', "--cron", "*/10 * * * * *",
                "--tz", "Europe/Paris", url=redis_url)
    assert added.returncode == 0, added.stderr
    assert orjson.loads(added.stdout)["next_run_ms"] % 10_000 == 0
    listed = [orjson.loads(line) for line in
              cli("schedule", "list", url=redis_url).stdout.splitlines()]
    assert {"name": name, "cron": "*/10 * * * * *"}.items() <= next(
        s for s in listed if s["name"] == name).items()
    assert orjson.loads(cli("schedule", "pause", name, url=redis_url).stdout)["paused"]
    assert orjson.loads(cli("schedule", "resume", name, url=redis_url).stdout)["next_run_ms"]
    job_id = cli("schedule", "run-now", name, url=redis_url).stdout.strip()
    st = orjson.loads(cli("status", type_name, job_id, url=redis_url).stdout)
    assert st["payload"] == {"k": 1}
    assert cli("schedule", "remove", name, url=redis_url).stdout.strip() == f"removed {name}"
    one_line_error(cli("schedule", "remove", name, url=redis_url), "no schedule")
    one_line_error(cli("schedule", "add", "x" + name, type_name, "--cron", "bad",
                       url=redis_url), "invalid cron")


def test_api_workers_serve_one_port_from_several_processes(redis_url: str,
                                                           type_name: str) -> None:
    import time

    import httpx

    from streamjobs.embedded import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamjobs", "--url", redis_url, "api", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ids = time.monotonic() + 30, []
        while time.monotonic() < deadline and len(ids) < 20:
            try:
                res = httpx.post(f"http://127.0.0.1:{port}/jobs/{type_name}",
                                 json={"payload": {"n": len(ids)}}, timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert res.status_code == 201, res.text
            ids.append(res.json()["id"])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert len(set(ids)) == 20
    assert err.count("Started server process") == 2, err
    r = redis.Redis.from_url(redis_url)
    assert r.xlen(TypeKeys("sj", type_name).stream) == 20


# ---- terminal views (rich) ------------------------------------------------------------


async def test_jobs_pages_through_a_type(redis_url: str, type_name: str) -> None:
    async with Producer(redis_url) as p:
        for i in range(25):
            await p.enqueue(type_name, {"n": i}, job_id=f"job-{i:02d}")
    first = cli("jobs", type_name, "--limit", "10", url=redis_url, COLUMNS="200")
    assert first.returncode == 0, first.stderr
    assert [f"job-{i:02d}" in first.stdout for i in range(12)] == [True] * 10 + [False] * 2
    cursor = first.stdout.rsplit("--cursor '", 1)[1].split("'")[0]
    second = cli("jobs", type_name, "--limit", "10", "--cursor", cursor, url=redis_url,
                 COLUMNS="200")
    assert "job-10" in second.stdout and "job-09" not in second.stdout
    dead = cli("jobs", type_name, "--state", "dead", url=redis_url)
    assert dead.returncode == 0 and f"no dead jobs of {type_name}" in dead.stdout
    bad = cli("jobs", type_name, "--state", "lost", url=redis_url)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


async def test_top_shows_the_last_events_of_its_types(redis_url: str, type_name: str) -> None:
    from rich.console import Console

    from streamjobs import Event, JobEvent
    from streamjobs.connection import client_from_url
    from streamjobs.events import switch_events
    from streamjobs.terminal import EVENT_STYLE, STATE_STYLE, events_table

    quiet = f"{type_name}-quiet"
    async with Producer(redis_url) as p:
        await p.enqueue(quiet, {})
        r = client_from_url(redis_url)
        try:
            await switch_events(r, TypeKeys("sj", quiet), on=False)
        finally:
            await r.aclose()
        await p.enqueue(type_name, {}, job_id="evt-1")
        await p.cancel(type_name, "evt-1")
    res = cli("top", "--iterations", "1", "--events", "5", url=redis_url, COLUMNS="250")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "last events" in line)
    rows = [line for line in lines[start:] if "evt-1" in line]
    assert len(rows) == 2 and type_name in rows[0]
    assert "cancelled" in rows[0] and "enqueued" in rows[1]  # newest first
    below = "\n".join(lines[start:])  # other tests' types may have their events off too
    assert "events off: " in below and quiet in below.split("events off: ", 1)[1]
    hidden = cli("top", "--iterations", "1", "--events", "0", url=redis_url, COLUMNS="250")
    assert hidden.returncode == 0 and "last events" not in hidden.stdout
    one_line_error(cli("top", "--events", "-1", url=redis_url), "--events")
    console = Console(width=120, record=True)
    console.print(events_table([JobEvent(type_name, "5-0", "progress", "evt-2", 1, 0,
                                         {"progress": "0.5", "message": "half way"})], []))
    console.print(events_table([], []))
    shown = console.export_text()
    assert "50% half way" in shown and "last events: none yet" in shown
    # An event's colour is its state's, as in the web dashboard.
    assert set(EVENT_STYLE) == set(Event)
    assert EVENT_STYLE[Event.STARTED] == STATE_STYLE["running"]
    assert EVENT_STYLE[Event.RETRYING] == STATE_STYLE["delayed"]
    assert EVENT_STYLE[Event.FAILED] == STATE_STYLE["dead"]


async def test_workers_and_top_show_what_runs_now(redis_url: str, type_name: str) -> None:
    import anyio

    from streamjobs import Job, Registry, Worker
    from tests.helpers import running, wait_for

    reg = Registry()
    release = anyio.Event()

    @reg.handler(type_name)
    async def slow(job: Job) -> None:
        await release.wait()

    async with Producer(redis_url) as p:
        await p.enqueue(type_name, {}, job_id="busy-1")
    async with running(Worker(redis_url, reg, name="box:77", concurrency=2)):

        async def shown() -> bool:
            res = await anyio.to_thread.run_sync(
                lambda: cli("workers", url=redis_url, COLUMNS="250"))
            return f"{type_name}/busy-1" in res.stdout

        await wait_for(shown, timeout=10)
        res = await anyio.to_thread.run_sync(
            lambda: cli("top", "--iterations", "2", "--interval", "0.1", url=redis_url,
                        COLUMNS="250"))
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("streamjobs top") >= 1 and type_name in res.stdout
        assert "box:77" in res.stdout and "1/2" in res.stdout
        events = res.stdout.rsplit("last events", 1)[1]  # newest first: started, enqueued
        busy = [line for line in events.splitlines() if "busy-1" in line]
        assert len(busy) == 2 and "started" in busy[0] and "enqueued" in busy[1]
        release.set()
    none = cli("workers", url=redis_url)
    assert none.returncode == 0 and "box:77" not in none.stdout
    bad = cli("top", "--interval", "0", url=redis_url)
    one_line_error(bad, "--interval")

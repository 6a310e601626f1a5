"""The CLI as a user runs it: subprocesses, real server, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from streamjobs import Producer
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import FailArgs, FailItem, Scripts
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio


def cli(*args: str, url: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    full_env.update(env)
    if url:
        full_env["STREAMJOBS_REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "streamjobs", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


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
        items = [FailItem(entry.decode(), job_id, FailArgs(f"KeyError: {job_id}", "tb", "dead"))
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
    assert row[1:] == ["2", "0", "0", "0", "0"]  # waiting running delayed dead completed

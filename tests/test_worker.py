"""The worker in-process against a real server: outcomes, retries, timeouts, shutdown."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs import Job, PermanentError, Producer, Registry, RetryAfter, Settings, Worker
from streamjobs.contract import JobState
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import AckItem, Scripts
from tests.helpers import FAST, job_state, pending, running, stat, wait_equal, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


async def test_success_records_result(redis_url: str, producer: Producer, type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> dict[str, Any]:
        return {"double": job.payload["n"] * 2}

    job_id = await producer.enqueue(type_name, {"n": 21})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)
    st = await producer.status(type_name, job_id)
    # A completed record says how many attempts it took, under which limit (the policy's).
    assert st is not None and st.result == {"double": 42}
    assert (st.attempts, st.max_attempts) == (1, 3)


async def test_retry_then_success(redis_url: str, producer: Producer, type_name: str) -> None:
    reg = Registry()
    attempts: list[int] = []

    @reg.handler(type_name, max_attempts=3, immediate_retries=0, **FAST)
    async def h(job: Job) -> str:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise ValueError("first try fails")
        return "ok"

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)
    st = await producer.status(type_name, job_id)
    assert attempts == [1, 2]
    assert st is not None and st.attempts == 2 and st.error == "ValueError: first try fails"
    assert st.max_attempts == 3


async def test_exhaustion_goes_dead_with_error(redis_url: str, producer: Producer,
                                               type_name: str) -> None:
    reg = Registry()
    calls = []

    @reg.handler(type_name, max_attempts=3, immediate_retries=1, **FAST)
    async def h(job: Job) -> None:
        calls.append(job.attempt)
        raise RuntimeError(f"broken on attempt {job.attempt}")

    job_id = await producer.enqueue(type_name, {"x": 1})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.DEAD)
    st = await producer.status(type_name, job_id)
    assert calls == [1, 2, 3]
    assert st is not None and st.attempts == 3 and st.reason == "attempts exhausted"
    assert st.error == "RuntimeError: broken on attempt 3"
    assert st.traceback and "RuntimeError" in st.traceback and st.payload == {"x": 1}


async def test_permanent_error_skips_retries(redis_url: str, producer: Producer,
                                             type_name: str) -> None:
    reg = Registry()
    calls = []

    @reg.handler(type_name, max_attempts=5, **FAST)
    async def h(job: Job) -> None:
        calls.append(1)
        raise PermanentError("bad input")

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.DEAD)
    st = await producer.status(type_name, job_id)
    assert len(calls) == 1 and st is not None and st.reason == "permanent"


@pytest.mark.parametrize(
    ("policy_timeout", "job_timeout"),
    [(0.2, None), (60.0, 0.2)],  # the type's policy; the entry's own timeout field wins
    ids=["policy", "per-job-field"],
)
async def test_timeout_fails_the_attempt(redis_url: str, producer: Producer, type_name: str,
                                         policy_timeout: float, job_timeout: float | None
                                         ) -> None:
    reg = Registry()

    @reg.handler(type_name, max_attempts=1, timeout=policy_timeout, **FAST)
    async def h(job: Job) -> None:
        await anyio.sleep(30)

    job_id = await producer.enqueue(type_name, {}, timeout=job_timeout)
    t0 = time.monotonic()
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.DEAD)
    assert time.monotonic() - t0 < 5
    st = await producer.status(type_name, job_id)
    assert st is not None and st.error is not None and "ran over 0.2s" in st.error


async def test_retry_after(redis_url: str, producer: Producer, type_name: str) -> None:
    reg = Registry()
    starts: list[float] = []

    @reg.handler(type_name, **FAST)
    async def h(job: Job) -> None:
        starts.append(time.monotonic())
        if job.attempt == 1:
            raise RetryAfter(0.5)

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.45


async def test_delayed_job_never_runs_early(redis_url: str, producer: Producer,
                                            type_name: str) -> None:
    reg = Registry()
    started: list[float] = []

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        started.append(time.time())

    t0 = time.time()
    job_id = await producer.enqueue(type_name, {}, delay=0.6)
    async with running(Worker(redis_url, reg)):
        assert await job_state(producer, type_name, job_id) is JobState.DELAYED
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)
    assert started[0] - t0 >= 0.59


async def test_run_at_in_the_past_runs_now(redis_url: str, producer: Producer,
                                           type_name: str) -> None:
    reg = Registry()

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        return None

    job_id = await producer.enqueue(type_name, {}, run_at=time.time() - 60)
    assert await job_state(producer, type_name, job_id) is JobState.WAITING
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)


async def test_plain_xadd_from_outside_is_processed(redis_url: str, r: Redis,
                                                    producer: Producer, type_name: str) -> None:
    reg = Registry()
    seen: list[Job] = []

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        seen.append(job)

    tk = TypeKeys("sj", type_name)
    # Written before any worker or group existed: the group starts at id 0.
    entry = (await r.xadd(tk.stream, {"payload": '{"n":1}', "traceparent": "00-x"})).decode()
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, entry, JobState.COMPLETED)
    assert seen[0].payload == {"n": 1} and seen[0].id == entry
    assert dict(seen[0].headers) == {"traceparent": "00-x"} and seen[0].attempt == 1


MALFORMED = [
    ({"other": "x"}, "no payload"),
    ({"payload": "{not json"}, "not valid JSON"),
    ({"payload": "1", "max_attempts": "many"}, "max_attempts b'many' is not an integer"),
    ({"payload": "1", "timeout": "-3"}, "timeout b'-3' is not a positive decimal"),
    ({"payload": "1", "attempts": "x"}, "attempts b'x' is not an integer"),
    ({"payload": '"' + "a" * 5000 + '"'}, "over the limit of 1024"),
]


async def test_malformed_entries_go_dead_and_worker_keeps_running(
    redis_url: str, r: Redis, producer: Producer, type_name: str
) -> None:
    reg = Registry()
    good: list[Any] = []

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        good.append(job.payload)

    tk = TypeKeys("sj", type_name)
    entries = [(await r.xadd(tk.stream, f)).decode() for f, _ in MALFORMED]
    settings = Settings(max_payload_bytes=1024)
    async with running(Worker(redis_url, reg, settings=settings)):
        ok = await producer.enqueue(type_name, {"good": True})
        await wait_state(producer, type_name, ok, JobState.COMPLETED)
        for entry, (_, why) in zip(entries, MALFORMED, strict=True):
            await wait_state(producer, type_name, entry, JobState.DEAD)
            st = await producer.status(type_name, entry)
            assert st is not None and st.reason == "malformed" and why in (st.error or "")
    assert good == [{"good": True}]
    assert await r.xlen(tk.dead) == len(MALFORMED)


async def test_sync_handler_runs_in_a_thread(redis_url: str, producer: Producer,
                                             type_name: str) -> None:
    reg = Registry()
    threads: list[str] = []

    @reg.handler(type_name)
    def h(job: Job) -> int:
        threads.append(threading.current_thread().name)
        time.sleep(0.01)
        return 7

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.COMPLETED)
    assert threads and threads[0] != threading.main_thread().name
    st = await producer.status(type_name, job_id)
    assert st is not None and st.result == 7


async def test_concurrency_bounds_fetching(redis_url: str, r: Redis, producer: Producer,
                                           type_name: str) -> None:
    reg = Registry()
    running_now = 0
    peak = 0

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await anyio.sleep(0.05)
        running_now -= 1

    await producer.enqueue_many(type_name, [{"i": i} for i in range(12)])
    tk = TypeKeys("sj", type_name)
    max_pending = 0
    async with running(Worker(redis_url, reg, concurrency=3)):
        for _ in range(40):
            max_pending = max(max_pending, (await r.xpending(tk.stream, GROUP))["pending"])
            await anyio.sleep(0.01)
        await wait_equal(lambda: stat(r, tk, "completed"), 12)
    assert peak == 3 and max_pending <= 3 + 3  # in flight + acks not yet flushed


async def test_several_types_in_one_worker(redis_url: str, r: Redis, producer: Producer,
                                           type_name: str) -> None:
    reg = Registry()
    other = type_name + "b"

    @reg.handler(type_name)
    async def h1(job: Job) -> None:
        return None

    @reg.handler(other)
    async def h2(job: Job) -> None:
        return None

    await producer.enqueue_many(type_name, range(5))
    await producer.enqueue_many(other, range(7))
    async with running(Worker(redis_url, reg, concurrency=4)):
        await wait_equal(lambda: stat(r, TypeKeys("sj", type_name), "completed"), 5)
        await wait_equal(lambda: stat(r, TypeKeys("sj", other), "completed"), 7)


async def test_graceful_stop_finishes_in_flight(redis_url: str, producer: Producer,
                                                type_name: str) -> None:
    reg = Registry()
    started = anyio.Event()

    @reg.handler(type_name)
    async def h(job: Job) -> str:
        started.set()
        await anyio.sleep(0.3)
        return "done"

    job_id = await producer.enqueue(type_name, {})
    worker = Worker(redis_url, reg, grace_period=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await started.wait()
        worker.stop()
    assert await job_state(producer, type_name, job_id) is JobState.COMPLETED


async def test_grace_expiry_releases_without_spending_an_attempt(
    redis_url: str, r: Redis, producer: Producer, type_name: str
) -> None:
    reg = Registry()
    started = anyio.Event()

    @reg.handler(type_name)
    async def h(job: Job) -> None:
        started.set()
        await anyio.sleep(30)

    job_id = await producer.enqueue(type_name, {})
    worker = Worker(redis_url, reg, grace_period=0.2)
    t0 = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await started.wait()
        worker.stop()
    assert time.monotonic() - t0 < 5
    tk = TypeKeys("sj", type_name)
    assert (await r.xpending(tk.stream, GROUP))["pending"] == 0
    st = await producer.status(type_name, job_id)
    assert st is not None and st.state is JobState.WAITING and st.attempts == 0
    assert int(await r.hget(tk.stats, "released")) == 1


async def test_reclaimed_job_late_ack_is_rejected(redis_url: str, r: Redis,
                                                  producer: Producer, type_name: str) -> None:
    reg = Registry()
    started, release = anyio.Event(), anyio.Event()

    @reg.handler(type_name, visibility_timeout=60)
    async def h(job: Job) -> None:
        started.set()
        await release.wait()

    job_id = await producer.enqueue(type_name, {})
    tk = TypeKeys("sj", type_name)
    scripts = Scripts(r)
    async with running(Worker(redis_url, reg)):
        await started.wait()
        claimed = await scripts.reclaim(tk, GROUP, "other-worker", 0, 10, 5)
        assert len(claimed.claimed) == 1
        release.set()
        await anyio.sleep(0.3)  # the old worker's ack goes out and is refused
        assert await job_state(producer, type_name, job_id) is JobState.RUNNING
        assert int(await r.hget(tk.stats, "completed") or 0) == 0
    entry = claimed.claimed[0][0]
    assert await scripts.ack(tk, GROUP, "other-worker", 1000, [AckItem(entry, job_id, b"")]) == [0]
    assert int(await r.hget(tk.stats, "completed")) == 1


async def test_long_job_is_touched_and_not_reclaimed_while_its_worker_lives(
    redis_url: str, r: Redis, producer: Producer, type_name: str
) -> None:
    """A job running 4x its visibility timeout stays with its living worker: the toucher
    resets its idle time, so another worker's reclaimer never takes it."""
    reg = Registry()
    runs: list[str] = []

    @reg.handler(type_name, visibility_timeout=0.5, timeout=30)
    async def h(job: Job) -> str:
        runs.append(job.id)
        await anyio.sleep(2.0)
        return "done"

    job_id = await producer.enqueue(type_name, {})
    tk = TypeKeys("sj", type_name)
    async with running(Worker(redis_url, reg, name="holder")):
        await wait_equal(lambda: pending(r, tk, "holder"), 1)
        # A second worker on the same type, whose reclaimer runs every 0.25 s.
        async with running(Worker(redis_url, reg, name="thief")):
            await wait_state(producer, type_name, job_id, JobState.COMPLETED, timeout=10)
    assert runs == [job_id]
    assert await stat(r, tk, "reclaimed") == 0
    st = await producer.status(type_name, job_id)
    assert st is not None and st.result == "done"


async def test_a_result_that_is_not_json_is_a_permanent_error(
    redis_url: str, r: Redis, producer: Producer, type_name: str
) -> None:
    """Retrying would repeat the handler's side effects to return the same value: the job
    goes dead at once, saying why."""
    reg = Registry()
    runs: list[int] = []

    @reg.handler(type_name, max_attempts=3, **FAST)
    async def h(job: Job) -> object:
        runs.append(job.attempt)
        return object()

    job_id = await producer.enqueue(type_name, {})
    async with running(Worker(redis_url, reg)):
        await wait_state(producer, type_name, job_id, JobState.DEAD)
    st = await producer.status(type_name, job_id)
    assert runs == [1]
    assert st is not None and st.reason == "permanent"
    assert st.error is not None and "cannot be stored as the job's result" in st.error

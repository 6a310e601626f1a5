"""Dependencies, chains and groups end to end: a job blocked until its parents end, run
once with their results; each ``on_parent_failure`` policy; a crash between the child's
enqueue and its registration healed by the sweep; a worker SIGKILLed mid-diamond."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

from streamjobs import (
    InvalidArgument,
    Job,
    JobState,
    PermanentError,
    Producer,
    Registry,
    Step,
    Worker,
    chain,
    group,
)
from streamjobs.codes import Code
from streamjobs.contract import Wire
from streamjobs.counts import type_stats
from streamjobs.deps import RECHECK_MS, DependencyRelay
from streamjobs.keys import TypeKeys
from streamjobs.listing import list_jobs
from streamjobs.scripts import EnqueueItem, Scripts
from tests.helpers import running, spawn_worker, stat, wait_equal, wait_for, wait_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio


def _recorder(*types: str, fail: set[str] = frozenset()) -> tuple[Registry, list[Job]]:  # type: ignore[assignment]
    ran: list[Job] = []
    reg = Registry()
    for t in types:

        @reg.handler(t, max_attempts=1)
        async def work(job: Job) -> Any:
            ran.append(job)
            if job.payload in fail:
                raise PermanentError(f"{job.payload} fails")
            return {"from": job.payload, "got": job.parent_result}

    return reg, ran


async def _ran(ran: list[Job], n: int) -> bool:
    return len(ran) >= n


async def test_diamond_runs_the_last_step_once_after_both_with_their_results(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg, ran = _recorder(type_name)
    async with Producer(redis_url) as p:
        ids = await p.workflow([
            Step(type_name, "A", name="A"),
            Step(type_name, "B", name="B", after=["A"]),
            Step(type_name, "C", name="C", after=["A"]),
            Step(type_name, "D", name="D", after=["B", "C"]),
        ])
        assert [ids[n].state for n in "ABCD"] == ["waiting", "blocked", "blocked", "blocked"]
        st = await p.status(type_name, ids["D"])
        assert st is not None and st.state is JobState.BLOCKED and st.payload == "D"
        page = await list_jobs(r, TypeKeys("sj", type_name), JobState.BLOCKED)
        assert {j.id for j in page.jobs} == {ids["B"], ids["C"], ids["D"]}
        assert (await type_stats(r, TypeKeys("sj", type_name))).blocked == 3
        async with running(Worker(redis_url, reg, concurrency=4)):
            await wait_state(p, type_name, ids["D"], JobState.COMPLETED, timeout=10)
            await anyio.sleep(0.3)
    assert [j.payload for j in ran].count("D") == 1
    assert ran[0].payload == "A" and ran[-1].payload == "D"
    d = ran[-1]
    assert d.parent_results == {f"{type_name}/{ids['B']}": {"from": "B", "got": {
        "from": "A", "got": None}}, f"{type_name}/{ids['C']}": {"from": "C", "got": {
            "from": "A", "got": None}}}
    assert set(d.parent_states.values()) == {"completed"}
    tk = TypeKeys("sj", type_name)
    assert await r.hlen(tk.dep_outbox) == 0  # every notice relayed and cleared
    assert await r.hget(tk.job(ids["A"]), "dependents") is None  # the mark is gone
    assert 0 < await r.pttl(tk.dependents(ids["A"])) <= 3_600_000  # kept for the retention
    async with Producer(redis_url) as p:
        a = await p.status(type_name, ids["A"])
        d_status = await p.status(type_name, ids["D"])
    middle = [f"{type_name}/{ids['B']}", f"{type_name}/{ids['C']}"]
    middle.sort()
    assert a is not None
    assert a.dependents == middle
    assert d_status is not None
    assert d_status.parents == middle


async def test_a_chain_of_three_types_passes_each_result_on(
    redis_url: str, type_name: str,
) -> None:
    types = [f"{type_name}-{i}" for i in range(3)]
    reg, ran = _recorder(*types)
    async with Producer(redis_url) as p:
        ids = await p.workflow(chain(*(Step(t, f"s{i}") for i, t in enumerate(types))))
        async with running(Worker(redis_url, reg, concurrency=2)):
            await wait_state(p, types[2], ids["step2"], JobState.COMPLETED, timeout=10)
    assert [j.payload for j in ran] == ["s0", "s1", "s2"]
    assert ran[2].parent_result == {"from": "s1", "got": {"from": "s0", "got": None}}
    res = await _result(redis_url, types[2], ids["step2"])
    assert res["from"] == "s2"


async def _result(url: str, type_: str, job_id: str) -> Any:
    async with Producer(url) as p:
        return await p.result(type_, job_id, timeout=5)


async def test_a_group_callback_runs_once_after_100_members_on_two_workers(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    done = type_name + "-then"
    reg, ran = _recorder(type_name, done, fail={"m7"})
    async with Producer(redis_url) as p:
        ids = await p.workflow(group([Step(type_name, f"m{i}") for i in range(100)],
                                     then=Step(done, "then")))
        async with running(Worker(redis_url, reg, concurrency=8)), \
                running(Worker(redis_url, reg, concurrency=8)):
            await wait_state(p, done, ids["then"], JobState.COMPLETED, timeout=30)
            await anyio.sleep(0.5)
    callbacks = [j for j in ran if j.payload == "then"]
    assert len(callbacks) == 1
    cb = callbacks[0]
    assert len(cb.parent_results) == 100 and len(cb.parent_states) == 100
    states = list(cb.parent_states.values())
    assert states.count("dead") == 1 and states.count("completed") == 99  # a chord: runs
    assert await stat(r, TypeKeys("sj", done), "completed") == 1


@pytest.mark.parametrize(("policy", "child_ends", "runs"), [
    (None, JobState.DEAD, False), ("fail", JobState.DEAD, False),
    ("drop", JobState.CANCELLED, False), ("run", JobState.COMPLETED, True),
])
async def test_a_parent_that_ends_dead_applies_the_childs_policy(
    redis_url: str, r: Redis, type_name: str, policy: str | None, child_ends: JobState,
    runs: bool,
) -> None:
    reg, ran = _recorder(type_name, fail={"parent"})
    async with Producer(redis_url) as p:
        parent = await p.enqueue(type_name, "parent")
        child = await p.enqueue(type_name, "child", after=[(type_name, parent)],
                                on_parent_failure=policy)
        grandchild = await p.enqueue(type_name, "grandchild", after=[f"{type_name}/{child}"])
        async with running(Worker(redis_url, reg, concurrency=2)):
            await wait_state(p, type_name, child, child_ends, timeout=10)
            # the child's own dependents hear of it in turn
            await wait_state(p, type_name, grandchild,
                             JobState.COMPLETED if runs else JobState.DEAD, timeout=10)
        st = await p.status(type_name, child)
    assert st is not None
    assert ("child" in [j.payload for j in ran]) is runs
    if not runs:
        assert st.reason == "parent failed" and f"{type_name}/{parent}" in (st.error or "")
    else:
        child_job = next(j for j in ran if j.payload == "child")
        assert child_job.parent_states == {f"{type_name}/{parent}": "dead"}
        assert child_job.parent_results == {f"{type_name}/{parent}": None}
    assert await r.zcard(TypeKeys("sj", type_name).blocked) == 0


async def test_a_parent_done_already_lets_the_child_start_and_bad_refs_are_refused(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    reg, ran = _recorder(type_name)
    tk = TypeKeys("sj", type_name)
    async with Producer(redis_url) as p:
        parent = await p.enqueue(type_name, "parent")
        async with running(Worker(redis_url, reg)):
            await wait_state(p, type_name, parent, JobState.COMPLETED)
        child = await p.enqueue(type_name, "child", after=[(type_name, parent)])
        assert child.state == "waiting"  # told at once by its registration
        for bad, why in (([(type_name, "nope")], "not known"), (["no-slash"], "type/id"),
                         ([(type_name, parent), f"{type_name}/{parent}"], "twice")):
            with pytest.raises(InvalidArgument, match=why):
                await p.enqueue(type_name, "x", after=bad)
        with pytest.raises(InvalidArgument, match="no delay"):
            await p.enqueue(type_name, "x", after=[(type_name, parent)], delay=5)
        with pytest.raises(InvalidArgument, match="fail, run or drop"):
            await p.enqueue(type_name, "x", after=[(type_name, parent)],
                            on_parent_failure="maybe")
        with pytest.raises(InvalidArgument, match="cycle"):
            await p.workflow([Step(type_name, name="a", after=["b"]),
                              Step(type_name, name="b", after=["a"])])
        with pytest.raises(InvalidArgument, match="no such"):
            await p.workflow([Step(type_name, name="a", after=["zz"])])
    assert await r.xlen(tk.stream) == 1  # only the child: nothing refused was enqueued
    with pytest.raises(Exception, match="depends_on must be"):
        await Scripts(r).enqueue(tk, [EnqueueItem(("payload", "1", "depends_on", "[1]"))])


async def test_a_blocked_job_can_be_cancelled_and_its_dependents_hear_of_it(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    async with Producer(redis_url) as p:
        parent = await p.enqueue(type_name, "parent", delay=60)
        child = await p.enqueue(type_name, "child", after=[(type_name, parent)])
        grandchild = await p.enqueue(type_name, "gc", after=[(type_name, child)],
                                     on_parent_failure="drop")
        assert await p.cancel(type_name, child) == "blocked"
        relay = DependencyRelay(r, Scripts(r), "sj", [TypeKeys("sj", type_name)], 60_000)
        assert await relay.relay() == 1
        st = await p.status(type_name, grandchild)
        assert st is not None and st.state is JobState.CANCELLED
        assert await r.zcard(TypeKeys("sj", type_name).blocked) == 0


async def test_a_lost_registration_is_made_again_by_the_sweep(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    """The producer died between enqueueing the child (blocked) and registering it with
    its parent: the sweep of the child's type registers it, and it runs."""
    tk = TypeKeys("sj", type_name)
    reg, ran = _recorder(type_name)
    async with Producer(redis_url) as p:
        parent = await p.enqueue(type_name, "parent", delay=0.5)
        (res,) = await Scripts(r).enqueue(tk, [EnqueueItem(
            ("payload", '"orphan"', Wire.DEPENDS_ON, f'["{type_name}/{parent}"]'), "kid")])
        assert res.state == "blocked"
        assert await r.exists(tk.dependents(parent)) == 0  # never registered
        await r.zadd(tk.blocked, {"kid": 0})  # as if enqueued long ago
        relay = DependencyRelay(r, Scripts(r), "sj", [tk], 60_000)
        assert await relay.sweep() == 1
        assert await r.smembers(tk.dependents(parent)) == {f"{type_name}/kid".encode()}
        assert await relay.sweep() == 0  # rechecked only after RECHECK_MS
        assert RECHECK_MS >= 10_000
        async with running(Worker(redis_url, reg)):
            await wait_state(p, type_name, "kid", JobState.COMPLETED, timeout=10)


@pytest.mark.slow
async def test_sigkill_of_the_worker_running_a_middle_step(
    redis_url: str, r: Redis, type_name: str, procs: list[Any],
) -> None:
    """A → (B, C) → D with B's first delivery sleeping: the worker running it is
    SIGKILLed; B is reclaimed and completes on another worker; D runs exactly once."""
    tk = TypeKeys("sj", type_name)
    env = {"SJ_TEST_TYPE": type_name, "SJ_VT": "1.5"}
    async with Producer(redis_url) as p:
        a = await p.enqueue(type_name, {"echo": "A"})
        b = await p.enqueue(type_name, {"sleep_first_delivery": 60, "echo": "B"},
                            after=[(type_name, a)])
        c = await p.enqueue(type_name, {"echo": "C"}, after=[(type_name, a)])
        d = await p.enqueue(type_name, {"echo": "D"}, after=[(type_name, b), (type_name, c)])
        victim = spawn_worker(redis_url, "tests.workers", "--concurrency", "4", env=env)
        procs.append(victim)
        await wait_state(p, type_name, c, JobState.COMPLETED, timeout=20)
        await wait_for(lambda: _running(p, type_name, b), timeout=10)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        procs.append(spawn_worker(redis_url, "tests.workers", "--concurrency", "4", env=env))
        await wait_state(p, type_name, d, JobState.COMPLETED, timeout=30)
        await anyio.sleep(1.0)
        st = await p.status(type_name, d)
    assert st is not None and st.attempts == 1
    assert await stat(r, tk, "completed") == 4  # A, B (once, after its reclaim), C, D
    assert await stat(r, tk, "reclaimed") == 1
    await wait_equal(lambda: r.hlen(tk.dep_outbox), 0)


async def _running(p: Producer, type_name: str, job_id: str) -> bool:
    st = await p.status(type_name, job_id)
    return st is not None and st.state is JobState.RUNNING


async def test_http_workflow_and_enqueue_after(redis_url: str, type_name: str) -> None:
    import httpx

    from streamjobs.api.app import create_app
    from streamjobs.config import Settings

    reg, ran = _recorder(type_name)
    app = create_app(redis_url, Settings(redis_url=redis_url))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as client:
        res = await client.post("/workflows", json={"steps": [
            {"name": "a", "type": type_name, "payload": "a"},
            {"name": "b", "type": type_name, "payload": "b", "after": ["a"]},
            {"name": "c", "type": type_name, "payload": "c", "after": ["a", "b"],
             "on_parent_failure": "run", "priority": "high"}]})
        assert res.status_code == 201, res.text
        jobs = res.json()["jobs"]
        assert [jobs[n]["state"] for n in "abc"] == ["waiting", "blocked", "blocked"]
        more = await client.post(f"/jobs/{type_name}", json={
            "payload": "d", "after": [f"{type_name}/{jobs['c']['id']}"]})
        assert more.status_code == 201 and more.json()["state"] == "blocked"
        listed = await client.get(f"/jobs/{type_name}", params={"state": "blocked"})
        assert {j["id"] for j in listed.json()["jobs"]} == {
            jobs["b"]["id"], jobs["c"]["id"], more.json()["id"]}
        for bad in ({"steps": [{"name": "a", "type": type_name, "after": ["a"]}]},
                    {"steps": [{"name": "a", "type": type_name, "after": ["b"]},
                               {"name": "b", "type": type_name, "after": ["a"]}]}):
            refused = await client.post("/workflows", json=bad)
            assert refused.status_code == 422, refused.text
        unknown = await client.post(f"/jobs/{type_name}", json={
            "payload": 1, "after": [f"{type_name}/nope"]})
        assert unknown.status_code == 422 and "not known" in unknown.text
        async with running(Worker(redis_url, reg, concurrency=2)):
            await wait_for(lambda: _ran(ran, 4), timeout=10)
        detail = (await client.get(f"/jobs/{type_name}/{more.json()['id']}")).json()
        assert detail["state"] == "completed"
    assert [j.payload for j in ran] == ["a", "b", "c", "d"]


def test_cli_enqueue_after(redis_url: str, type_name: str) -> None:
    import orjson

    from tests.test_cli import cli

    parent = cli("enqueue", type_name, "1", url=redis_url).stdout.strip()
    child = cli("enqueue", type_name, "2", "--after", f"{type_name}/{parent}",
                "--on-parent-failure", "drop", url=redis_url)
    assert child.returncode == 0, child.stderr
    st = orjson.loads(cli("status", type_name, child.stdout.strip(), url=redis_url).stdout)
    assert st["state"] == "blocked"
    assert "blocked" in cli("stats", url=redis_url).stdout.splitlines()[0]


async def test_the_last_two_parents_told_at_the_same_moment_release_the_child_once(
    redis_url: str, r: Redis, type_name: str,
) -> None:
    """Two workers relaying the last two parents at once, each call repeated: one entry."""
    from streamjobs.connection import client_from_url

    tk = TypeKeys("sj", type_name)
    refs = [f"{type_name}/p{i}" for i in range(3)]
    (res,) = await Scripts(r).enqueue(tk, [EnqueueItem(
        ("payload", "1", Wire.DEPENDS_ON, orjson.dumps(refs).decode()), "kid")])
    assert res.state == "blocked"
    scripts = Scripts(r)
    assert await scripts.parent_done(tk, "kid", refs[0], "completed", "0", 60_000) == (
        Code.OK, "blocked")
    others = [client_from_url(redis_url) for _ in range(4)]
    try:
        answers = await asyncio.gather(*(
            Scripts(c).parent_done(tk, "kid", refs[1 + i % 2], "completed", str(i), 60_000)
            for i, c in enumerate(others)))
    finally:
        for c in others:
            await c.aclose()
    # one call released it; the other new parent counted; the repeats changed nothing
    assert answers.count((Code.OK, "waiting")) == 1
    assert answers.count((Code.OK, "blocked")) == 1
    assert all(code in (Code.ALREADY, Code.WRONG_STATE) for code, _ in answers
               if code is not Code.OK)
    assert await r.xlen(tk.stream) == 1
    (entry,) = await r.xrange(tk.stream)
    assert orjson.loads(entry[1][b"parent_states"]) == dict.fromkeys(refs, "completed")

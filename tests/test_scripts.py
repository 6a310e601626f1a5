"""Each transition on a real server: state before -> call -> state after + code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from streamjobs.codes import Code
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import AckItem, EnqueueItem, FailArgs, FailItem, ReleaseItem, Scripts
from streamjobs.streams import ensure_group

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio
A, B = "consumer-a", "consumer-b"


@dataclass
class Env:
    r: Redis
    tk: TypeKeys
    s: Scripts

    async def enqueue(self, payload: bytes = b'{"n":1}', job_id: str = "", delay_ms: int = 0,
                      extra: tuple[str, ...] = ()) -> str:
        fields: list[Any] = ["payload", payload, *extra]
        if job_id:
            fields += ["id", job_id]
        (res,) = await self.s.enqueue(self.tk, [EnqueueItem(fields, job_id, delay_ms)])
        assert res.code is Code.OK
        return res.job_id

    async def deliver(self, consumer: str = A, count: int = 10) -> list[tuple[str, dict[bytes, bytes]]]:
        resp = await self.r.xreadgroup(GROUP, consumer, {self.tk.stream: ">"}, count=count)
        return [(e.decode(), f) for _, entries in resp for e, f in entries]

    async def record(self, job_id: str) -> dict[str, str]:
        raw = await self.r.hgetall(self.tk.job(job_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def stat(self, name: str) -> int:
        return int(await self.r.hget(self.tk.stats, name) or 0)

    async def pending(self) -> int:
        return int((await self.r.xpending(self.tk.stream, GROUP))["pending"])

    async def fail(self, entry: str, job_id: str, consumer: str = A, mode: str = "retry", **kw: Any) -> Any:
        policy = dict(max_attempts=3, immediate_retries=1, backoff_base_ms=1000,
                      backoff_cap_ms=3_600_000, jitter=0.0)
        policy.update(kw)
        retry_after_ms = policy.pop("retry_after_ms", 0)
        rand = policy.pop("rand", 0.0)
        failure = FailArgs("ValueError: boom", "Traceback...", mode, retry_after_ms)
        [res] = await self.s.fail(self.tk, GROUP, consumer,
                                  [FailItem(entry, job_id, failure, rand)], **policy)
        return res


@pytest.fixture
async def env(r: Redis, type_name: str) -> Env:
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    return Env(r, tk, Scripts(r))


# ---- enqueue ------------------------------------------------------------------------

async def test_enqueue_now_uses_entry_id_and_writes_record(env: Env) -> None:
    job_id = await env.enqueue()
    assert await env.r.xlen(env.tk.stream) == 1
    rec = await env.record(job_id)
    assert rec["state"] == "waiting" and rec["entry"] == job_id and "attempts" not in rec
    assert await env.stat("enqueued") == 1


async def test_enqueue_duplicate_id_is_refused_and_not_counted(env: Env) -> None:
    await env.enqueue(job_id="order-1")
    (res,) = await env.s.enqueue(env.tk, [EnqueueItem(["payload", b"2", "id", "order-1"], "order-1")])
    assert (res.code, res.job_id, res.state) == (Code.DUPLICATE, "order-1", "waiting")
    assert await env.r.xlen(env.tk.stream) == 1
    assert await env.stat("enqueued") == 1


async def test_enqueue_delayed_goes_to_sorted_set(env: Env) -> None:
    job_id = await env.enqueue(b'{"later":true}', delay_ms=60_000)
    assert await env.r.xlen(env.tk.stream) == 0
    assert await env.r.zscore(env.tk.delayed, job_id) is not None
    rec = await env.record(job_id)
    assert rec["state"] == "delayed" and rec["f:payload"] == '{"later":true}'


async def test_enqueue_batch_reports_each_job(env: Env) -> None:
    await env.enqueue(job_id="x")
    items = [EnqueueItem(["payload", b"1"]), EnqueueItem(["payload", b"2", "id", "x"], "x"),
             EnqueueItem(["payload", b"3"], delay_ms=5000)]
    res = await env.s.enqueue(env.tk, items)
    assert [(r.code, r.state) for r in res] == [
        (Code.OK, "waiting"), (Code.DUPLICATE, "waiting"), (Code.OK, "delayed")]


# ---- ack ------------------------------------------------------------------------------

async def test_ack_completes_deletes_entry_and_keeps_result(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver()
    codes = await env.s.ack(env.tk, GROUP, A, 60_000, [AckItem(entry, job_id, b'{"ok":1}')])
    assert codes == [Code.OK]
    assert await env.r.xlen(env.tk.stream) == 0 and await env.pending() == 0
    rec = await env.record(job_id)
    assert rec["state"] == "completed" and rec["result"] == '{"ok":1}'
    assert 0 < await env.r.pttl(env.tk.job(job_id)) <= 60_000
    assert await env.r.zscore(env.tk.done, job_id) is not None
    assert await env.stat("completed") == 1


async def test_ack_from_non_owner_is_rejected_and_not_counted(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver(A)
    assert await env.s.ack(env.tk, GROUP, B, 60_000, [AckItem(entry, job_id, b"")]) == [Code.NOT_OWNER]
    assert await env.pending() == 1
    assert (await env.record(job_id))["state"] == "waiting"
    assert await env.stat("completed") == 0


async def test_ack_twice_counts_once(env: Env) -> None:
    """A replayed ack (its reply lost) is ALREADY: what it was, not refused; counted once."""
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver()
    assert await env.s.ack(env.tk, GROUP, A, 1000, [AckItem(entry, job_id, b"")]) == [Code.OK]
    assert await env.s.ack(env.tk, GROUP, A, 1000, [AckItem(entry, job_id, b"")]) == [Code.ALREADY]
    assert await env.s.ack(env.tk, GROUP, B, 1000, [AckItem(entry, job_id, b"")]) == [Code.NOT_OWNER]
    assert await env.stat("completed") == 1


async def test_ack_with_zero_retention_deletes_record(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver()
    assert await env.s.ack(env.tk, GROUP, A, 0, [AckItem(entry, job_id, b"")]) == [Code.OK]
    assert await env.r.exists(env.tk.job(job_id)) == 0


async def test_ack_of_plain_xadd_creates_record(env: Env) -> None:
    entry = (await env.r.xadd(env.tk.stream, {"payload": "1"})).decode()
    await env.deliver()
    assert await env.s.ack(env.tk, GROUP, A, 60_000, [AckItem(entry, entry, b"")]) == [Code.OK]
    rec = await env.record(entry)
    assert rec["state"] == "completed" and rec["enqueued_at"] == entry.split("-")[0]


# ---- fail -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["retry", "timeout"])
async def test_fail_first_attempt_retries_immediately(env: Env, mode: str) -> None:
    job_id = await env.enqueue(b'{"a":1}', extra=("traceparent", "00-abc"))
    [(entry, _)] = await env.deliver()
    res = await env.fail(entry, job_id, mode=mode)
    assert (res.code, res.state, res.attempts) == (Code.OK, "waiting", 1)
    [(new_entry, fields)] = await env.deliver()
    assert new_entry != entry
    assert fields[b"payload"] == b'{"a":1}' and fields[b"traceparent"] == b"00-abc"
    assert fields[b"id"] == job_id.encode() and fields[b"attempts"] == b"1"
    rec = await env.record(job_id)
    assert rec["state"] == "waiting" and rec["entry"] == new_entry
    assert rec["error"] == "ValueError: boom"
    assert await env.stat("retried") == 1


@pytest.mark.parametrize(
    ("attempts_before", "base", "cap", "jitter", "rand", "expected_delay"),
    [
        (1, 1000, 3_600_000, 0.0, 0.0, 1000),   # first backoff: base
        (2, 1000, 3_600_000, 0.0, 0.0, 2000),   # doubles
        (3, 1000, 3_600_000, 0.0, 0.0, 4000),
        (9, 1000, 5000, 0.0, 0.0, 5000),        # capped
        (2, 1000, 3_600_000, 0.5, 1.0, 1000),   # jitter takes up to half off
    ],
)
async def test_fail_backoff_schedule(env: Env, attempts_before: int, base: int, cap: int,
                                     jitter: float, rand: float, expected_delay: int) -> None:
    job_id = await env.enqueue()
    await env.r.hset(env.tk.job(job_id), "attempts", attempts_before)
    [(entry, _)] = await env.deliver()
    res = await env.fail(entry, job_id, max_attempts=20, backoff_base_ms=base,
                         backoff_cap_ms=cap, jitter=jitter, rand=rand)
    assert res.state == "delayed" and res.attempts == attempts_before + 1
    now_ms = (await env.r.time())[0] * 1000
    due = await env.r.zscore(env.tk.delayed, job_id)
    assert abs((due - now_ms) - expected_delay) < 1100
    assert res.due_at_ms == int(due)
    rec = await env.record(job_id)
    assert rec["state"] == "delayed" and rec["f:payload"] == '{"n":1}'
    assert await env.r.xlen(env.tk.stream) == 0


@pytest.mark.parametrize(
    ("mode", "max_attempts", "reason"),
    [("retry", 1, "attempts exhausted"), ("timeout", 1, "attempts exhausted"),
     ("permanent", 5, "permanent"), ("malformed", 5, "malformed")],
)
async def test_fail_to_dead(env: Env, mode: str, max_attempts: int, reason: str) -> None:
    job_id = await env.enqueue(b'{"x":2}')
    [(entry, _)] = await env.deliver()
    res = await env.fail(entry, job_id, mode=mode, max_attempts=max_attempts)
    assert (res.code, res.state) == (Code.OK, "dead")
    [(_, dead)] = await env.r.xrange(env.tk.dead)
    assert dead[b"reason"] == reason.encode() and dead[b"error"] == b"ValueError: boom"
    assert dead[b"f:payload"] == b'{"x":2}' and dead[b"id"] == job_id.encode()
    rec = await env.record(job_id)
    assert rec["state"] == "dead" and rec["traceback"] == "Traceback..."
    assert await env.r.xlen(env.tk.stream) == 0 and await env.pending() == 0
    assert await env.stat("dead") == 1


async def test_fail_entry_max_attempts_overrides_policy(env: Env) -> None:
    job_id = await env.enqueue(extra=("max_attempts", "1"))
    [(entry, _)] = await env.deliver()
    assert (await env.fail(entry, job_id, max_attempts=10)).state == "dead"


async def test_fail_retry_after(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver()
    res = await env.fail(entry, job_id, mode="after", retry_after_ms=30_000)
    assert res.state == "delayed"
    now_ms = (await env.r.time())[0] * 1000
    assert abs(await env.r.zscore(env.tk.delayed, job_id) - now_ms - 30_000) < 1100


async def test_fail_from_non_owner_is_rejected(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver(A)
    assert (await env.fail(entry, job_id, consumer=B)).code is Code.NOT_OWNER
    assert "attempts" not in await env.record(job_id)
    assert await env.pending() == 1


async def test_fail_batch_reports_each_entry(env: Env) -> None:
    ids = [await env.enqueue() for _ in range(3)]
    delivered = await env.deliver(A)
    await env.s.reclaim(env.tk, GROUP, B, 0, 1, 5)  # B takes the first entry
    items = [FailItem(e, i, FailArgs("E: x", "tb", "retry")) for (e, _), i in zip(delivered, ids, strict=True)]
    res = await env.s.fail(env.tk, GROUP, A, items, max_attempts=3, immediate_retries=1,
                           backoff_base_ms=0, backoff_cap_ms=0, jitter=0.0)
    assert [(r.code, r.state) for r in res] == [
        (Code.NOT_OWNER, ""), (Code.OK, "waiting"), (Code.OK, "waiting")]
    assert await env.stat("retried") == 2


# ---- promote --------------------------------------------------------------------------

async def test_promote_moves_only_due_jobs(env: Env) -> None:
    due = await env.enqueue(b'{"due":1}', delay_ms=1)
    later = await env.enqueue(b'{"later":1}', delay_ms=60_000)
    await env.r.zadd(env.tk.delayed, {due: 0})  # due long ago
    moved, next_in, orphans = await env.s.promote(env.tk)
    assert (moved, orphans) == (1, 0) and 0 < next_in <= 60_000
    [(entry, fields)] = await env.deliver()
    assert fields[b"payload"] == b'{"due":1}' and fields[b"id"] == due.encode()
    rec = await env.record(due)
    assert rec["state"] == "waiting" and rec["entry"] == entry and "f:payload" not in rec
    assert (await env.record(later))["state"] == "delayed"


async def test_promote_is_bounded(env: Env) -> None:
    for _ in range(5):
        job_id = await env.enqueue(delay_ms=1)
        await env.r.zadd(env.tk.delayed, {job_id: 0})
    assert (await env.s.promote(env.tk, limit=2))[0] == 2
    assert await env.r.zcard(env.tk.delayed) == 3


# ---- reclaim --------------------------------------------------------------------------

async def test_reclaim_takes_idle_entries_only(env: Env) -> None:
    await env.enqueue()
    await env.deliver(A)
    res = await env.s.reclaim(env.tk, GROUP, B, 60_000, 10, 3)
    assert res.claimed == [] and res.dead_count == 0
    res = await env.s.reclaim(env.tk, GROUP, B, 0, 10, 3)
    [(entry, fields, deliveries)] = res.claimed
    assert deliveries == 2 and fields[b"payload"] == b'{"n":1}'
    rows = await env.r.xpending_range(env.tk.stream, GROUP, "-", "+", 10)
    assert rows[0]["consumer"] == B.encode()
    assert await env.stat("reclaimed") == 1


async def test_reclaim_dead_letters_poison(env: Env) -> None:
    job_id = await env.enqueue()
    await env.deliver(A)
    for _ in range(2):  # delivered 3 times in all
        assert len((await env.s.reclaim(env.tk, GROUP, B, 0, 10, 3)).claimed) == 1
    res = await env.s.reclaim(env.tk, GROUP, B, 0, 10, 3)
    assert res.dead_count == 1 and res.claimed == []
    [(_, dead)] = await env.r.xrange(env.tk.dead)
    assert dead[b"reason"] == b"poison" and b"delivered 3 times" in dead[b"error"]
    assert (await env.record(job_id))["state"] == "dead"
    assert await env.pending() == 0 and await env.r.xlen(env.tk.stream) == 0


# ---- touch / release ------------------------------------------------------------------

async def test_touch_resets_idle_of_owned_entries_and_reports_lost(env: Env) -> None:
    await env.enqueue()
    await env.enqueue()
    [(e1, _), (e2, _)] = await env.deliver(A)
    await env.s.reclaim(env.tk, GROUP, B, 0, 1, 3)  # B takes e1
    lost = await env.s.touch(env.tk, GROUP, A, [e1, e2])
    assert lost == [e1]
    rows = {r["message_id"].decode(): r for r in
            await env.r.xpending_range(env.tk.stream, GROUP, "-", "+", 10)}
    assert rows[e2]["consumer"] == A.encode() and rows[e2]["times_delivered"] == 1
    assert rows[e1]["consumer"] == B.encode()


async def test_release_hands_back_without_spending_an_attempt(env: Env) -> None:
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver(A)
    assert await env.s.release(env.tk, GROUP, B, [ReleaseItem(entry, job_id)]) == [Code.NOT_OWNER]
    assert await env.s.release(env.tk, GROUP, A, [ReleaseItem(entry, job_id)]) == [Code.OK]
    assert await env.pending() == 0
    [(new_entry, fields)] = await env.deliver(B)
    rec = await env.record(job_id)
    assert rec["entry"] == new_entry and "attempts" not in rec and b"attempts" not in fields
    assert await env.stat("released") == 1


# ---- dead letters -----------------------------------------------------------------------

async def _dead_job(env: Env) -> str:
    job_id = await env.enqueue(b'{"d":1}')
    [(entry, _)] = await env.deliver()
    await env.fail(entry, job_id, mode="permanent")
    return job_id


async def test_dead_retry_moves_back_with_fresh_attempts(env: Env) -> None:
    job_id = await _dead_job(env)
    waiting = await env.enqueue()
    missing = "no-such-job"
    assert await env.s.dead_retry(env.tk, [job_id, waiting, missing]) == [
        Code.OK, Code.WRONG_STATE, Code.NOT_FOUND]
    assert await env.r.xlen(env.tk.dead) == 0
    entries = dict(await env.deliver())
    rec = await env.record(job_id)
    assert rec["state"] == "waiting" and rec["attempts"] == "0"
    assert entries[rec["entry"]][b"payload"] == b'{"d":1}'


async def test_dead_purge_deletes_record_and_entry(env: Env) -> None:
    job_id = await _dead_job(env)
    waiting = await env.enqueue()
    assert await env.s.dead_purge(env.tk, [job_id, waiting, "nope"]) == [
        Code.OK, Code.WRONG_STATE, Code.NOT_FOUND]
    assert await env.r.xlen(env.tk.dead) == 0
    assert await env.r.exists(env.tk.job(job_id)) == 0


# ---- cancel ---------------------------------------------------------------------------

async def test_cancel_by_state(env: Env) -> None:
    waiting = await env.enqueue()
    delayed = await env.enqueue(delay_ms=60_000)
    assert await env.s.cancel(env.tk, GROUP, waiting, 60_000) == (Code.OK, "waiting")
    assert await env.s.cancel(env.tk, GROUP, delayed, 60_000) == (Code.OK, "delayed")
    assert await env.r.xlen(env.tk.stream) == 0 and await env.r.zcard(env.tk.delayed) == 0
    assert (await env.record(waiting))["state"] == "cancelled"
    running = await env.enqueue()
    await env.deliver()
    # A running job: the request is recorded for the worker holding it (stop.lua).
    assert await env.s.cancel(env.tk, GROUP, running, 60_000) == (Code.REQUESTED, "running")
    assert (await env.record(running))["cancel"] == "requested"
    assert await env.r.zscore(env.tk.cancels, running) is not None
    assert await env.s.cancel(env.tk, GROUP, waiting, 60_000) == (Code.WRONG_STATE, "cancelled")
    assert (await env.s.cancel(env.tk, GROUP, "nope", 60_000))[0] is Code.NOT_FOUND


# ---- prune_consumers ------------------------------------------------------------------

async def test_prune_removes_only_idle_consumers_holding_nothing(env: Env) -> None:
    await env.enqueue()
    await env.deliver(A)                                  # A holds one entry
    await env.r.xgroup_createconsumer(env.tk.stream, GROUP, B)  # B holds nothing
    assert await env.s.prune_consumers(env.tk, GROUP, 60_000) == 0  # none idle enough
    assert await env.s.prune_consumers(env.tk, GROUP, 0) == 1
    names = [c["name"].decode() for c in await env.r.xinfo_consumers(env.tk.stream, GROUP)]
    assert names == [A]
    assert await env.pending() == 1


# ---- NOSCRIPT -------------------------------------------------------------------------

async def test_every_wrapper_works_after_script_flush(env: Env) -> None:
    await env.r.script_flush()
    job_id = await env.enqueue()
    [(entry, _)] = await env.deliver()
    await env.r.script_flush()
    assert (await env.fail(entry, job_id)).state == "waiting"
    [(entry, _)] = await env.deliver()
    await env.r.script_flush()
    assert await env.s.touch(env.tk, GROUP, A, [entry]) == []
    await env.r.script_flush()
    assert await env.s.release(env.tk, GROUP, A, [ReleaseItem(entry, job_id)]) == [Code.OK]
    [(entry, _)] = await env.deliver()
    await env.r.script_flush()
    assert (await env.s.reclaim(env.tk, GROUP, A, 0, 10, 5)).claimed
    await env.r.script_flush()
    assert await env.s.ack(env.tk, GROUP, A, 1000, [AckItem(entry, job_id, b"")]) == [Code.OK]
    await env.r.script_flush()
    assert (await env.s.promote(env.tk))[0] == 0
    dead = await _dead_job(env)
    await env.r.script_flush()
    assert await env.s.dead_retry(env.tk, [dead]) == [Code.OK]
    await env.r.script_flush()
    assert await env.s.dead_purge(env.tk, ["nope"]) == [Code.NOT_FOUND]
    await env.r.script_flush()
    assert (await env.s.cancel(env.tk, GROUP, "nope", 0))[0] is Code.NOT_FOUND
    await env.r.script_flush()
    assert await env.s.prune_consumers(env.tk, GROUP, 3_600_000) == 0
    await env.r.script_flush()
    async with env.r.pipeline(transaction=False) as pipe:
        env.s.enqueue_in(pipe, env.tk, [EnqueueItem(["payload", b"1"])])
        [raw] = await pipe.execute()
    assert int(raw[0]) == Code.OK

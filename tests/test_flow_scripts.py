"""Flow control in the scripts: dedup modes (enqueue.lua, and stop.lua for a plain XADD),
expiry before start (stop.lua at start, promote.lua for delayed jobs), cancel of a
running job (cancel.lua records it, stop.lua settles it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from streamjobs.codes import Code
from streamjobs.keys import GROUP, TypeKeys
from streamjobs.scripts import (
    AckItem,
    EnqueueItem,
    EnqueueResult,
    FailArgs,
    FailItem,
    Scripts,
    StopAction,
    StopItem,
    lua_dir,
)
from streamjobs.streams import ensure_group

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.anyio
A = "consumer-a"
TTL = 60_000


class Env:
    def __init__(self, r: Redis, tk: TypeKeys) -> None:
        self.r, self.tk, self.s = r, tk, Scripts(r)

    async def enqueue(self, payload: str = "1", *, job_id: str = "", delay_ms: int = 0,
                      **fields: Any) -> EnqueueResult:
        flat: list[Any] = ["payload", payload]
        for k, v in fields.items():
            flat += [k, str(v)]
        (res,) = await self.s.enqueue(self.tk, [EnqueueItem(flat, job_id, delay_ms)])
        return res

    async def deliver(self) -> list[tuple[str, dict[bytes, bytes]]]:
        resp = await self.r.xreadgroup(GROUP, A, {self.tk.stream: ">"}, count=10)
        return [(e.decode(), f) for _, entries in resp for e, f in entries]

    async def stop(self, entry: str, job_id: str, action: StopAction) -> tuple[Code, str]:
        (res,) = await self.s.stop(self.tk, GROUP, A, TTL, [StopItem(entry, job_id, action)])
        return res.code, res.state

    async def state(self, job_id: str) -> str | None:
        raw = await self.r.hget(self.tk.job(job_id), "state")
        return raw.decode() if raw else None

    async def stat(self, name: str) -> int:
        return int(await self.r.hget(self.tk.stats, name) or 0)


@pytest.fixture
async def env(r: Redis, type_name: str) -> Env:
    tk = TypeKeys("sj", type_name)
    await ensure_group(r, tk)
    return Env(r, tk)


# ---- dedup ----------------------------------------------------------------------------

async def test_throttle_returns_the_existing_job_for_its_window(env: Env) -> None:
    first = await env.enqueue(dedup_key="k", dedup_mode="throttle", dedup_ttl=300)
    again = await env.enqueue("2", dedup_key="k", dedup_mode="throttle", dedup_ttl=300)
    assert first.code is Code.OK
    assert again == (Code.DEDUPLICATED, first.job_id, "waiting")
    assert await env.r.xlen(env.tk.stream) == 1
    assert await env.stat("deduplicated") == 1 and await env.stat("enqueued") == 1
    # Throttle holds while the key lives, even once the job finished.
    [(entry, _)] = await env.deliver()
    await env.s.ack(env.tk, GROUP, A, TTL, [AckItem(entry, first.job_id)])
    assert (await env.enqueue(dedup_key="k", dedup_mode="throttle", dedup_ttl=300)).code \
        is Code.DEDUPLICATED
    await anyio.sleep(0.35)  # the window ends
    later = await env.enqueue(dedup_key="k", dedup_mode="throttle", dedup_ttl=300)
    assert later.code is Code.OK and later.job_id != first.job_id


async def test_unique_holds_while_active_and_every_final_transition_frees_it(env: Env) -> None:
    first = await env.enqueue(dedup_key="u")  # unique is the default mode
    assert (await env.enqueue(dedup_key="u")) == (Code.DEDUPLICATED, first.job_id, "waiting")
    [(entry, _)] = await env.deliver()  # running: still held
    assert (await env.enqueue(dedup_key="u")).code is Code.DEDUPLICATED
    await env.s.ack(env.tk, GROUP, A, TTL, [AckItem(entry, first.job_id)])
    assert await env.r.exists(env.tk.dedup("u")) == 0  # ack freed it
    second = await env.enqueue(dedup_key="u", delay_ms=60_000)
    assert second.code is Code.OK and second.state == "delayed"
    assert (await env.enqueue(dedup_key="u")).job_id == second.job_id
    assert (await env.s.cancel(env.tk, GROUP, second.job_id, TTL))[0] is Code.OK
    assert await env.r.exists(env.tk.dedup("u")) == 0  # cancel freed it
    third = await env.enqueue(dedup_key="u", max_attempts=1)
    [(entry, _)] = await env.deliver()
    [res] = await env.s.fail(env.tk, GROUP, A, [FailItem(entry, third.job_id, FailArgs("x"))],
                             max_attempts=1, immediate_retries=0, backoff_base_ms=1,
                             backoff_cap_ms=1, jitter=0.0)
    assert res.state == "dead"
    assert await env.r.exists(env.tk.dedup("u")) == 0  # dead-lettering freed it


async def test_debounce_replaces_the_payload_and_pushes_the_start_back(env: Env) -> None:
    first = await env.enqueue("1", dedup_key="d", dedup_mode="debounce", delay_ms=1000)
    due1 = int(await env.r.zscore(env.tk.delayed, first.job_id) or 0)
    await anyio.sleep(0.02)
    again = await env.enqueue("2", dedup_key="d", dedup_mode="debounce", delay_ms=5000)
    assert again == (Code.DEDUPLICATED, first.job_id, "delayed")
    assert await env.r.zcard(env.tk.delayed) == 1
    assert int(await env.r.zscore(env.tk.delayed, first.job_id) or 0) >= due1 + 4000
    assert await env.r.hget(env.tk.job(first.job_id), "f:payload") == b"2"
    # Without a delay the job goes to the stream now, with the newest payload.
    now = await env.enqueue("3", dedup_key="d", dedup_mode="debounce")
    assert now == (Code.DEDUPLICATED, first.job_id, "waiting")
    assert await env.r.zcard(env.tk.delayed) == 0
    [(_, fields)] = await env.deliver()
    assert fields[b"payload"] == b"3" and fields[b"id"] == first.job_id.encode()
    # Started: a new enqueue is a new job.
    fresh = await env.enqueue("4", dedup_key="d", dedup_mode="debounce")
    assert fresh.code is Code.OK and fresh.job_id != first.job_id


async def test_plain_xadd_with_a_dedup_key_is_dropped_at_start_while_one_is_active(
    env: Env,
) -> None:
    a = (await env.r.xadd(env.tk.stream, {"payload": "1", "dedup_key": "p"})).decode()
    b = (await env.r.xadd(env.tk.stream, {"payload": "2", "dedup_key": "p"})).decode()
    delivered = dict(await env.deliver())
    assert set(delivered) == {a, b}
    assert await env.stop(a, a, StopAction.START) == (Code.OK, "running")  # takes the key
    assert await env.stop(b, b, StopAction.START) == (Code.OK, "cancelled")
    rec = await env.r.hgetall(env.tk.job(b))
    assert rec[b"reason"].startswith(b"deduplicated") and await env.r.xlen(env.tk.stream) == 1
    assert await env.stat("deduplicated") == 1
    await env.s.ack(env.tk, GROUP, A, TTL, [AckItem(a, a)])
    c = (await env.r.xadd(env.tk.stream, {"payload": "3", "dedup_key": "p"})).decode()
    await env.deliver()
    assert await env.stop(c, c, StopAction.START) == (Code.OK, "running")  # a freed it


# ---- expiry ---------------------------------------------------------------------------

async def test_a_waiting_job_past_expires_at_ends_expired_at_start(env: Env) -> None:
    res = await env.enqueue(expires_in=1)
    keep = await env.enqueue(expires_in=60_000)
    await anyio.sleep(0.01)
    got = dict(await env.deliver())
    assert b"expires_in" not in got[res.job_id] and int(got[res.job_id][b"expires_at"]) > 0
    assert await env.stop(res.job_id, res.job_id, StopAction.START) == (Code.OK, "expired")
    assert await env.stop(keep.job_id, keep.job_id, StopAction.START) == (Code.OK, "running")
    assert await env.state(res.job_id) == "expired" and await env.stat("expired") == 1
    assert await env.r.zscore(env.tk.expired, res.job_id) is not None
    assert await env.r.xlen(env.tk.stream) == 1  # only the job still in time


async def test_a_delayed_job_past_expires_at_ends_expired_at_promote(env: Env) -> None:
    res = await env.enqueue(delay_ms=20, expires_in=10)
    ok = await env.enqueue(delay_ms=20, expires_in=60_000)
    await anyio.sleep(0.05)
    moved, _, _ = await env.s.promote(env.tk, result_ttl_ms=TTL)
    assert moved == 1
    assert await env.state(res.job_id) == "expired" and await env.state(ok.job_id) == "waiting"
    assert await env.r.xlen(env.tk.stream) == 1 and await env.r.zcard(env.tk.delayed) == 0
    assert not [k for k in await env.r.hkeys(env.tk.job(res.job_id)) if k.startswith(b"f:")]


async def test_a_job_that_started_is_not_expired_on_its_retry_or_redelivery(env: Env) -> None:
    res = await env.enqueue(expires_in=30)
    [(entry, _)] = await env.deliver()
    await anyio.sleep(0.05)  # past expires_at, after its start
    [failed] = await env.s.fail(env.tk, GROUP, A, [FailItem(entry, res.job_id, FailArgs("x"))],
                                max_attempts=3, immediate_retries=0, backoff_base_ms=1,
                                backoff_cap_ms=1, jitter=0.0)
    assert failed.state == "delayed"
    await anyio.sleep(0.01)
    assert (await env.s.promote(env.tk, result_ttl_ms=TTL))[0] == 1  # not expired
    [(entry, _)] = await env.deliver()
    assert await env.stop(entry, res.job_id, StopAction.START) == (Code.OK, "running")
    # A first attempt delivered twice (its worker died) may have started: it runs.
    other = await env.enqueue(expires_in=1)
    await anyio.sleep(0.01)
    [(entry, _)] = await env.deliver()
    await env.r.xclaim(env.tk.stream, GROUP, A, 0, [entry])  # a second delivery
    assert await env.stop(entry, other.job_id, StopAction.START) == (Code.OK, "running")


# ---- cancel of a running job ----------------------------------------------------------

async def test_cancel_of_a_running_job_is_settled_by_its_worker(env: Env) -> None:
    res = await env.enqueue(dedup_key="c")
    [(entry, _)] = await env.deliver()
    assert await env.s.cancel(env.tk, GROUP, res.job_id, TTL) == (Code.REQUESTED, "running")
    assert await env.stop(entry, res.job_id, StopAction.HOLD) == (Code.OK, "running")
    assert await env.r.hget(env.tk.job(res.job_id), "cancel") == b"uninterruptible"
    assert await env.stop(entry, res.job_id, StopAction.CANCEL) == (Code.OK, "cancelled")
    assert await env.state(res.job_id) == "cancelled" and await env.stat("cancelled") == 1
    assert await env.r.xlen(env.tk.stream) == 0
    assert (await env.r.xpending(env.tk.stream, GROUP))["pending"] == 0
    assert await env.r.zcard(env.tk.cancels) == 0 and await env.r.exists(env.tk.dedup("c")) == 0
    assert (await env.stop(entry, res.job_id, StopAction.CANCEL))[0] is Code.NOT_OWNER


def test_the_dedup_include_names_the_engines_group() -> None:
    text = (lua_dir() / "includes" / "dedup.lua").read_text()
    assert f"local DEDUP_GROUP = '{GROUP}'" in text

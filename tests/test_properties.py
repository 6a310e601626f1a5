"""Property: whatever a stream holds, every entry ends completed or dead with a reason, the
worker never exits, and a valid job beside them is unaffected.

Hypothesis writes raw entries by plain XADD: field names and values as arbitrary bytes,
the engine's own names among them, numbers of any size, up to 10,000 fields."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamjobs import Job, Producer, Registry, Worker
from streamjobs.connection import client_from_url
from streamjobs.contract import Wire, fields_of, job_id_of
from streamjobs.keys import TypeKeys
from tests.helpers import pending, running, stat, wait_for

NAMES = [w.b for w in Wire]
numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400).map(lambda i: str(i).encode()),
    st.floats().map(lambda f: repr(f).encode()),
    st.decimals(allow_nan=True).map(lambda d: str(d).encode()),
)
values = st.one_of(st.binary(max_size=40), numbers, st.sampled_from([b"1", b'{"a":1}', b""]),
                   st.text(max_size=20).map(str.encode))
names = st.one_of(st.sampled_from(NAMES), st.binary(max_size=12))
small = st.lists(st.tuples(names, values), min_size=1, max_size=10)
many = st.integers(min_value=0, max_value=10_000).map(
    lambda n: [(b"h%d" % i, b"v") for i in range(n)])
entries = st.lists(st.tuples(small, many).map(lambda t: t[0] + t[1]), min_size=1, max_size=6)


def outcome(rec: dict[bytes, bytes], entry: str) -> str | None:
    """'completed' or 'dead:<reason>' when the record holds this entry's end, else None."""
    if rec.get(b"state") == b"completed" and rec.get(b"entry") == entry.encode():
        return "completed"
    if rec.get(b"state") == b"dead" and rec.get(b"reason"):
        return "dead:" + rec[b"reason"].decode()
    return None


async def check(redis_url: str, raw: list[list[tuple[bytes, bytes]]]) -> None:
    type_name = f"p{uuid.uuid4().hex[:12]}"
    tk = TypeKeys("sj", type_name)
    reg = Registry()
    runs: list[str] = []

    @reg.handler(type_name, max_attempts=2, backoff_base=0.01, backoff_cap=0.02,
                 visibility_timeout=5)
    async def h(job: Job) -> None:
        runs.append(job.id)

    r = client_from_url(redis_url)
    try:
        async with Producer(redis_url) as p:
            valid = await p.enqueue(type_name, {"valid": True})
            ids = [(await r.execute_command("XADD", tk.stream, "*", *[x for f in flat for x in f])
                    ).decode() for flat in raw]
            async with running(Worker(redis_url, reg, concurrency=4, block_ms=200)):

                async def settled() -> bool:
                    done = await stat(r, tk, "completed") + await stat(r, tk, "dead")
                    return done >= len(raw) + 1 and await pending(r, tk) == 0

                await wait_for(settled, timeout=30)
        assert runs.count(valid) == 1
        assert await r.xlen(tk.stream) == 0
        for entry, flat in zip(ids, raw, strict=True):
            fields = fields_of([x for f in flat for x in f])
            job_id = job_id_of(entry, fields)
            ends = [outcome(await r.hgetall(tk.job(k)), entry) for k in {job_id, entry}]
            assert any(ends), (entry, flat[:6], ends)
    finally:
        await r.aclose()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(raw=entries)
def test_every_raw_entry_ends_completed_or_dead(redis_url: str, raw: Any) -> None:
    anyio.run(check, redis_url, raw)

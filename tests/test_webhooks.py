"""Webhooks: a local HTTP receiver on loopback, real workers delivering to it."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import pytest

from streamjobs import JobState, PermanentError, Policy, Producer, Registry, Settings, Worker
from streamjobs.errors import ConfigError, InvalidArgument
from streamjobs.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TYPE,
    Webhook,
    sign,
    verify,
)
from tests.helpers import example_run, running, wait_equal, wait_for, wait_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from streamjobs.job import Job

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("webhooks")]

#: Retries in milliseconds: a failing receiver is retried at once, dead after 3 calls.
QUICK = Policy(max_attempts=3, immediate_retries=0, backoff_base=0.02, backoff_cap=0.05,
               jitter=0, timeout=5)


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: records each POST, answers ``statuses`` in turn (the
    last one from then on); while ``hold`` is set, waits for it before answering."""

    statuses: list[int] = field(default_factory=lambda: [200])
    calls: list[Call] = field(default_factory=list)
    hold: asyncio.Event | None = None
    url: str = ""
    #: Call number (1-based) -> the Retry-After header of its answer.
    retry_after: dict[int, str] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.calls.append(Call(headers, body))
            self.times.append(time.monotonic())
            if self.hold is not None:
                await self.hold.wait()
            status = self.statuses[min(len(self.calls), len(self.statuses)) - 1]
            wait = self.retry_after.get(len(self.calls))
            extra = f"retry-after: {wait}\r\n" if wait else ""
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{extra}"
                         "connection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield rec


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """A prefix of the test's own: the delivery type's keys are the test's alone."""
    return Settings(redis_url=redis_url, prefix=f"wh{uuid.uuid4().hex[:8]}",
                    webhook_secret="job-secret")


def worker(settings: Settings, registry: Registry, **kw: Any) -> Worker:
    return Worker(settings.redis_url or "", registry, settings=settings, block_ms=100,
                  webhooks=True, webhook_policy=QUICK, **kw)


def registry_of(type_name: str, fn: Any = None) -> Registry:
    reg = Registry()

    async def ok(job: Job) -> Any:
        return {"echo": job.payload}

    reg.handler(type_name)(fn or ok)
    return reg


async def test_type_webhook_is_called_once_signed(settings: Settings, type_name: str,
                                                  receiver: Receiver) -> None:
    w = worker(settings, registry_of(type_name))
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url, secret="s3cret")
        async with running(w):
            job_id = await p.enqueue(type_name, {"n": 1})
            await wait_for(lambda: len(receiver.calls) == 1)
            await anyio.sleep(0.3)  # no second call
            assert len(receiver.calls) == 1
            call = receiver.calls[0]
            assert call.json["event"] == "completed"
            assert call.json["id"] == job_id and call.json["type"] == type_name
            assert call.json["result"] == {"echo": {"n": 1}} and call.json["attempts"] == 1
            assert call.headers[SIGNATURE_HEADER.lower()] == sign(
                "s3cret", int(call.headers[TIMESTAMP_HEADER.lower()]), call.body)
            assert verify("s3cret", call.headers, call.body)
            assert not verify("other", call.headers, call.body)
            assert not verify("s3cret", call.headers, call.body + b" ")
            delivery = call.headers[DELIVERY_HEADER.lower()]
            await wait_state(p, WEBHOOK_TYPE, delivery, JobState.COMPLETED)
            # The outbox field written before the ack is gone once the delivery is in.
            await wait_equal(lambda: p.redis.hlen(p.keys(type_name).webhook_outbox), 0)
        assert w.metrics.webhooks.labels("ok")._value.get() == 1


async def test_a_high_priority_job_is_notified_once_while_sweeps_run(
        settings: Settings, type_name: str, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job of a priority level settles through its level's stream: the sweep of left
    outbox fields (one outbox per type) must not take its live notice over."""
    from streamjobs import webhooks

    monkeypatch.setattr(webhooks, "OUTBOX_AGE_S", 0.05)
    monkeypatch.setattr(webhooks, "SWEEP_S", 0.02)

    async def slow(job: Job) -> Any:
        await anyio.sleep(0.2)
        return {"echo": job.payload}

    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url)
        async with running(worker(settings, registry_of(type_name, slow))):
            await p.enqueue(type_name, {"n": 1}, priority="high")
            await wait_for(lambda: len(receiver.calls) == 1)
            await anyio.sleep(0.5)
        assert len(receiver.calls) == 1


async def test_a_poison_job_dead_lettered_by_reclaim_is_notified(
        settings: Settings, type_name: str, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker settles a job its reclaim dead-letters as poison: the reclaim script
    leaves the notice in the outbox for the sweep."""
    from streamjobs import webhooks
    from streamjobs.keys import GROUP

    monkeypatch.setattr(webhooks, "SWEEP_S", 0.05)
    reg = Registry()
    reg.handler(type_name, max_deliveries=1, visibility_timeout=0.3)(lambda job: None)
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url)
        job_id = await p.enqueue(type_name, {"n": 1})
        tk = p.keys(type_name)
        # a worker that died running it: delivered once, never settled
        await p.redis.xreadgroup(GROUP, "ghost", {tk.stream: ">"}, count=1)
        await anyio.sleep(0.4)
        async with running(worker(settings, reg)):
            await wait_state(p, type_name, job_id, JobState.DEAD)
            await wait_for(lambda: len(receiver.calls) == 1)
            await anyio.sleep(0.3)
        assert len(receiver.calls) == 1
        call = receiver.calls[0].json
        assert call["event"] == "dead" and call["id"] == job_id
        assert call["reason"] == "poison"


async def test_a_failing_receiver_is_retried_then_succeeds(
        settings: Settings, type_name: str, receiver: Receiver) -> None:
    receiver.statuses = [500, 429, 200]
    receiver.retry_after = {2: "1"}  # the 429 asks for a second: waited
    w = worker(settings, registry_of(type_name))
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url, secret="k")
        async with running(w):
            await p.enqueue(type_name, 1)
            await wait_for(lambda: len(receiver.calls) == 3)
            assert receiver.times[2] - receiver.times[1] >= 0.9
            assert receiver.times[1] - receiver.times[0] < 0.9  # the policy's backoff
            ids = {c.headers[DELIVERY_HEADER.lower()] for c in receiver.calls}
            assert len(ids) == 1  # one delivery, called three times
            await wait_state(p, WEBHOOK_TYPE, ids.pop(), JobState.COMPLETED)
            await anyio.sleep(0.2)
            assert len(receiver.calls) == 3
            assert all(verify("k", c.headers, c.body) for c in receiver.calls)
        assert w.metrics.webhooks.labels("failed")._value.get() == 2
        assert w.metrics.webhooks.labels("ok")._value.get() == 1


async def test_a_receiver_that_keeps_failing_ends_dead_lettered(
        settings: Settings, type_name: str, receiver: Receiver) -> None:
    receiver.statuses = [500]
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url)
        async with running(worker(settings, registry_of(type_name))):
            job_id = await p.enqueue(type_name, 1)
            await wait_for(lambda: len(receiver.calls) == QUICK.max_attempts)
            delivery = receiver.calls[0].headers[DELIVERY_HEADER.lower()]
            await wait_state(p, WEBHOOK_TYPE, delivery, JobState.DEAD)
            st = await p.status(type_name, job_id)
            assert st is not None and st.state == JobState.COMPLETED  # the job is not
        # Unsigned without a secret.
        assert SIGNATURE_HEADER.lower() not in receiver.calls[0].headers


async def test_a_per_job_webhook_reports_a_dead_job(settings: Settings, type_name: str,
                                                    receiver: Receiver) -> None:
    async def boom(job: Job) -> None:
        raise PermanentError("no such user")

    async with Producer(settings.redis_url or "", settings=settings) as p:
        async with running(worker(settings, registry_of(type_name, boom))):
            plain = await p.enqueue(type_name, 0)  # no webhook: no call
            job_id = await p.enqueue(type_name, 1, webhook=receiver.url)
            await wait_for(lambda: len(receiver.calls) == 1)
            await wait_state(p, type_name, plain, JobState.DEAD)
            await anyio.sleep(0.3)
            assert len(receiver.calls) == 1
        call = receiver.calls[0]
        assert call.json["event"] == "dead" and call.json["id"] == job_id
        assert "no such user" in call.json["error"] and call.json["reason"] == "permanent"
        assert verify("job-secret", call.headers, call.body)  # Settings.webhook_secret


async def test_events_filter_and_removal(settings: Settings, type_name: str,
                                         receiver: Receiver) -> None:
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url, name="deaths", events=["dead"])
        assert [h.public() for h in await p.webhooks(type_name)] == [
            {"type": type_name, "name": "deaths", "url": receiver.url, "events": ["dead"],
             "signed": False}]
        assert any(h.name == "deaths" for h in await p.webhooks())
        async with running(worker(settings, registry_of(type_name))):
            done = await p.enqueue(type_name, 1)
            await wait_state(p, type_name, done, JobState.COMPLETED)
            await anyio.sleep(0.5)
            assert receiver.calls == []  # completed: not an event of this webhook
        assert await p.remove_webhook(type_name, "deaths")
        assert not await p.remove_webhook(type_name, "deaths")
        assert await p.webhooks(type_name) == []


async def test_the_worker_is_not_held_by_a_slow_receiver(
        settings: Settings, type_name: str, receiver: Receiver) -> None:
    receiver.hold = asyncio.Event()
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url)
        async with running(worker(settings, registry_of(type_name), concurrency=4)):
            first = await p.enqueue(type_name, 1)
            await wait_for(lambda: len(receiver.calls) == 1)
            # The delivery hangs in the receiver: the job it reports is completed, and
            # later jobs run and complete meanwhile.
            assert (await p.status(type_name, first)).state == JobState.COMPLETED  # type: ignore[union-attr]
            second = await p.enqueue(type_name, 2)
            await wait_state(p, type_name, second, JobState.COMPLETED, timeout=5)
            assert len(receiver.calls) >= 1 and not receiver.hold.is_set()
            receiver.hold.set()
            await wait_for(lambda: len(receiver.calls) == 2)


async def test_declared_webhook_is_set_by_the_worker(settings: Settings, type_name: str,
                                                     receiver: Receiver) -> None:
    reg = Registry()

    @reg.handler(type_name, webhook=receiver.url)
    async def ok(job: Job) -> int:
        return 7

    async with Producer(settings.redis_url or "", settings=settings) as p:
        async with running(worker(settings, reg)):
            (hook,) = await p.webhooks(type_name)
            assert hook.name == "default" and hook.secret == "job-secret"
            await p.enqueue(type_name, 1)
            await wait_for(lambda: len(receiver.calls) == 1)
        assert receiver.calls[0].json["result"] == 7
        assert verify("job-secret", receiver.calls[0].headers, receiver.calls[0].body)


def test_invalid_webhooks_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="URL"):
        Webhook("t", "ftp://x").check()
    with pytest.raises(InvalidArgument, match="events"):
        Webhook("t", "http://x", events=("started",)).check()
    with pytest.raises(InvalidArgument, match="name"):
        Webhook("t", "http://x", name="a b").check()
    with pytest.raises(InvalidArgument, match="cannot have webhooks"):
        Webhook(WEBHOOK_TYPE, "http://x").check()
    with pytest.raises(ConfigError, match="URL"):
        Registry().handler("t", webhook="nope")
    with pytest.raises(InvalidArgument, match="URL"):
        from streamjobs.job import encode_fields
        encode_fields(1, webhook="x y")


def test_signatures_refuse_stale_and_malformed_timestamps() -> None:
    body = b'{"a":1}'
    headers = {TIMESTAMP_HEADER: "1000", SIGNATURE_HEADER: sign("k", 1000, body)}
    assert verify("k", headers, body, now=1100)
    assert not verify("k", headers, body, now=1000 + 301)
    assert not verify("k", {**headers, TIMESTAMP_HEADER: "x"}, body, now=1000)
    # The timestamp is signed: changing it breaks the signature.
    assert not verify("k", {**headers, TIMESTAMP_HEADER: "1001"}, body, now=1001)


async def test_http_webhook_routes(redis_url: str, type_name: str) -> None:
    import httpx

    from streamjobs.api.app import create_app

    settings = Settings(redis_url=redis_url)
    app = create_app(redis_url, settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://api") as client:
        r = await client.put(f"/webhooks/{type_name}/ops", json={
            "url": "https://example.com/h", "events": ["dead"], "secret": "k"})
        assert r.status_code == 200, r.text
        want = {"type": type_name, "name": "ops", "url": "https://example.com/h",
                "events": ["dead"], "signed": True}
        assert r.json() == want
        assert (await client.get(f"/webhooks/{type_name}")).json() == {"webhooks": [want]}
        assert want in (await client.get("/webhooks")).json()["webhooks"]
        bad = await client.put(f"/webhooks/{type_name}/ops", json={"url": "ftp://x/y/z"})
        assert bad.status_code == 422
        bad = await client.put(f"/webhooks/{type_name}/a%20b", json={"url": "http://x.y"})
        assert bad.status_code == 422
        r = await client.post(f"/jobs/{type_name}", json={"payload": 1,
                                                          "webhook": "http://127.0.0.1:9/x"})
        assert r.status_code == 201
        job = (await client.get(f"/jobs/{type_name}/{r.json()['id']}")).json()
        assert "webhook" not in job.get("headers", {})  # a wire field, not a header
        assert (await client.delete(f"/webhooks/{type_name}/ops")).status_code == 200
        assert (await client.delete(f"/webhooks/{type_name}/ops")).status_code == 404
        assert (await client.get(f"/webhooks/{type_name}")).json() == {"webhooks": []}
    p = Producer(redis_url, settings=settings)
    try:
        raw = await p.redis.xrange(p.keys(type_name).stream)
        assert raw[-1][1][b"webhook"] == b"http://127.0.0.1:9/x"
    finally:
        await p.aclose()


def test_cli_webhooks(redis_url: str, type_name: str) -> None:
    from tests.test_cli import cli

    res = cli("webhooks", "set", type_name, "https://example.com/x", "--events", "completed",
              "--secret", "k", url=redis_url)
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout)["signed"] is True
    res = cli("webhooks", "list", type_name, url=redis_url)
    assert [orjson.loads(line) for line in res.stdout.splitlines()] == [
        {"type": type_name, "name": "default", "url": "https://example.com/x",
         "events": ["completed"], "signed": True}]
    assert cli("webhooks", "remove", type_name, url=redis_url).returncode == 0
    res = cli("webhooks", "remove", type_name, url=redis_url)
    assert res.returncode == 1 and "no webhook" in res.stderr
    res = cli("webhooks", "set", type_name, "nope", url=redis_url)
    assert res.returncode != 0 and "invalid webhook URL" in res.stderr


def test_webhooks_example_runs(redis_url: str) -> None:
    with example_run(redis_url, "webhooks.py", "resize_image", WEBHOOK_TYPE) as res:
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 2 and all(line.startswith("signed: True {") for line in lines)
        events = [orjson.loads(line.partition(" True ")[2]) for line in lines]
        assert [(e["event"], e.get("result")) for e in events] == [
            ("completed", {"w": 320}), ("dead", None)]


async def test_a_dedicated_delivery_worker_process(settings: Settings, type_name: str,
                                                   receiver: Receiver,
                                                   procs: list[Any]) -> None:
    """The deployment of a cluster: job workers without webhooks, one process serving
    ``streamjobs.webhook`` alone (`streamjobs worker streamjobs.webhooks --types ...`)."""
    from tests.helpers import spawn_worker

    proc = spawn_worker(settings.redis_url or "", "streamjobs.webhooks", "--types",
                        WEBHOOK_TYPE, env={"STREAMJOBS_PREFIX": settings.prefix,
                                           "STREAMJOBS_WEBHOOK_SECRET": "proc-secret"})
    procs.append(proc)
    w = Worker(settings.redis_url or "", registry_of(type_name), settings=settings,
               block_ms=100)
    assert WEBHOOK_TYPE not in w.handlers  # off by default
    async with Producer(settings.redis_url or "", settings=settings) as p:
        async with running(w):
            await p.enqueue(type_name, 5, webhook=receiver.url)
            await wait_for(lambda: len(receiver.calls) == 1, timeout=20)
    call = receiver.calls[0]
    assert call.json["result"] == {"echo": 5}
    assert verify("proc-secret", call.headers, call.body)


async def test_a_worker_dead_before_enqueueing_a_delivery_leaves_it_to_another(
        settings: Settings, type_name: str, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ack landed, the delivery was never enqueued (the worker died in between): the
    outbox field written before the ack lets another worker send it, once."""
    from streamjobs import webhooks

    monkeypatch.setattr(webhooks, "OUTBOX_AGE_S", 0.3)
    monkeypatch.setattr(webhooks, "SWEEP_S", 0.1)
    dying = worker(settings, registry_of(type_name))

    async def lost() -> None:  # its deliveries never reach the server
        pass

    monkeypatch.setattr(dying.notifier, "flush", lost)
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url, secret="k")
        outbox = p.keys(type_name).webhook_outbox
        async with running(dying):
            job_id = await p.enqueue(type_name, {"n": 3})
            await wait_state(p, type_name, job_id, JobState.COMPLETED)
            await anyio.sleep(0.3)
        assert receiver.calls == [] and await p.redis.hlen(outbox) == 1
        async with running(worker(settings, registry_of(type_name))):
            await wait_for(lambda: len(receiver.calls) == 1)


            async def emptied() -> bool:
                return await p.redis.hlen(outbox) == 0

            await wait_for(emptied)
            await anyio.sleep(0.5)  # later sweeps find nothing more
        assert len(receiver.calls) == 1
        call = receiver.calls[0]
        assert call.json["id"] == job_id and call.json["result"] == {"echo": {"n": 3}}
        assert verify("k", call.headers, call.body)


async def test_the_sweep_reads_what_became_of_each_left_job(
        settings: Settings, type_name: str, receiver: Receiver) -> None:
    from streamjobs.contract import Rec
    from streamjobs.keys import TypeKeys
    from streamjobs.scripts import Scripts
    from streamjobs.webhooks import Notifier

    async with Producer(settings.redis_url or "", settings=settings) as p:
        r = p.redis
        await p.set_webhook(type_name, receiver.url, events=["dead"])
        tk = TypeKeys(settings.prefix, type_name)
        n = Notifier(r, Scripts(r), settings.prefix, {type_name: tk})
        n.open()
        await n.refresh()
        old = orjson.dumps({"job": "x", "url": None, "at": 0})
        await r.hset(tk.job("dead-1"), mapping={Rec.STATE: "dead", Rec.ENTRY: "",
                                                 Rec.ERROR: "E: boom", Rec.REASON: "permanent",
                                                 Rec.ATTEMPTS: "2"})
        await r.hset(tk.job("run-1"), mapping={Rec.STATE: "waiting", Rec.ENTRY: "2-0"})
        await r.hset(tk.job("done-1"), mapping={Rec.STATE: "completed", Rec.ENTRY: "9-0"})
        await r.hset(tk.webhook_outbox, mapping={
            "1-0": old.replace(b'"x"', b'"dead-1"'),
            "2-0": old.replace(b'"x"', b'"run-1"'),  # still running on that entry: waits
            "3-0": old.replace(b'"x"', b'"done-1"'),  # completed by another entry: cleared
            "4-0": old.replace(b'"x"', b'"gone"'),    # no record: cleared
            "5-0": b"not json",
            "6-0": orjson.dumps({"job": "young", "url": None, "at": 2 * 10**13}),  # too new
        })
        assert await n.sweep() == 1
        await n.flush()
        assert sorted(await r.hkeys(tk.webhook_outbox)) == [b"2-0", b"6-0"]
        async with running(worker(settings, Registry(), types=[WEBHOOK_TYPE])):
            await wait_for(lambda: len(receiver.calls) == 1)
        body = receiver.calls[0].json
        assert (body["event"], body["id"], body["error"], body["reason"], body["attempts"]) == (
            "dead", "dead-1", "E: boom", "permanent", 2)


@pytest.mark.slow
@pytest.mark.xdist_group("topologies")  # the session's cluster belongs to that group
async def test_webhooks_on_a_cluster_cross_slots(cluster: str, receiver: Receiver) -> None:
    """The job's type and streamjobs.webhook on different primaries: the outbox and the
    ack in the job's slot, the delivery in its own; one worker each (a cluster worker
    reads one slot)."""
    from contextlib import AsyncExitStack

    from redis.cluster import key_slot

    from streamjobs.connection import client_from_url

    def slot(tag: str) -> int:
        return key_slot(f"x:{{{tag}}}:stream".encode())

    type_name = next(t for t in (f"c{uuid.uuid4().hex[:10]}" for _ in range(1000))
                     if slot(t) // 5462 != slot(WEBHOOK_TYPE) // 5462)
    settings = Settings(redis_url=cluster, prefix=f"wh{uuid.uuid4().hex[:8]}")

    async def work(job: Job) -> Any:
        if job.payload == "die":
            raise PermanentError("gone")
        return job.payload

    reg = registry_of(type_name, work)
    cr = client_from_url(cluster)
    try:
        async with Producer(cr, settings=settings) as p, AsyncExitStack() as stack:
            await p.set_webhook(type_name, receiver.url, secret="k")
            for types in ([type_name], [WEBHOOK_TYPE]):
                await stack.enter_async_context(running(Worker(
                    cr, reg, types=types, settings=settings, block_ms=100,
                    webhook_policy=QUICK)))
            ok = await p.enqueue(type_name, "fine")
            dead = await p.enqueue(type_name, "die", webhook=receiver.url)
            await wait_for(lambda: len(receiver.calls) == 3, timeout=20)
            got = sorted((c.json["id"], c.json["event"], c.headers.get(
                "x-streamjobs-signature", "")[:7]) for c in receiver.calls)
            assert got == sorted([(ok, "completed", "sha256="), (dead, "dead", "sha256="),
                                  (dead, "dead", "")])  # the type's (signed), the job's
            await wait_equal(lambda: cr.hlen(p.keys(type_name).webhook_outbox), 0)
    finally:
        await cr.aclose()


async def test_refusals_unreachable_receivers_and_removed_webhooks(
        settings: Settings, type_name: str, receiver: Receiver) -> None:
    import socket

    from streamjobs.job import Job as JobCls
    from streamjobs.metrics import WorkerMetrics
    from streamjobs.webhooks import Deliverer

    receiver.statuses = [410]  # Gone: the receiver refuses, no retry
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/x"  # nothing listens there
    async with Producer(settings.redis_url or "", settings=settings) as p:
        await p.set_webhook(type_name, receiver.url)
        w = worker(settings, registry_of(type_name))
        async with running(w):
            await p.enqueue(type_name, 1, webhook=closed)
            await wait_for(lambda: len(receiver.calls) == 1)
            dead = receiver.calls[0].headers[DELIVERY_HEADER.lower()]
            await wait_state(p, WEBHOOK_TYPE, dead, JobState.DEAD)
            st = await p.status(WEBHOOK_TYPE, dead)
            assert st is not None and st.attempts == 1 and "410" in (st.error or "")
            failed = w.metrics.webhooks.labels("failed")._value
            await wait_for(lambda: failed.get() == 1 + QUICK.max_attempts)  # 410 once,
            # the closed port every attempt
        assert len(receiver.calls) == 1
        d = Deliverer(p.redis, settings.prefix, "", 1.0, WorkerMetrics())
        gone = {"type": type_name, "hook": "nope", "event": {"event": "completed"}}
        assert await d(JobCls(WEBHOOK_TYPE, "x", gone)) == {"dropped": "webhook removed"}
        bad = {"type": type_name, "hook": "@job", "url": "ftp://x", "event": {}}
        with pytest.raises(PermanentError, match="invalid webhook URL"):
            await d(JobCls(WEBHOOK_TYPE, "x", bad))
        with pytest.raises(PermanentError, match="no event"):
            await d(JobCls(WEBHOOK_TYPE, "x", {"type": type_name}))
        await d.aclose()
    with pytest.raises(ConfigError, match="webhook_timeout"):
        Settings(webhook_timeout=0)

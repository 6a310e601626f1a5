"""Webhooks: an http(s) URL called when a job completes or ends dead.

Where a webhook is declared:

- per type, on the server: ``TypeKeys.webhooks`` (a hash under the type's own tag: name
  -> JSON ``{"url", "secret", "events"}``), set with :func:`set_webhook` (Producer,
  CLI ``streamjobs webhooks set``, ``PUT /webhooks/{type}/{name}``) or declared with
  ``@handler(..., webhook=...)`` (upserted by every worker of the type at start);
- per job: the wire field ``webhook`` (``enqueue(..., webhook=url)``), called on both
  events and signed with ``Settings.webhook_secret``.

How a call is made: the worker that settles the job (its settler, after the ack or the
fail that made it dead) hands a notice to its :class:`Notifier`, which enqueues one
*delivery job* of the internal type :data:`WEBHOOK_TYPE` per webhook, in a task of its
own (the runner and the settler never wait on it). Deliveries are ordinary jobs: any
worker serving :data:`WEBHOOK_TYPE` (every worker by default, except on a cluster, where
one runs a worker for it: ``--types streamjobs.webhook``) POSTs the body with httpx,
retried with backoff while the receiver fails (:data:`DEFAULT_POLICY`), dead-lettered when
it keeps failing (``streamjobs dlq list streamjobs.webhook``; ``dlq retry`` sends again).

Guarantee: at least once. The ack (in the job's slot) and the delivery's enqueue (in
:data:`WEBHOOK_TYPE`'s slot) cannot be one script on a cluster, so the settler first
writes the entries whose settle may notify into their type's outbox
(``TypeKeys.webhook_outbox``, the job's slot), then acks or fails them; the notifier
deletes a field once its deliveries are enqueued. A worker that dies in between leaves the
field: any worker of the type takes it over after :data:`OUTBOX_AGE_S`, reading the job's
record (completed by that entry, or dead: notify; still running on it: wait). The
delivery's id is derived from the job's final entry, event and webhook, so a second
enqueue of one event is refused as a duplicate while its delivery record lives.
Receivers dedupe on ``X-Streamjobs-Delivery`` (stable across retries) all the same: a
take-over after a delivery record expired, or of a retried attempt's field for a job that
later died, can call twice.

Signature: ``X-Streamjobs-Signature: sha256=<hex>``, the HMAC-SHA256 with the webhook's
secret of ``<timestamp>.<body>``, where ``X-Streamjobs-Timestamp`` is the call's Unix
time in seconds (refuse old ones: :func:`verify` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from streamjobs.about import version
from streamjobs.codes import Code
from streamjobs.contract import RUNNING_RECORDED_AS, TYPE_NAME, JobState, Priority, Rec
from streamjobs.counts import known_types
from streamjobs.errors import InvalidArgument, PermanentError, RetryAfter
from streamjobs.job import check_url, encode_fields
from streamjobs.keys import TypeKeys, check_type_name, split_tag
from streamjobs.reconnect import SERVER_ERRORS, Backoff
from streamjobs.records import Record
from streamjobs.retry import Policy
from streamjobs.scripts import EnqueueItem
from streamjobs.streams import ensure_types

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import httpx
    from redis.asyncio import Redis

    from streamjobs.job import Job
    from streamjobs.metrics import WorkerMetrics
    from streamjobs.scripts import AckItem, FailItem, FailResult, Scripts

log = logging.getLogger("streamjobs.webhooks")

#: The internal type whose jobs are webhook calls.
WEBHOOK_TYPE = "streamjobs.webhook"
SIGNATURE_HEADER = "X-Streamjobs-Signature"
TIMESTAMP_HEADER = "X-Streamjobs-Timestamp"
#: The delivery job's id: the same for every retry of one event's call.
DELIVERY_HEADER = "X-Streamjobs-Delivery"
EVENT_HEADER = "X-Streamjobs-Event"
#: Name of a per-job webhook in a delivery's payload (no per-type webhook's name can be
#: it: the name pattern has no ``@``).
JOB_HOOK = "@job"
#: How often a worker reads the webhooks of its types.
REFRESH_S = 1.0
#: :func:`verify` refuses a timestamp further than this from now (seconds).
TOLERANCE_S = 300
#: A field of a type's webhook outbox this old (its worker died before sending its
#: deliveries) is taken over by any worker of the type; how often they look.
OUTBOX_AGE_S = 30.0
SWEEP_S = 10.0
#: Longest ``Retry-After`` of a receiver that is honoured (seconds).
MAX_RETRY_AFTER_S = 3600
#: The retry policy of delivery jobs: ~8 minutes of retries, then dead.
DEFAULT_POLICY = Policy(max_attempts=8, immediate_retries=0, backoff_base=2.0,
                        backoff_cap=300.0, timeout=30.0)


class HookEvent(StrEnum):
    """What a webhook is called for."""

    COMPLETED = "completed"
    DEAD = "dead"


EVENTS = tuple(HookEvent)


@dataclass(frozen=True, slots=True)
class Webhook(Record):
    """A webhook of a type. ``secret`` signs its calls (empty: unsigned)."""

    type: str
    url: str
    name: str = "default"
    events: tuple[str, ...] = EVENTS
    secret: str = field(default="", repr=False)

    def check(self) -> Webhook:
        check_type_name(self.type)
        if self.type == WEBHOOK_TYPE:
            raise InvalidArgument(f"{WEBHOOK_TYPE} cannot have webhooks")
        if not isinstance(self.name, str) or not TYPE_NAME.fullmatch(self.name):
            raise InvalidArgument(f"invalid webhook name {self.name!r}: use 1-64 characters "
                                  "from A-Z a-z 0-9 _ . -")
        check_url(self.url)
        bad = [e for e in self.events if e not in EVENTS]
        if bad or not self.events:
            raise InvalidArgument(f"webhook events must be some of {', '.join(EVENTS)}, "
                                  f"not {', '.join(bad) or 'none'}")
        return self

    def public(self) -> dict[str, Any]:
        """The definition without its secret (``signed`` says whether it has one)."""
        return {"type": self.type, "name": self.name, "url": self.url,
                "events": list(self.events), "signed": bool(self.secret)}

    def to_json(self) -> bytes:
        return orjson.dumps({"url": self.url, "events": list(self.events),
                             "secret": self.secret})

    @classmethod
    def from_json(cls, type_: str, name: bytes | str, raw: bytes | str) -> Webhook | None:
        name = name.decode() if isinstance(name, bytes) else name
        try:
            d = orjson.loads(raw)
            return cls(type_, str(d["url"]), name, tuple(d.get("events") or EVENTS),
                       str(d.get("secret") or ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("webhook %r of %s is unreadable: ignored", name, type_)
            return None


# ---- the definitions on the server ------------------------------------------------------


async def set_webhook(redis: Redis, prefix: str, hook: Webhook) -> Webhook:
    """Create or replace a webhook of its type (the type becomes known)."""
    hook.check()
    tk = TypeKeys(prefix, hook.type)
    await ensure_types(redis, [tk])
    await redis.hset(tk.webhooks, hook.name, hook.to_json())
    return hook


async def remove_webhook(redis: Redis, prefix: str, type_: str, name: str) -> bool:
    """Delete a webhook; False when there was none."""
    return bool(await redis.hdel(TypeKeys(prefix, type_).webhooks, name))


async def webhooks_of(redis: Redis, tk: TypeKeys) -> list[Webhook]:
    raw = await redis.hgetall(tk.webhooks)
    hooks = [Webhook.from_json(tk.type, k, v) for k, v in sorted(raw.items())]
    return [h for h in hooks if h is not None]


async def all_webhooks(redis: Redis, prefix: str, type_: str | None = None) -> list[Webhook]:
    """The webhooks of one type, or of every known type."""
    types = [type_] if type_ is not None else await known_types(redis, prefix)
    out: list[Webhook] = []
    for t in types:
        out += await webhooks_of(redis, TypeKeys(prefix, t))
    return out


# ---- signatures -------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Streamjobs-Signature`` value of a call."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance: float = TOLERANCE_S, now: float | None = None) -> bool:
    """For receivers: is this call signed with ``secret``, and recent? ``headers`` as
    received (any case of the names)."""
    low = {k.lower(): v for k, v in headers.items()}
    sig = low.get(SIGNATURE_HEADER.lower(), "")
    ts = low.get(TIMESTAMP_HEADER.lower(), "")
    if not ts.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(ts)) > tolerance:
        return False
    return hmac.compare_digest(sig, sign(secret, int(ts), body))


# ---- notices: settled jobs -> delivery jobs ---------------------------------------------


def delivery_id(tag: str, entry_id: str, job_id: str, event: str, hook: str) -> str:
    """One id per event of a job (its final entry) and webhook: a replayed settle
    enqueues the delivery once."""
    text = "\n".join((tag, entry_id, job_id, event, hook)).encode()
    return "wh-" + hashlib.sha256(text).hexdigest()[:40]


class Notifier:
    """Turns a worker's settled jobs into delivery jobs, off the runners' path.

    Before an ack or fail call of entries that may notify, the settler awaits
    :meth:`record`: each entry goes into its type's outbox (``TypeKeys.webhook_outbox``,
    the job's own slot) *before* the transition. After the call, :meth:`completed` /
    :meth:`failed` queue the deliveries (no await) and :meth:`run` enqueues them, then
    deletes the outbox fields. A worker that died in between leaves its fields behind:
    any worker of the type takes them over after :data:`OUTBOX_AGE_S` (:meth:`sweep`),
    reading the job's record to see what became of it; the derived delivery ids make a
    second enqueue of one event a no-op."""

    def __init__(self, redis: Redis, scripts: Scripts, prefix: str,
                 keys: Mapping[str, TypeKeys]) -> None:
        self.redis, self.scripts, self.prefix = redis, scripts, prefix
        self.keys = {tag: tk for tag, tk in keys.items() if tk.type != WEBHOOK_TYPE}
        #: The type names whose webhooks are read (a partition's tag maps to its type).
        self.types = sorted({tk.type for tk in self.keys.values()})
        self.hooks: dict[str, tuple[Webhook, ...]] = {}
        self._job_urls: dict[str, str] = {}
        self._pending: list[EnqueueItem] = []
        #: Entries in an outbox whose settle this worker is seeing through.
        self._in_outbox: set[tuple[str, str]] = set()
        #: Outbox fields to delete once the pending deliveries are enqueued, per tag.
        self._cleared: dict[str, list[str]] = {}
        self._target = TypeKeys(prefix, WEBHOOK_TYPE)
        self._ensured = False

    def open(self) -> None:
        self._wake = anyio.Event()

    @property
    def active(self) -> bool:
        """Anything to notify about (the settler's one check per call)."""
        return bool(self.hooks) or bool(self._job_urls) or bool(self._in_outbox)

    def job_hook(self, entry_id: str, url: bytes) -> None:
        """The entry being settled carries a per-job ``webhook``."""
        self._job_urls[entry_id] = url.decode("utf-8", "replace")

    async def record(self, tag: str, entries: Sequence[tuple[str, str]]) -> None:
        """Before the settle call of these (entry id, job id): the outbox fields of those
        that may notify (their type has webhooks, or they carry their own)."""
        tk = self.keys.get(tag)
        if tk is None:
            return
        typed = tk.type in self.hooks
        now = int(time.time() * 1000)
        mapping = {entry: orjson.dumps({"job": job, "url": self._job_urls.get(entry),
                                        "at": now})
                   for entry, job in entries if typed or entry in self._job_urls}
        if mapping:
            await self.redis.hset(tk.webhook_outbox, mapping=mapping)  # type: ignore[arg-type]
            self._in_outbox.update((tk.webhook_outbox, entry) for entry in mapping)

    def _settled(self, tag: str, entry_id: str) -> str | None:
        """The entry's settle is known: its outbox field goes with the next flush."""
        tk = self.keys.get(tag)
        if tk is not None and (tk.webhook_outbox, entry_id) in self._in_outbox:
            self._in_outbox.discard((tk.webhook_outbox, entry_id))
            self._cleared.setdefault(tag, []).append(entry_id)
        return self._job_urls.pop(entry_id, None)

    def _wanted(self, tag: str, url: str | None) -> bool:
        return url is not None or split_tag(tag)[0] in self.hooks

    def completed(self, tag: str, items: Sequence[AckItem], codes: Sequence[Code | None]
                  ) -> None:
        for item, code in zip(items, codes, strict=True):
            url = self._settled(tag, item.entry_id)
            # ALREADY: this very ack ran before (its reply lost): notify (at least once).
            if (code is not Code.OK and code is not Code.ALREADY) or not self._wanted(tag, url):
                continue
            result = orjson.loads(item.result) if item.result else None
            body = {"result": result, "attempts": item.attempt}
            self._notice(tag, item.entry_id, item.job_id, HookEvent.COMPLETED, body, url)
        self._wake.set()

    def failed(self, tag: str, items: Sequence[FailItem],
               results: Sequence[FailResult | None]) -> None:
        for item, r in zip(items, results, strict=True):
            url = self._settled(tag, item.entry_id)
            if r is None or r.state != JobState.DEAD or not self._wanted(tag, url):
                continue
            body = {"error": item.failure.error, "reason": str(item.mode),
                    "attempts": r.attempts}
            self._notice(tag, item.entry_id, item.job_id, HookEvent.DEAD, body, url)
        self._wake.set()

    def _notice(self, tag: str, entry_id: str, job_id: str, event: HookEvent,
                body: dict[str, Any], job_url: str | None) -> None:
        type_ = split_tag(tag)[0]
        event_body = {"event": event.value, "type": type_, "id": job_id, **body,
                      "at": int(time.time() * 1000)}
        targets: list[dict[str, Any]] = [
            {"type": type_, "hook": h.name} for h in self.hooks.get(type_, ())
            if event in h.events]
        if job_url is not None:
            targets.append({"type": type_, "hook": JOB_HOOK, "url": job_url})
        for target in targets:
            job_id_ = delivery_id(tag, entry_id, job_id, event, target["hook"])
            payload = {**target, "event": event_body}
            self._pending.append(EnqueueItem(encode_fields(payload, job_id=job_id_),
                                             job_id_))

    async def refresh(self) -> None:
        """Read the webhooks of this worker's types (one pipeline)."""
        if not self.types:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for t in self.types:
                pipe.hgetall(TypeKeys(self.prefix, t).webhooks)
            found = await pipe.execute()
        hooks: dict[str, tuple[Webhook, ...]] = {}
        for t, raw in zip(self.types, found, strict=True):
            parsed = [Webhook.from_json(t, k, v) for k, v in sorted(raw.items())]
            if parsed:
                hooks[t] = tuple(h for h in parsed if h is not None)
        self.hooks = hooks

    async def flush(self) -> None:
        """Enqueue the pending deliveries (a duplicate id: already enqueued), then delete
        the outbox fields they came from."""
        items, cleared = self._pending, self._cleared
        self._pending, self._cleared = [], {}
        try:
            for i in range(0, len(items), 500):
                if not self._ensured:
                    await ensure_types(self.redis, [self._target])
                    self._ensured = True
                await self.scripts.enqueue(self._target, items[i : i + 500])
            for tag, entries in cleared.items():
                await self.redis.hdel(self.keys[tag].webhook_outbox, *entries)
        except BaseException:
            self._pending[:0] = items  # sent again: enqueued ones answer DUPLICATE
            for tag, entries in cleared.items():
                self._cleared.setdefault(tag, [])[:0] = entries
            raise

    async def sweep(self) -> int:
        """Take over the outbox fields left by a worker that died between a settle and
        its deliveries' enqueue (older than :data:`OUTBOX_AGE_S`); how many were."""
        now, taken = time.time() * 1000, 0
        for tag, tk in self.keys.items():
            if tk.level is not Priority.NORMAL:
                continue  # a priority level's stream: its type's outbox is read once
            for raw_entry, raw in (await self.redis.hgetall(tk.webhook_outbox)).items():
                entry = raw_entry.decode() if isinstance(raw_entry, bytes) else raw_entry
                if (tk.webhook_outbox, entry) in self._in_outbox:
                    continue
                try:
                    left = orjson.loads(raw)
                    at, job, url = int(left["at"]), str(left["job"]), left.get("url")
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    self._cleared.setdefault(tag, []).append(entry)
                    continue
                if now - at >= OUTBOX_AGE_S * 1000:
                    taken += await self._take_over(tag, tk, entry, job, url)
        if taken:
            log.warning("%d webhook notices left by a worker that stopped before sending "
                        "them were taken over", taken)
        return taken

    async def _take_over(self, tag: str, tk: TypeKeys, entry: str, job: str,
                         url: str | None) -> int:
        """What became of the job of a left outbox field: completed by that entry, or
        dead, notifies; still running on that entry waits (its settle writes the field
        again); anything else clears it."""
        state, rec_entry, result, attempts, error, reason = (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            for v in await self.redis.hmget(tk.job(job), Rec.STATE, Rec.ENTRY, Rec.RESULT,
                                            Rec.ATTEMPTS, Rec.ERROR, Rec.REASON))
        if state == RUNNING_RECORDED_AS and rec_entry == entry:
            return 0
        self._cleared.setdefault(tag, []).append(entry)
        count = int(attempts) if attempts and attempts.isdigit() else 0
        if state == JobState.COMPLETED and rec_entry == entry:
            body = {"result": orjson.loads(result) if result else None, "attempts": count}
            self._notice(tag, entry, job, HookEvent.COMPLETED, body, url)
        elif state == JobState.DEAD:
            body = {"error": error or "", "reason": reason or "", "attempts": count}
            self._notice(tag, entry, job, HookEvent.DEAD, body, url)
        else:
            return 0
        return 1

    async def run(self) -> None:
        backoff = Backoff()
        refreshed = swept = time.monotonic() - REFRESH_S
        while True:
            with anyio.move_on_after(REFRESH_S):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                if time.monotonic() - refreshed >= REFRESH_S:
                    await self.refresh()
                    refreshed = time.monotonic()
                if time.monotonic() - swept >= SWEEP_S:
                    swept = time.monotonic()
                    await self.sweep()
                with anyio.CancelScope(shield=True):
                    await self.flush()
                backoff.reset()
            except SERVER_ERRORS as e:
                await backoff.wait("enqueueing webhook deliveries failed", e)


# ---- the delivery handler ---------------------------------------------------------------


class Deliverer:
    """The handler of :data:`WEBHOOK_TYPE`: POSTs one event to its webhook's URL."""

    def __init__(self, redis: Redis, prefix: str, secret: str, timeout: float,
                 metrics: WorkerMetrics) -> None:
        self.redis, self.prefix, self.secret = redis, prefix, secret
        self.timeout, self.metrics = timeout, metrics
        self._client: httpx.AsyncClient | None = None

    async def _target(self, p: Mapping[str, Any]) -> tuple[str, str] | None:
        """(url, secret) of the delivery; None when its webhook was removed since."""
        if p.get("hook") == JOB_HOOK:
            try:  # a plain XADD's field: not checked by any producer
                return check_url(str(p.get("url"))), self.secret
            except InvalidArgument as e:
                raise PermanentError(str(e)) from None
        raw = await self.redis.hget(TypeKeys(self.prefix, str(p["type"])).webhooks,
                                    str(p["hook"]))
        hook = Webhook.from_json(str(p["type"]), str(p["hook"]), raw) if raw else None
        return None if hook is None else (hook.url, hook.secret)

    async def __call__(self, job: Job) -> Any:
        p = job.payload
        if not isinstance(p, dict) or not isinstance(p.get("event"), dict):
            raise PermanentError("not a webhook delivery: the payload has no event")
        target = await self._target(p)
        if target is None:
            log.info("webhook %s of %s was removed: delivery %s dropped", p.get("hook"),
                     p.get("type"), job.id)
            return {"dropped": "webhook removed"}
        url, secret = target
        body = orjson.dumps(p["event"])
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": f"streamjobs/{version()}",
                   TIMESTAMP_HEADER: str(ts), DELIVERY_HEADER: job.id,
                   EVENT_HEADER: str(p["event"].get("event", ""))}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, ts, body)
        import httpx  # only a worker that delivers webhooks needs it

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            resp = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            self.metrics.webhook(ok=False)
            raise ConnectionError(f"webhook {url}: {type(e).__name__}: {e}") from None
        if 200 <= resp.status_code < 300:
            self.metrics.webhook(ok=True)
            return {"status": resp.status_code}
        self.metrics.webhook(ok=False)
        text = f"webhook {url} answered {resp.status_code}"
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 425, 429):
            raise PermanentError(text)  # the receiver refuses it: retrying will not help
        wait = resp.headers.get("retry-after", "")
        if wait.isdigit():  # 429 or 503 with a delay in seconds: its own, capped
            raise RetryAfter(min(int(wait), MAX_RETRY_AFTER_S), f"{text}, retry after {wait}s")
        raise RuntimeError(text)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

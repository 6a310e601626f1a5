"""Dead letters: list (paged, oldest first), show, retry one / all, purge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from streamjobs import replies
from streamjobs.codes import Code
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.contract import STASH_B, DeadField, JobState, job_id_of
from streamjobs.errors import InvalidArgument, raise_for_code
from streamjobs.keys import PARTITIONS_FIELD, TypeKeys, parse_partitions
from streamjobs.listing import check_stream_cursor
from streamjobs.records import Record, opt_int, split_fields, text
from streamjobs.scripts import Scripts
from streamjobs.status import JobStatus, type_status
from streamjobs.streams import partition_keys

if TYPE_CHECKING:
    import builtins

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

PAGE = 200
#: Entries one filtered page reads at most before it hands back a cursor.
SCAN_MAX = 5000


@dataclass(frozen=True, slots=True)
class DeadJob(Record):
    """One entry of a type's dead stream; ``failed_at`` is ms since the epoch."""

    id: str
    type: str
    dead_entry: str
    reason: str
    error: str
    attempts: int
    failed_at: int
    payload: Any
    headers: dict[str, str]


def _dead_job(type_: str, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadJob:
    payload, headers = split_fields(fields, STASH_B)
    dead_entry = entry_id.decode()
    return DeadJob(
        id=job_id_of(dead_entry, fields), type=type_, dead_entry=dead_entry,
        reason=text(fields.get(DeadField.REASON.b)) or "",
        error=text(fields.get(DeadField.ERROR.b)) or "",
        attempts=opt_int(fields.get(DeadField.ATTEMPTS.b)) or 0,
        failed_at=opt_int(fields.get(DeadField.FAILED_AT.b)) or 0,
        payload=payload, headers=headers,
    )


class DeadLetters:
    """Inspect and repair the dead stream of each type."""

    def __init__(self, redis: Redis | RedisCluster | str, *,
                 settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._owns_client = isinstance(redis, str)
        self.redis: Redis = client_from_url(redis) if isinstance(redis, str) else cast(
            "Redis", redis)
        self.scripts = Scripts(self.redis)

    def keys(self, type_: str) -> TypeKeys:
        return TypeKeys(self.settings.prefix, type_)

    async def list(
        self, type_: str, *, after: str | None = None, count: int = 50, until: str = "+"
    ) -> tuple[list[DeadJob], str | None]:
        """One page, oldest first; returns (jobs, cursor of the next page or None). A
        partitioned type's dead streams are merged by entry id (its partition count is
        read with partition 0's page: one round trip for an unpartitioned type)."""
        if count < 1:
            raise InvalidArgument("count must be >= 1")
        start = f"({check_stream_cursor(after)}" if after else "-"
        tk = self.keys(type_)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(tk.dead, start, until, count=count + 1)
            pipe.hget(tk.config, PARTITIONS_FIELD)
            first, n = await pipe.execute()
        rows = replies.entries(first)
        parts = tk.partitions(parse_partitions(n))
        if len(parts) > 1:
            async with self.redis.pipeline(transaction=False) as pipe:
                for part in parts[1:]:
                    pipe.xrange(part.dead, start, until, count=count + 1)
                rows = sorted([*rows, *(r for page in await pipe.execute()
                                        for r in replies.entries(page))],
                              key=lambda r: _id_order(r[0]))
        # Equal ids in two partitions stay on one page: the cursor is an id.
        end = count
        while end < len(rows) and rows[end][0] == rows[end - 1][0]:
            end += 1
        jobs = [_dead_job(type_, eid, fields) for eid, fields in rows[:end]]
        nxt = jobs[-1].dead_entry if len(rows) > end else None
        return jobs, nxt

    async def find(
        self, type_: str, *, error_contains: str, after: str | None = None, count: int = 50,
        scan: int = SCAN_MAX,
    ) -> tuple[builtins.list[DeadJob], str | None]:
        """Like :meth:`list`, only the jobs whose error contains the text. Reads at most
        ``scan`` entries per call: the cursor then resumes the search (a page can come
        back short, even empty, with a cursor)."""
        found: builtins.list[DeadJob] = []
        read = 0
        while True:
            jobs, nxt = await self.list(type_, after=after, count=min(PAGE, scan - read))
            for i, j in enumerate(jobs):
                if error_contains in j.error:
                    found.append(j)
                    if len(found) == count:
                        more = i < len(jobs) - 1 or nxt is not None
                        return found, j.dead_entry if more else None
            read += len(jobs)
            if nxt is None or read >= scan:
                return found, nxt

    async def count(self, type_: str) -> int:
        parts = await partition_keys(self.redis, self.keys(type_))
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                pipe.xlen(part.dead)
            return sum(int(n) for n in await pipe.execute())

    async def show(self, type_: str, job_id: str) -> JobStatus | None:
        """Payload, error, traceback, attempts and timestamps of one dead job."""
        status = await type_status(self.redis, self.keys(type_), job_id)
        if status is None or status.state is not JobState.DEAD:
            return None
        return status

    async def _one(self, type_: str, job_id: str, script: Any) -> None:
        """Run a dead-letter script on the job in partition 0, else in the partition
        that holds it."""
        tk = self.keys(type_)
        (code,) = await script(tk, [job_id])
        if code is Code.NOT_FOUND:
            for part in (await partition_keys(self.redis, tk))[1:]:
                (code,) = await script(part, [job_id])
                if code is not Code.NOT_FOUND:
                    break
        raise_for_code(code, job_id)

    async def retry(self, type_: str, job_id: str) -> None:
        """Move one dead job back to the stream with fresh attempts."""
        await self._one(type_, job_id, self.scripts.dead_retry)

    async def retry_all(self, type_: str, *, error_contains: str | None = None) -> int:
        """Retry every dead job (or those whose error contains the text); returns the count."""
        return await self._sweep(type_, self.scripts.dead_retry, error_contains)

    async def purge(self, type_: str, *, error_contains: str | None = None) -> int:
        """Delete every dead job (or those matching); returns the count."""
        return await self._sweep(type_, self.scripts.dead_purge, error_contains)

    async def purge_one(self, type_: str, job_id: str) -> None:
        await self._one(type_, job_id, self.scripts.dead_purge)

    async def _sweep(self, type_: str, script: Any, error_contains: str | None) -> int:
        done = 0
        for tk in await partition_keys(self.redis, self.keys(type_)):
            done += await self._sweep_one(tk, script, error_contains)
        return done

    async def _sweep_one(self, tk: TypeKeys, script: Any, error_contains: str | None) -> int:
        # Stop at today's last entry: jobs that die again meanwhile are not swept twice.
        last = replies.entries(await self.redis.xrevrange(tk.dead, "+", "-", count=1))
        if not last:
            return 0
        until = last[0][0].decode()
        done, start = 0, "-"
        while True:
            rows = replies.entries(
                await self.redis.xrange(tk.dead, start, until, count=PAGE))
            jobs = [_dead_job(tk.type, eid, fields) for eid, fields in rows]
            ids = [j.id for j in jobs if error_contains is None or error_contains in j.error]
            if ids:
                codes = await script(tk, ids)
                done += sum(1 for c in codes if c is Code.OK)
            if len(rows) < PAGE:
                return done
            start = f"({jobs[-1].dead_entry}"

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)

"""What each CLI command does. Client commands print JSON or small tables."""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from streamjobs import supervisor
from streamjobs.admin import delete_type
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.contract import JobState
from streamjobs.counts import known_types, types_stats
from streamjobs.dead import DeadLetters
from streamjobs.embedded import find_data_dir
from streamjobs.errors import ConfigError, InvalidArgument, ServerError
from streamjobs.events import Events, events_on, switch_events
from streamjobs.keys import TypeKeys, check_type_name
from streamjobs.listing import Page, list_jobs
from streamjobs.logs import LogConfig, redact
from streamjobs.producer import Cancelled, CancelOutcome, Enqueued, Producer
from streamjobs.streams import keep_types_indexed, partitions_of, publish_partitions
from streamjobs.typeinfo import describe_type

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


def _settings() -> Settings:
    return Settings.from_env()


def resolve_url(args: argparse.Namespace) -> str:
    settings = _settings()
    if getattr(args, "url", None):
        return str(args.url)
    if settings.redis_url:
        return settings.redis_url
    data = find_data_dir(settings.data_dir, explicit="STREAMJOBS_DATA_DIR" in os.environ)
    url = data.url()
    if url:
        return url
    raise ServerError(
        "no server configured: set STREAMJOBS_REDIS_URL, pass --url, or start one with "
        "`streamjobs up` (no .streamjobs/server.url here or in a parent directory)"
    )


def describe_url(args: argparse.Namespace) -> str:
    try:
        return redact(resolve_url(args))
    except (ServerError, ConfigError):
        return "no URL"


def _run(fn: Callable[..., Awaitable[T]], *a: Any) -> T:
    return anyio.run(fn, *a)


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


# ---- client commands ----------------------------------------------------------------


def cmd_enqueue(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    url = resolve_url(args)

    async def go() -> Enqueued:
        async with Producer(url, settings=_settings()) as p:
            return await p.enqueue(args.type, args.payload, job_id=args.job_id,
                                   delay=args.delay, max_attempts=args.max_attempts,
                                   timeout=args.timeout, expires_in=args.expires_in,
                                   dedup_key=args.dedup_key, dedup_mode=args.dedup_mode,
                                   dedup_ttl=args.dedup_ttl, priority=args.priority,
                                   after=args.after,
                                   on_parent_failure=args.on_parent_failure)

    job_id = _run(go)
    if job_id.deduplicated:
        print(f"{job_id} deduplicated: that job ({job_id.state}) answers for dedup key "
              f"{args.dedup_key!r}; nothing new enqueued")
    else:
        print(job_id)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    url = resolve_url(args)

    async def go() -> Cancelled:
        async with Producer(url, settings=_settings()) as p:
            return await p.cancel(args.type, args.id)

    answer = _run(go)
    said = {
        CancelOutcome.CANCELLED: "cancelled",
        CancelOutcome.UNINTERRUPTIBLE: "cancel recorded, but the attempt cannot be "
        "interrupted (a sync handler in a thread): it runs on; a failure is not retried",
        CancelOutcome.REQUESTED: "cancel requested; its worker has not answered yet",
        CancelOutcome.FINISHED: "it finished before the cancel reached it",
    }[answer.outcome]
    print(f"{args.id} ({answer}): {said}")
    return 0 if answer.outcome is not CancelOutcome.FINISHED else 1


def cmd_list(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    url = resolve_url(args)
    settings = _settings()

    async def go() -> Page:
        r = client_from_url(url)
        try:
            since = int(time.time() * 1000) - settings.result_ttl * 1000
            return await list_jobs(r, TypeKeys(settings.prefix, args.type),
                                   JobState(args.state), cursor=args.cursor,
                                   limit=args.count, since_ms=since)
        finally:
            await r.aclose()

    page = _run(go)
    _print_json({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor})
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    url = resolve_url(args)

    async def go() -> Any:
        async with Producer(url, settings=_settings()) as p:
            return await p.status(args.type, args.id)

    st = _run(go)
    if st is None:
        print(f"error: no job {args.id!r} of type {args.type!r}", file=sys.stderr)
        return 1
    _print_json(st.to_dict())
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    for t in args.types:
        check_type_name(t)
    url = resolve_url(args)

    async def go() -> None:
        seen = 0
        async with Events(url, settings=_settings()) as ev:
            async for e in ev.watch(args.types, since=args.since):
                print(orjson.dumps(e.to_dict()).decode(), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return

    _run(go)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    tk = TypeKeys(_settings().prefix, check_type_name(args.type))
    url = resolve_url(args)

    async def go() -> bool:
        redis = client_from_url(url)
        try:
            if args.switch != "show":
                await switch_events(redis, tk, args.switch == "on")
            return await events_on(redis, tk)
        finally:
            await redis.aclose()

    print("on" if _run(go) else "off")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    url = resolve_url(args)
    settings = _settings()

    async def go() -> list[Any]:
        r = client_from_url(url)
        try:
            await keep_types_indexed(r, settings.prefix, 0)  # plain-XADD types too
            types = await known_types(r, settings.prefix)
            return await types_stats(r, [TypeKeys(settings.prefix, t) for t in types])
        finally:
            await r.aclose()

    rows = _run(go)
    cols = ["type", "waiting", "running", "delayed", "blocked", "dead", "completed",
            "cancelled", "expired", "paused"]
    print("  ".join(f"{c:>12}" for c in cols) + "  waiting by priority")
    for s in rows:
        levels = s.waiting_by_priority
        by_level = " ".join(f"{k}={levels[k]}" for k in ("high", "normal", "low") if k in levels)
        print("  ".join(f"{getattr(s, c)!s:>12}" for c in cols)
              + ("  " + by_level if set(levels) - {"normal"} else ""))
    return 0


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def cmd_workers(args: argparse.Namespace) -> int:
    """Live workers and the jobs each runs now."""
    from streamjobs import terminal
    from streamjobs.counts import server_ms
    from streamjobs.presence import live_workers

    url = resolve_url(args)
    settings = _settings()

    async def go() -> tuple[list[dict[str, Any]], int]:
        r = client_from_url(url)
        try:
            return await live_workers(r, settings.prefix), server_ms(await r.time())
        finally:
            await r.aclose()

    workers, now = _run(go)
    _console().print(terminal.workers_table(workers, now))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """One page of a type's jobs in a state; the next page's cursor at the end."""
    from streamjobs import terminal
    from streamjobs.contract import JobState
    from streamjobs.listing import list_jobs

    check_type_name(args.type)
    url = resolve_url(args)
    settings = _settings()
    state = JobState(args.state)

    async def go() -> Any:
        r = client_from_url(url)
        try:
            return await list_jobs(r, TypeKeys(settings.prefix, args.type), state,
                                   cursor=args.cursor, limit=args.limit)
        finally:
            await r.aclose()

    page = _run(go)
    console = _console()
    console.print(terminal.jobs_table(args.type, state, page))
    if page.next_cursor:
        console.print(f"# next page: streamjobs jobs {args.type} --state {state.value} "
                      f"--cursor '{page.next_cursor}'", markup=False)
    return 0


#: Most events ``top`` shows.
MAX_TOP_EVENTS = 1000


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of every type, worker and the types' last --events events, refreshed
    every --interval seconds."""
    from streamjobs import terminal

    if args.interval <= 0 or args.iterations < 0:
        raise InvalidArgument("--interval must be > 0 and --iterations >= 0")
    if not 0 <= args.events <= MAX_TOP_EVENTS:
        raise InvalidArgument(f"--events must be from 0 to {MAX_TOP_EVENTS}")
    url = resolve_url(args)
    settings = _settings()

    async def go() -> int:
        r = client_from_url(url)
        try:
            return await terminal.run_top(r, settings.prefix, _console(), args.interval,
                                          args.iterations, args.events)
        finally:
            await r.aclose()

    _run(go)
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    url = resolve_url(args)
    handler = _DLQ[args.dlq_command]

    async def go() -> int:
        dl = DeadLetters(url, settings=_settings())
        try:
            return await handler(dl, args)
        finally:
            await dl.aclose()

    return _run(go)


async def _dlq_list(dl: Any, args: argparse.Namespace) -> int:
    jobs, nxt = await dl.list(args.type, after=args.after, count=args.count)
    for j in jobs:
        print(f"{j.id}\tattempts={j.attempts}\t{j.reason}\t{j.error[:120]}")
    print(f"# {len(jobs)} shown; next page: --after {nxt}" if nxt else f"# {len(jobs)} shown")
    return 0


async def _dlq_show(dl: Any, args: argparse.Namespace) -> int:
    st = await dl.show(args.type, args.id)
    if st is None:
        print(f"error: no dead job {args.id!r} of type {args.type!r}", file=sys.stderr)
        return 1
    _print_json(st.to_dict())
    return 0


async def _dlq_retry(dl: Any, args: argparse.Namespace) -> int:
    if args.all:
        n = await dl.retry_all(args.type, error_contains=args.error_contains)
        print(f"retried {n}")
    elif args.id:
        await dl.retry(args.type, args.id)
        print(f"retried {args.id}")
    else:
        raise InvalidArgument("give a job id or --all")
    return 0


async def _dlq_purge(dl: Any, args: argparse.Namespace) -> int:
    if args.id:
        await dl.purge_one(args.type, args.id)
        print(f"purged {args.id}")
    elif args.yes:
        print(f"purged {await dl.purge(args.type, error_contains=args.error_contains)}")
    else:
        raise InvalidArgument("give a job id, or --yes to purge every dead job of the type")
    return 0


_DLQ = {"list": _dlq_list, "show": _dlq_show, "retry": _dlq_retry, "purge": _dlq_purge}


def cmd_types(args: argparse.Namespace) -> int:
    """`types delete TYPE --yes`: every key of the type, and the type itself.
    `types partitions TYPE [N]`: its partition count (set when N is given)."""
    check_type_name(args.type)
    if args.types_command == "partitions":
        return _partitions(args)
    if args.types_command == "show":
        _print_json(_with_producer(resolve_url(args), lambda p: describe_type(
            p.redis, p.keys(args.type))))
        return 0
    if not args.yes:
        raise InvalidArgument(f"deleting type {args.type!r} removes all its jobs, records and "
                         "dead letters: add --yes to confirm")
    url = resolve_url(args)
    settings = _settings()

    async def go() -> int:
        r = client_from_url(url)
        try:
            return await delete_type(r, args.type, prefix=settings.prefix)
        finally:
            await r.aclose()

    print(f"deleted type {args.type} ({_run(go)} keys)")
    return 0


def _with_producer(url: str, fn: Callable[[Producer], Awaitable[T]]) -> T:
    async def go() -> T:
        async with Producer(url, settings=_settings()) as p:
            return await fn(p)

    return _run(go)


def cmd_pause(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    changed = _with_producer(resolve_url(args), lambda p: p.pause(args.type))
    print(f"paused {args.type}" if changed else f"{args.type} was already paused")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    check_type_name(args.type)
    changed = _with_producer(resolve_url(args), lambda p: p.resume(args.type))
    print(f"resumed {args.type}" if changed else f"{args.type} was not paused")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    """`schedule add|list|remove|pause|resume|run-now`."""
    url, verb = resolve_url(args), args.schedule_command
    if verb == "add":
        s = _with_producer(url, lambda p: p.schedule(
            args.name, args.type, args.payload, cron=args.cron, every=args.every, tz=args.tz,
            max_attempts=args.max_attempts, timeout=args.timeout, paused=args.paused,
            priority=args.priority))
        _print_json(s.to_dict())
    elif verb == "list":
        for s in _with_producer(url, lambda p: p.schedules()):
            print(orjson.dumps(s.to_dict()).decode())
    else:
        act: dict[str, Callable[[Producer], Awaitable[Any]]] = {
            "remove": lambda p: p.unschedule(args.name),
            "pause": lambda p: p.pause_schedule(args.name),
            "resume": lambda p: p.resume_schedule(args.name),
            "run-now": lambda p: p.run_schedule_now(args.name),
        }
        out = _with_producer(url, act[verb])
        if out is None or out is False:
            print(f"error: no schedule {args.name!r}", file=sys.stderr)
            return 1
        if verb == "remove":
            print(f"removed {args.name}")
        elif verb == "run-now":
            print(out)
        else:
            _print_json(out.to_dict())
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    """`webhooks set|list|remove`."""
    url, verb = resolve_url(args), args.webhooks_command
    if verb == "set":
        events = [e.strip() for e in args.events.split(",") if e.strip()]
        hook = _with_producer(url, lambda p: p.set_webhook(
            args.type, args.hook_url, name=args.name, events=events, secret=args.secret))
        _print_json(hook.public())
    elif verb == "list":
        for hook in _with_producer(url, lambda p: p.webhooks(args.type)):
            print(orjson.dumps(hook.public()).decode())
    elif _with_producer(url, lambda p: p.remove_webhook(args.type, args.name)):
        print(f"removed {args.type} {args.name}")
    else:
        print(f"error: no webhook {args.name!r} of {args.type}", file=sys.stderr)
        return 1
    return 0


def _partitions(args: argparse.Namespace) -> int:
    url, settings = resolve_url(args), _settings()
    tk = TypeKeys(settings.prefix, args.type)

    async def go() -> tuple[int, int]:
        r = client_from_url(url)
        try:
            if args.n is None:
                n = await partitions_of(r, tk)
                return n, n
            return await publish_partitions(r, tk, args.n), args.n
        finally:
            await r.aclose()

    before, now = _run(go)
    print(f"{args.type}: {now} partitions" + (f" (was {before})" if before != now else ""))
    if now < before:
        print(f"warning: jobs left in partitions {now}-{before - 1} are served only by a "
              f"worker that names them (--types {args.type}#k)", file=sys.stderr)
    return 0


# ---- process commands (see streamjobs.supervisor) ----------------------------------


def log_config(args: argparse.Namespace) -> LogConfig:
    return LogConfig(verbosity=min(args.verbose, 2), format=args.log_format)


def worker_config(args: argparse.Namespace) -> supervisor.WorkerConfig:
    return supervisor.WorkerConfig(
        modules=tuple(args.modules), types=tuple(t for t in args.types.split(",") if t),
        concurrency=args.concurrency, processes=args.processes, grace=args.grace,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, log=log_config(args),
    )


def cmd_worker(args: argparse.Namespace) -> int:
    return supervisor.worker_command(worker_config(args), resolve_url(args), _settings())


def cmd_up(args: argparse.Namespace) -> int:
    cfg = supervisor.UpConfig(worker_config(args), url=args.url, api=not args.no_api,
                              api_port=args.api_port)
    return supervisor.up_command(cfg, _settings())


def cmd_server(args: argparse.Namespace) -> int:
    return supervisor.server_command(_settings())


def cmd_api(args: argparse.Namespace) -> int:
    # Lazy: FastAPI and pydantic take ~0.3 s to import, which every other command skips.
    from streamjobs.api import serve

    settings = _settings()
    serve(resolve_url(args), settings, host=args.host, port=args.port, workers=args.workers,
          access_log=args.access_log)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.getcwd())
    sys.argv = ["bench", *args.bench_args]
    try:
        runpy.run_module("bench", run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0

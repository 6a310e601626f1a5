"""What each CLI command does. Client commands print JSON or small tables."""

from __future__ import annotations

import os
import runpy
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson

from streamjobs import supervisor
from streamjobs.admin import delete_type
from streamjobs.config import Settings
from streamjobs.connection import client_from_url
from streamjobs.counts import known_types, types_stats
from streamjobs.dead import DeadLetters
from streamjobs.embedded import find_data_dir
from streamjobs.errors import ConfigError, InvalidArgument, ServerError
from streamjobs.events import Events, events_on, switch_events
from streamjobs.keys import TypeKeys, check_type_name
from streamjobs.logs import LogConfig, redact
from streamjobs.producer import Producer

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

    async def go() -> str:
        async with Producer(url, settings=_settings()) as p:
            return await p.enqueue(args.type, args.payload, job_id=args.job_id,
                                   delay=args.delay, max_attempts=args.max_attempts,
                                   timeout=args.timeout)

    print(_run(go))
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
            types = await known_types(r, settings.prefix)
            return await types_stats(r, [TypeKeys(settings.prefix, t) for t in types])
        finally:
            await r.aclose()

    rows = _run(go)
    cols = ["type", "waiting", "running", "delayed", "dead", "completed"]
    print("  ".join(f"{c:>12}" for c in cols))
    for s in rows:
        print("  ".join(f"{getattr(s, c)!s:>12}" for c in cols))
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
    """`types delete TYPE --yes`: every key of the type, and the type itself."""
    check_type_name(args.type)
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
    serve(resolve_url(args), settings, host=args.host, port=args.port)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.getcwd())
    sys.argv = ["bench", *args.bench_args]
    try:
        runpy.run_module("bench", run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0

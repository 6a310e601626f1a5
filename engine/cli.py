"""The ``streamjobs`` command line.

Bad input and an unreachable server print one line on stderr and exit non-zero; no
traceback reaches the user.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from streamjobs import commands as runner
from streamjobs.errors import StreamJobsError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_ERROR = 1


def _json_arg(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON payload: {e}") from e


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--types", default="", help="comma-separated types (default: all registered)")
    p.add_argument("--concurrency", type=int, default=16, help="jobs run at once per process")
    p.add_argument("--processes", type=int, default=1, help="worker processes (multi-core)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to finish on shutdown")
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address the /metrics server binds (0.0.0.0 in a container)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamjobs", description=__doc__)
    ap.add_argument("--url", help="server URL (default: STREAMJOBS_REDIS_URL, else the "
                                  "server started by `streamjobs up`)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start server (embedded if no URL), API and workers")
    up.add_argument("modules", nargs="*", default=["handlers"], help="handler modules")
    _add_worker_args(up)
    up.add_argument("--no-api", action="store_true", help="do not start the HTTP API")
    up.add_argument("--api-port", type=int, default=None)

    w = sub.add_parser("worker", help="run workers for handler modules")
    w.add_argument("modules", nargs="+", help="importable modules that register handlers")
    _add_worker_args(w)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)

    sub.add_parser("server", help="run only the embedded server (foreground)")

    e = sub.add_parser("enqueue", help="enqueue one job")
    e.add_argument("type")
    e.add_argument("payload", type=_json_arg, help="JSON payload")
    e.add_argument("--delay", type=float, default=None, help="seconds from now")
    e.add_argument("--id", dest="job_id", default=None, help="job id (idempotent)")
    e.add_argument("--max-attempts", type=int, default=None)
    e.add_argument("--timeout", type=float, default=None)

    s = sub.add_parser("status", help="show one job")
    s.add_argument("type")
    s.add_argument("id")

    sub.add_parser("stats", help="per type: waiting, running, delayed, dead, completed")

    d = sub.add_parser("dlq", help="dead letters")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    dl = dsub.add_parser("list", help="list dead jobs, oldest first")
    dl.add_argument("type")
    dl.add_argument("--after", default=None, help="cursor from the previous page")
    dl.add_argument("--count", type=int, default=20)
    ds = dsub.add_parser("show", help="one dead job, with its traceback")
    ds.add_argument("type")
    ds.add_argument("id")
    dr = dsub.add_parser("retry", help="retry one dead job, or --all")
    dr.add_argument("type")
    dr.add_argument("id", nargs="?")
    dr.add_argument("--all", action="store_true")
    dr.add_argument("--error-contains", default=None)
    dp = dsub.add_parser("purge", help="delete dead jobs (one id, or all with --yes)")
    dp.add_argument("type")
    dp.add_argument("id", nargs="?")
    dp.add_argument("--yes", action="store_true", help="confirm purging all")
    dp.add_argument("--error-contains", default=None)

    b = sub.add_parser("bench", help="run the benchmark suite (bench/)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    command: Callable[[argparse.Namespace], int] = getattr(runner, f"cmd_{args.command}")
    try:
        return command(args)
    except RedisConnectionError as e:
        print(f"error: cannot reach the server ({runner.describe_url(args)}): {e}",
              file=sys.stderr)
    except (StreamJobsError, RedisError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR

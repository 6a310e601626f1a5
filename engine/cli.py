"""The ``streamjobs`` command line.

Bad input and an unreachable server print one line on stderr and exit non-zero; no
traceback reaches the user.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from streamjobs import commands as runner
from streamjobs import logs
from streamjobs.contract import DedupMode, ParentPolicy, Priority
from streamjobs.errors import StreamJobsError
from streamjobs.listing import LISTABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_ERROR = 1
#: Global options that take a value (to find the command name in argv).
_VALUED = {"--url", "--log-format"}


def _json_arg(text: str) -> Any:
    """A JSON payload: inline, ``@path`` (a file) or ``-`` (stdin)."""
    try:
        if text == "-":
            text = sys.stdin.read()
        elif text.startswith("@"):
            text = Path(text[1:]).read_text()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read payload: {e}") from e
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON payload: {e}") from e


def _version() -> str:
    try:
        return version("streamjobs")
    except PackageNotFoundError:
        return "unknown"


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
    ap.add_argument("-v", "--verbose", action="count", default=0,
                    help="-v: a line per completed job; -vv: debug")
    ap.add_argument("--log-format", choices=logs.FORMATS, default="text",
                    help="log lines as text or one JSON object each")
    ap.add_argument("--version", action="version", version=f"streamjobs {_version()}")
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
    api.add_argument("--workers", type=int, default=1,
                     help="API processes on one port (e.g. the number of cores)")
    api.add_argument("--access-log", action="store_true",
                     help="log a line per request (off: it costs ~9%% of a request)")

    sub.add_parser("server", help="run only the embedded server (foreground)")

    e = sub.add_parser("enqueue", help="enqueue one job")
    e.add_argument("type")
    e.add_argument("payload", type=_json_arg,
                   help="JSON payload, @FILE to read it from a file, - from stdin")
    e.add_argument("--delay", type=float, default=None, help="seconds from now")
    e.add_argument("--id", dest="job_id", default=None, help="job id (idempotent)")
    e.add_argument("--max-attempts", type=int, default=None)
    e.add_argument("--timeout", type=float, default=None)
    e.add_argument("--expires-in", type=float, default=None,
                   help="seconds: not started by then, the job never runs (expired)")
    e.add_argument("--dedup-key", default=None,
                   help="deduplication key: a job of this key may answer for this one")
    e.add_argument("--dedup-mode", choices=[m.value for m in DedupMode], default=None,
                   help="unique (default), throttle or debounce")
    e.add_argument("--dedup-ttl", type=float, default=None, help="the key's window, seconds")
    e.add_argument("--priority", choices=[p.value for p in Priority], default=None,
                   help="high, normal (default) or low: higher levels start first")
    e.add_argument("--after", action="append", default=[], metavar="TYPE/ID",
                   help="a parent (repeat for more): the job waits until each has ended")
    e.add_argument("--on-parent-failure", choices=[p.value for p in ParentPolicy],
                   default=None, help="fail (default), run or drop, when a parent fails")

    c = sub.add_parser("cancel", help="cancel a job (waiting, delayed, or running: its "
                                      "worker stops the attempt)")
    c.add_argument("type")
    c.add_argument("id")

    ls = sub.add_parser("list", help="list a type's jobs in one state, oldest first")
    ls.add_argument("type")
    ls.add_argument("--state", choices=[s.value for s in LISTABLE], default="waiting")
    ls.add_argument("--count", type=int, default=20)
    ls.add_argument("--cursor", default=None, help="next_cursor of the previous page")

    s = sub.add_parser("status", help="show one job")
    s.add_argument("type")
    s.add_argument("id")

    wa = sub.add_parser("watch", help="print the types' events (one JSON line each) as "
                                      "they happen")
    wa.add_argument("types", nargs="+", metavar="TYPE")
    wa.add_argument("--since", default="$", help="'$' (default): from now on; '0': every "
                                                 "event the streams still hold; or an id")
    wa.add_argument("--count", type=int, default=None, help="stop after this many events")

    ev = sub.add_parser("events", help="switch a type's events stream on or off (off: no "
                                       "events, results or watching; saves ~3 writes a job)")
    ev.add_argument("type")
    ev.add_argument("switch", choices=["on", "off", "show"])

    sub.add_parser("stats", help="per type: waiting, running, delayed, dead, completed, "
                                 "cancelled, expired")

    sub.add_parser("workers", help="live workers and the jobs each runs now")

    j = sub.add_parser("jobs", help="one page of a type's jobs in a state")
    j.add_argument("type")
    j.add_argument("--state", default="waiting", choices=[s.value for s in LISTABLE])
    j.add_argument("--limit", type=int, default=20, help="jobs per page (1-1000)")
    j.add_argument("--cursor", default=None, help="the cursor the previous page printed")

    top = sub.add_parser("top", help="live overview of types, workers and last events "
                                            "(refreshing)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=0,
                     help="stop after this many refreshes (0: until Ctrl-C)")
    top.add_argument("--events", type=int, default=10,
                     help="show the types' last this many events (0: none)")

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

    t = sub.add_parser("types", help="manage job types")
    tsub = t.add_subparsers(dest="types_command", required=True)
    td = tsub.add_parser("delete", help="delete a type: its stream, jobs, records, dead "
                                        "letters and stats (stop its workers first)")
    td.add_argument("type")
    td.add_argument("--yes", action="store_true", help="confirm")
    tsh = tsub.add_parser("show", help="a type's counts, policy and limits as its live "
                                       "workers run them, and what the limits hold now (JSON)")
    tsh.add_argument("type")
    tp = tsub.add_parser("partitions", help="show (or set) how many partitions a type's "
                                            "jobs are spread over; its workers set it too")
    tp.add_argument("type")
    tp.add_argument("n", nargs="?", type=int, help="the new count (1 to unpartition)")

    for verb, what in (("pause", "workers start no job of TYPE until resumed (jobs still "
                                 "enqueue; running ones finish)"),
                       ("resume", "resume a paused type")):
        pr = sub.add_parser(verb, help=what)
        pr.add_argument("type")

    sc = sub.add_parser("schedule", help="cron and interval schedules (each tick enqueued "
                                         "once by the workers of its type)")
    ssub = sc.add_subparsers(dest="schedule_command", required=True)
    sa = ssub.add_parser("add", help="create or replace a schedule")
    sa.add_argument("name")
    sa.add_argument("type")
    sa.add_argument("payload", type=_json_arg, nargs="?", default=None,
                    help="JSON payload of each tick's job")
    when = sa.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5 fields, or 6 with the seconds first")
    when.add_argument("--every", type=float, help="interval in seconds (>= 1)")
    sa.add_argument("--tz", default="UTC", help="IANA time zone of the cron expression")
    sa.add_argument("--max-attempts", type=int, default=None)
    sa.add_argument("--timeout", type=float, default=None)
    sa.add_argument("--priority", choices=[p.value for p in Priority], default=None,
                    help="each tick's priority level")
    sa.add_argument("--paused", action="store_true", help="create it paused")
    ssub.add_parser("list", help="every schedule, as JSON lines")
    for verb, what in (("remove", "delete a schedule (its jobs stay)"),
                       ("pause", "stop a schedule's ticks"),
                       ("resume", "resume a schedule (next tick: the first after now)"),
                       ("run-now", "enqueue the schedule's job once now")):
        one = ssub.add_parser(verb, help=what)
        one.add_argument("name")

    wh = sub.add_parser("webhooks", help="URLs called when a type's jobs complete or end "
                                         "dead (delivered by workers with webhooks on)")
    wsub = wh.add_subparsers(dest="webhooks_command", required=True)
    ws = wsub.add_parser("set", help="create or replace a webhook of a type")
    ws.add_argument("type")
    ws.add_argument("hook_url", metavar="url", help="an http:// or https:// URL (POSTed JSON)")
    ws.add_argument("--name", default="default", help="several webhooks of a type: by name")
    ws.add_argument("--events", default="completed,dead",
                    help="comma-separated: completed, dead (default both)")
    ws.add_argument("--secret", default="",
                    help="HMAC-SHA256 key of the X-Streamjobs-Signature header (default: "
                         "unsigned)")
    wl = wsub.add_parser("list", help="webhooks of a type, or of every type (JSON lines, "
                                      "no secrets)")
    wl.add_argument("type", nargs="?")
    wr = wsub.add_parser("remove", help="delete a webhook")
    wr.add_argument("type")
    wr.add_argument("--name", default="default")

    sub.add_parser("bench", help="run the benchmark suite (bench/); every argument after "
                                 "`bench` is the suite's own (try `bench --help`)",
                   add_help=False)
    return ap


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Like ``parse_args``, except that everything after ``bench`` goes to the bench
    suite untouched (argparse's REMAINDER refuses a leading ``--option``)."""
    argv = list(argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _VALUED else 1
    if i < len(argv) and argv[i] == "bench":
        args = build_parser().parse_args(argv[: i + 1])
        args.bench_args = argv[i + 1 :]
        return args
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        logs.setup(runner.log_config(args))
        command: Callable[[argparse.Namespace], int] = getattr(runner, f"cmd_{args.command}")
        return command(args)
    except RedisConnectionError as e:
        _error(f"cannot reach the server ({runner.describe_url(args)}): {e}")
    except (StreamJobsError, RedisError, OSError) as e:
        _error(str(e))
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def _error(text: str) -> None:
    print(f"error: {logs.redact(text)}", file=sys.stderr)

"""Terminal views (rich): ``streamjobs workers``, ``streamjobs jobs`` and ``streamjobs top``.

They read what the dashboard reads (counts.py, listing.py, presence.py, history.py,
events.py), straight from the server; nothing here writes but the throughput sample
``top`` takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamjobs.contract import Event, JobState
from streamjobs.counts import known_types, server_ms, types_stats
from streamjobs.events import recent
from streamjobs.history import throughput
from streamjobs.keys import TypeKeys
from streamjobs.presence import live_workers

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from streamjobs.counts import TypeStats
    from streamjobs.events import JobEvent
    from streamjobs.listing import JobSummary, Page

#: One colour per state, as in the web dashboard.
STATE_STYLE = {"waiting": "blue", "running": "magenta", "delayed": "yellow", "dead": "red",
               "completed": "green"}
STATES = tuple(STATE_STYLE)
_ENDED = "bright_black"  # cancelled, expired: grey, as in the web dashboard
#: An event wears the colour of the state it begins or stands for (the dashboard's CSS).
EVENT_STYLE: dict[str, str] = {
    Event.ENQUEUED: STATE_STYLE["waiting"], Event.DEAD_RETRIED: STATE_STYLE["waiting"],
    Event.UNBLOCKED: STATE_STYLE["waiting"],
    Event.STARTED: STATE_STYLE["running"], Event.PROGRESS: STATE_STYLE["running"],
    Event.RETRYING: STATE_STYLE["delayed"], Event.DEBOUNCED: STATE_STYLE["delayed"],
    Event.FAILED: STATE_STYLE["dead"], Event.DEAD: STATE_STYLE["dead"],
    Event.COMPLETED: STATE_STYLE["completed"],
    Event.CANCELLED: _ENDED, Event.EXPIRED: _ENDED,
}


def _ago(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "-"
    s = max(0.0, (now_ms - ms) / 1000)
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.0f} min" if s < 3600 else f"{s / 3600:.1f} h"


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def workers_table(workers: list[dict[str, Any]], now_ms: int) -> Table | Text:
    """One row per worker, and one line per job it runs now."""
    if not workers:
        return Text("no live workers (start one: streamjobs worker MODULE)", style="dim")
    t = Table(title="workers", title_justify="left", expand=True)
    for col in ("worker", "host", "pid", "types", "in flight", "heartbeat", "running now"):
        t.add_column(col, justify="right" if col in ("pid", "in flight", "heartbeat")
                     else "left")
    for w in workers:
        age = now_ms - (w.get("last_heartbeat") or 0)
        beat = Text(_ago(w.get("last_heartbeat"), now_ms),
                    style="bold yellow" if age > 11_000 else "")
        if age > 11_000:
            beat.append(" stale")
        running = "\n".join(
            f"{r.get('type')}/{r.get('id')} (attempt {r.get('attempt')}, "
            f"{_ago(r.get('started_at'), now_ms)})" for r in w.get("running", [])) or "idle"
        t.add_row(str(w.get("name")), str(w.get("host")), str(w.get("pid")),
                  ",".join(w.get("types", [])), f"{w.get('in_flight')}/{w.get('concurrency')}",
                  beat, running)
    return t


def jobs_table(type_: str, state: JobState, page: Page) -> Table | Text:
    if not page.jobs:
        return Text(f"no {state.value} jobs of {type_}", style="dim")
    columns: dict[JobState, list[tuple[str, Callable[[JobSummary], str]]]] = {
        JobState.WAITING: [("enqueued", lambda j: _when(j.enqueued_at)),
                           ("attempts", lambda j: str(j.attempts))],
        JobState.RUNNING: [("worker", lambda j: j.consumer or "-"),
                           ("running for", lambda j: f"{(j.idle_ms or 0) / 1000:.1f} s"),
                           ("deliveries", lambda j: str(j.deliveries))],
        JobState.DELAYED: [("due", lambda j: _when(j.due_at))],
        JobState.COMPLETED: [("finished", lambda j: _when(j.finished_at))],
        JobState.DEAD: [("failed", lambda j: _when(j.finished_at)),
                        ("attempts", lambda j: str(j.attempts)),
                        ("error", lambda j: f"{j.reason}: {(j.error or '')[:100]}")],
    }
    cols = columns[state]
    t = Table(title=f"{type_}: {state.value}", title_justify="left",
              title_style=STATE_STYLE[state.value])
    t.add_column("id", no_wrap=True)
    for name, _ in cols:
        t.add_column(name)
    for j in page.jobs:
        t.add_row(j.id, *(f(j) for _, f in cols))
    return t


def types_table(stats: list[TypeStats], per_minute: dict[str, tuple[float, float]]) -> Table | Text:
    if not stats:
        return Text("no job types yet (enqueue one: streamjobs enqueue demo '{}')", style="dim")
    t = Table(title="types", title_justify="left", expand=True)
    t.add_column("type")
    for state in STATES:
        t.add_column(state, justify="right", style=STATE_STYLE[state])
    t.add_column("done/min", justify="right")
    t.add_column("failed", justify="right")
    t.add_column("oldest waiting", justify="right")
    for s in stats:
        done, failed = per_minute.get(s.type, (0.0, 0.0))
        rate = 100 * failed / (done + failed) if done + failed else 0.0
        t.add_row(s.type, *(f"{getattr(s, st):,}" for st in STATES), f"{done:,.1f}",
                  f"{rate:.1f} %", f"{s.oldest_waiting_age:.1f} s" if s.waiting else "-")
    return t


def _detail(e: JobEvent) -> str:
    d = e.data
    if "progress" in d:
        return f"{float(d['progress']) * 100:.0f}% {d.get('message', '')}".strip()
    text = d.get("error") or d.get("reason") or ""
    return text.splitlines()[0] if text else ""


def events_table(events: list[JobEvent], off: list[str]) -> Group:
    """The last events of the shown types, newest first; the types whose events are off."""
    parts: list[Table | Text] = []
    if events:
        t = Table(title="last events", title_justify="left", expand=True)
        for col in ("at", "type", "event", "job", "attempt", "detail"):
            t.add_column(col, justify="right" if col == "attempt" else "left",
                         no_wrap=col != "detail")
        for e in events:
            t.add_row(time.strftime("%H:%M:%S", time.localtime(e.at / 1000)) if e.at else "-",
                      e.type, Text(e.event, style=EVENT_STYLE.get(e.event, "")), e.id,
                      str(e.attempt or ""), _detail(e)[:120])
        parts.append(t)
    else:
        parts.append(Text("last events: none yet", style="dim"))
    if off:
        parts.append(Text(f"events off: {', '.join(off)} (streamjobs events TYPE on)",
                          style="dim"))
    return Group(*parts)


@dataclass
class Snapshot:
    stats: list[TypeStats]
    workers: list[dict[str, Any]]
    #: Per type: jobs completed and attempts failed per minute over the last 5 minutes.
    per_minute: dict[str, tuple[float, float]]
    now_ms: int
    #: The last events of every type, newest first (none asked: not shown).
    events: list[JobEvent] | None = None
    #: The types whose events are switched off.
    events_off: list[str] = field(default_factory=list)


async def snapshot(redis: Redis, prefix: str, minutes: int = 5,
                   events: int = 0) -> Snapshot:
    """What ``top`` shows; with ``events`` > 0, the last that many events too."""
    names = await known_types(redis, prefix)
    tks = [TypeKeys(prefix, t) for t in names]
    stats = await types_stats(redis, tks)
    now = server_ms(await redis.time())
    _, series = await throughput(redis, tks, now, minutes)
    rates = {s.type: (sum(s.completed) / minutes, sum(s.failed) / minutes) for s in series}
    snap = Snapshot(stats, await live_workers(redis, prefix), rates, now)
    if events > 0:
        snap.events, snap.events_off = await recent(redis, tks, events)
    return snap


def top_view(snap: Snapshot) -> Group:
    clock = time.strftime("%H:%M:%S", time.localtime(snap.now_ms / 1000))
    head = Text(f"streamjobs top  {clock}  (rates: last 5 min; Ctrl-C quits)", style="bold")
    views: list[Table | Text | Group] = [types_table(snap.stats, snap.per_minute),
                                         workers_table(snap.workers, snap.now_ms)]
    if snap.events is not None:
        views.append(events_table(snap.events, snap.events_off))
    return Group(head, *views)


async def run_top(redis: Redis, prefix: str, console: Console, interval: float,
                  iterations: int, events: int = 10) -> int:
    """Refresh every ``interval`` s; stop after ``iterations`` views (0: until Ctrl-C);
    the last ``events`` events of the types below the workers (0: none)."""
    shown = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            live.update(top_view(await snapshot(redis, prefix, events=events)), refresh=True)
            shown += 1
            if iterations and shown >= iterations:
                return shown
            await anyio.sleep(interval)

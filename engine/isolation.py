"""Where sync (``def``) handlers run: daemon threads, or child processes (opt-in).

Threads (the default) cannot be stopped. An attempt that runs over its timeout keeps its
slot and its entry until the thread returns, and only then fails as a timeout, so one
worker never runs two attempts of a job at once. At shutdown the worker stops waiting
for them: the threads are daemons and end with the process instead of finishing jobs
that were released.

Processes (``isolation="process"``) can be stopped: each attempt runs in a child process
that is killed when the attempt times out, is cancelled or the worker shuts down. The
job crosses as JSON-compatible data and the handler as its module and name; children are
recycled after ``max_tasks_per_child`` attempts or once their peak RSS exceeds
``max_child_memory_mb``.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Callable

Finished = tuple[bool, Any]  # (True, result) or (False, exception)


class _HandlerThread:
    """One daemon thread running calls handed to it one at a time."""

    def __init__(self, idle: deque[_HandlerThread]) -> None:
        self._idle = idle
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Finished], None]]
                                       | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="streamjobs handler", daemon=True).start()

    def submit(self, call: Callable[[], Any], done: Callable[[Finished], None]) -> None:
        self._calls.put((call, done))

    def stop(self) -> None:
        self._calls.put(None)

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            call, done = item
            try:
                finished: Finished = (True, call())
            except BaseException as e:  # handed to the waiting task
                finished = (False, e)
            done(finished)
            del item, call, done, finished
            self._idle.append(self)


class Threads:
    """Runs sync calls in daemon threads, reusing idle ones (at most one per runner)."""

    def __init__(self) -> None:
        self._idle: deque[_HandlerThread] = deque()

    async def run(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)`` in a thread. Cancelling this abandons the thread, which runs on."""
        token = anyio.lowlevel.current_token()
        done = anyio.Event()
        box: list[Finished] = []

        def finished(outcome: Finished) -> None:
            box.append(outcome)
            try:
                anyio.from_thread.run_sync(done.set, token=token)
            except RuntimeError:  # the event loop has finished: nobody waits any more
                pass

        thread = self._idle.pop() if self._idle else _HandlerThread(self._idle)
        ctx = contextvars.copy_context()
        thread.submit(lambda: ctx.run(fn, arg), finished)
        await done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Idle threads exit; busy ones after their call (or with the process)."""
        while self._idle:
            self._idle.pop().stop()

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

import contextlib
import contextvars
import dataclasses
import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import queue
import signal
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from streamjobs.contract import Attempt
from streamjobs.job import Job
from streamjobs.outcomes import Result, outcome_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

Finished = tuple[bool, Any]  # (True, result) or (False, exception)


class _HandlerThread:
    """One daemon thread running calls handed to it one at a time."""

    def __init__(self, owner: Threads) -> None:
        self._owner = owner
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
            if not self._owner.idle(self):
                return


class Threads:
    """Runs sync calls in daemon threads, reusing idle ones (at most one per runner)."""

    def __init__(self) -> None:
        self._idle: deque[_HandlerThread] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def idle(self, thread: _HandlerThread) -> bool:
        """A thread finished its call: keep it for the next one, unless closed."""
        with self._lock:
            if not self._closed:
                self._idle.append(thread)
            return not self._closed

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

        thread = self._idle.pop() if self._idle else _HandlerThread(self)
        ctx = contextvars.copy_context()
        thread.submit(lambda: ctx.run(fn, arg), finished)
        await done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def close(self) -> None:
        """Idle threads exit; busy ones after their call (or with the process)."""
        with self._lock:
            self._closed = True
            while self._idle:
                self._idle.pop().stop()


# ---- processes ---------------------------------------------------------------------



def _context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    # forkserver: children fork from a small clean server process (no threads, no event
    # loop, no sockets of the worker); spawn where forkserver is not available.
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def job_data(job: Job) -> dict[str, Any]:
    """The job as JSON-compatible data, to rebuild it in the child."""
    data = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
    data["headers"] = dict(job.headers)
    del data["context"]  # progress and log lines stay in the parent
    return data


def _peak_rss_mb() -> float:
    import resource  # Unix only, like the children's start methods that use it

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def _child_main(conn: Connection) -> None:
    """A child's loop: one attempt per message, until told to stop or killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        module, qualname, data = message
        fn: Any = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        r = outcome_of(fn, Job(**data))
        # plain values back, like the job came: the kind as its text
        conn.send((r.kind.value, r.result, r.error, r.traceback, r.retry_after, _peak_rss_mb()))


@dataclasses.dataclass(slots=True)
class _Child:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    tasks: int = 0

    def kill(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.join(5)

    def retire(self) -> None:
        """Ask it to exit; multiprocessing reaps it later."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()


class ChildDied(Exception):
    """The child process running an attempt exited without answering."""


class Processes:
    """Child processes for one type's sync handler, reused between attempts."""

    def __init__(self, max_tasks: int = 0, max_memory_mb: int = 0) -> None:
        self.max_tasks, self.max_memory_mb = max_tasks, max_memory_mb
        self._ctx = _context()
        if isinstance(self._ctx, multiprocessing.context.ForkServerContext):
            # imported once in the server, not in every child (only when it starts)
            self._ctx.set_forkserver_preload(["streamjobs.worker"])
        self._idle: list[_Child] = []

    def _start(self) -> _Child:
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(target=_child_main, args=(child_end,),
                                    name="streamjobs child", daemon=True)
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    async def run(self, fn: Callable[[Job], Any], job: Job, clock: anyio.CancelScope | None,
                  limit_s: float) -> Result:
        """One attempt in a child; its timeout (``clock``'s deadline) starts once the child
        is up. Cancelling it (timeout, shutdown) kills the child."""
        child = self._idle.pop() if self._idle else await anyio.to_thread.run_sync(self._start)
        if clock is not None:
            clock.deadline = anyio.current_time() + limit_s
        try:
            child.conn.send((fn.__module__, fn.__qualname__, job_data(job)))
            await anyio.wait_readable(child.conn.fileno())
            kind, result, error, traceback, retry_after, peak_mb = child.conn.recv()
        except (EOFError, OSError):
            child.kill()
            raise ChildDied(f"the handler's process exited with code "
                            f"{child.process.exitcode}") from None
        except BaseException:
            child.kill()
            raise
        child.tasks += 1
        if (self.max_tasks and child.tasks >= self.max_tasks) or (
            self.max_memory_mb and peak_mb > self.max_memory_mb
        ):
            child.retire()
        else:
            self._idle.append(child)
        return Result(Attempt(kind), result, error, traceback, retry_after)

    def close(self) -> None:
        while self._idle:
            child = self._idle.pop()
            child.retire()
            child.process.join(1)
            if child.process.is_alive():
                child.kill()

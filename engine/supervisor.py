"""Processes: a worker process, N of them under one parent, and `streamjobs up`.

Children run in their own process group, so a terminal's Ctrl-C reaches only the parent:
it forwards one SIGTERM (each child finishes its in-flight jobs) and, on a second signal,
SIGKILL (the pending lists keep the jobs). A child that exits while nobody asked it to is
started again after a capped exponential backoff; the others keep running. Under `up` the
embedded server is watched the same way and restarted on its port and data directory.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from streamjobs.embedded import DataDir, EmbeddedServer, die_with_parent
from streamjobs.errors import ConfigError, InvalidArgument, ServerError, StreamJobsError
from streamjobs.logs import LogConfig, redact
from streamjobs.metrics import WorkerMetrics
from streamjobs.registry import default_registry
from streamjobs.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from streamjobs.config import Settings

log = logging.getLogger("streamjobs")

#: Restart delays of a crashed child: BASE, doubling, at most CAP; a child that ran
#: STABLE seconds starts again from BASE.
RESTART_BASE_S = 0.5
RESTART_CAP_S = 30.0
RESTART_STABLE_S = 60.0
#: A child that exits with an error this soon after its first start is misconfigured
#: (a module that does not import, a port in use): restarting cannot help.
STARTUP_S = 5.0
#: How long `up` waits for the API to answer /health before giving up.
API_READY_S = 30.0
POLL_S = 0.1
#: Signals that stop the supervisor (SIGHUP: the terminal closed; the children, in their
#: own process groups, would not hear of it).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What `streamjobs worker` (and the workers of `up`) run."""

    modules: tuple[str, ...]
    types: tuple[str, ...] = ()
    concurrency: int = 16
    processes: int = 1
    grace: float = 30.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.processes < 1:
            raise InvalidArgument("--concurrency and --processes must be >= 1")

    def child_argv(self) -> list[str]:
        """One worker process of a group of ``processes`` (metrics served by the parent)."""
        argv = [sys.executable, "-m", "streamjobs", *self.log.argv(), "worker",
                *self.modules, "--concurrency", str(self.concurrency),
                "--grace", str(self.grace)]
        if self.types:
            argv += ["--types", ",".join(self.types)]
        return argv


@dataclass(frozen=True, slots=True)
class UpConfig:
    """What `streamjobs up` runs: a server (embedded when ``url`` is None), workers, API."""

    worker: WorkerConfig
    url: str | None = None
    api: bool = True
    api_port: int | None = None


def import_handlers(modules: tuple[str, ...] | list[str]) -> None:
    """Import handler modules; the current directory is importable, as users expect."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"cannot import handler module {name!r}: {e}") from e


# ---- one worker process ------------------------------------------------------------


async def _watch_signals(on_first: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once (the PEL keeps the jobs)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        count = 0
        async for sig in signals:
            count += 1
            if count == 1:
                log.info("%s: finishing in-flight jobs (send again to exit now)",
                         signal.Signals(sig).name)
                on_first()
            else:
                log.warning("second signal: exiting now")
                os._exit(1)


def run_worker_process(cfg: WorkerConfig, url: str, settings: Settings) -> int:
    import_handlers(cfg.modules)
    metrics = WorkerMetrics(_metrics_registry(cfg))
    worker = Worker(url, default_registry, types=list(cfg.types) or None,
                    concurrency=cfg.concurrency, settings=settings, grace_period=cfg.grace,
                    metrics=metrics)
    metrics.describe(list(worker.handlers), worker.concurrency)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            started = False

            def on_signal() -> None:
                # Before start-up finished (say, the server is unreachable) nothing is in
                # flight: stop at once instead of waiting for a server that may not come.
                if not started:
                    tg.cancel_scope.cancel()
                worker.stop()

            tg.start_soon(_watch_signals, on_signal)
            async with anyio.create_task_group() as running:
                await running.start(worker.run)
                started = True
                _tell_parent_started()
                log.info("worker %s: types %s, concurrency %d", worker.name,
                         ",".join(worker.handlers), worker.concurrency)
            tg.cancel_scope.cancel()

    anyio.run(main, backend_options=_loop_options())
    log.info("worker %s stopped", worker.name)
    return 0


#: Set by `up` for its worker children (see _started): touched once the worker runs.
READY_FILE_ENV = "STREAMJOBS_READY_FILE"


def _tell_parent_started() -> None:
    ready = os.environ.get(READY_FILE_ENV)
    if ready:
        Path(ready).touch()


def _metrics_registry(cfg: WorkerConfig) -> Any:
    """A process's own registry when it serves /metrics itself; the default registry
    (written to PROMETHEUS_MULTIPROC_DIR) when a parent serves them for N processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=registry)
    return registry


def _loop_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401  (optional: absent on Windows)
    except ImportError:
        return {}
    return {"use_uvloop": True}


def worker_command(cfg: WorkerConfig, url: str, settings: Settings) -> int:
    if cfg.processes == 1:
        return run_worker_process(cfg, url, settings)
    with _worker_group(cfg, {"STREAMJOBS_REDIS_URL": url}) as children:
        return Supervisor(children).run()


@contextlib.contextmanager
def _worker_group(cfg: WorkerConfig, env: dict[str, str]) -> Iterator[list[Child]]:
    """``cfg.processes`` worker children; one /metrics endpoint aggregates them
    (prometheus multiprocess mode, in a directory removed at the end)."""
    if cfg.processes == 1:
        yield [Child("worker", cfg.child_argv(), {**os.environ, **env},
                     metrics_port=cfg.metrics_port, metrics_host=cfg.metrics_host)]
        return
    with tempfile.TemporaryDirectory(prefix="sj-metrics-") as mp_dir:
        if cfg.metrics_port:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=mp_dir)  # type: ignore[no-untyped-call]
            start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=registry)
        full_env = {**os.environ, **env, "PROMETHEUS_MULTIPROC_DIR": mp_dir}
        yield [Child(f"worker-{i + 1}", cfg.child_argv(), full_env)
               for i in range(cfg.processes)]


# ---- supervision -------------------------------------------------------------------


def restart_delay(crashes: int, cap: float = RESTART_CAP_S) -> float:
    """Seconds before a restart after ``crashes`` quick crashes in a row."""
    return min(cap, RESTART_BASE_S * 2.0 ** min(crashes, 32))


@dataclass
class Child:
    """One supervised process: started again when it exits unasked."""

    name: str
    argv: list[str]
    env: dict[str, str]
    #: Passed on to a single worker child that serves its own /metrics.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    starts: int = 0
    restart_at: float | None = None
    #: Touched by the child once it runs (a worker that cannot start never touches it).
    ready_file: Path | None = None

    @property
    def first_run(self) -> bool:
        return self.starts <= 1

    def start(self) -> None:
        self.starts += 1
        argv = self.argv
        if self.metrics_port:
            argv = [*argv, "--metrics-port", str(self.metrics_port),
                    "--metrics-host", self.metrics_host]
        env = self.env
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
            env = {**env, READY_FILE_ENV: str(self.ready_file)}
        # Own process group: the terminal's SIGINT is the parent's to forward.
        self.proc = subprocess.Popen(argv, env=env, process_group=0,
                                     preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def schedule_restart(self, now: float) -> float:
        """After an unasked exit: when to start again (capped exponential backoff)."""
        if now - self.started_at >= RESTART_STABLE_S:
            self.crashes = 0
        delay = restart_delay(self.crashes)
        self.crashes += 1
        self.restart_at = now + delay
        return delay


class Supervisor:
    """Runs children until a signal; restarts those that exit unasked."""

    def __init__(self, children: list[Child], *, watch: Callable[[], None] | None = None,
                 ready: Callable[[], bool] | None = None,
                 on_ready: Callable[[], None] | None = None, ready_timeout: float = API_READY_S
                 ) -> None:
        self.children = children
        self._watch = watch
        self._ready = ready
        self._on_ready = on_ready
        self._ready_timeout = ready_timeout
        self._signals: list[int] = []
        self._forwarded = 0
        self._failed: str | None = None

    def _on_signal(self, sig: int, _frame: Any) -> None:
        self._signals.append(sig)

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            for c in self.children:
                c.start()
            if self.children:
                log.info("started %s", ", ".join(f"{c.name} (pid {c.pid})"
                                                  for c in self.children))
            self._loop()
        finally:
            for c in self.children:  # only on an error of our own: never leave orphans
                c.signal(signal.SIGKILL)
            for s, h in old.items():
                signal.signal(s, h)
        if self._failed:
            raise StreamJobsError(self._failed)
        # Dying of the SIGTERM we sent is a clean stop (uvicorn re-raises it on exit).
        clean = (0, None, -signal.SIGTERM)
        codes = [c.poll() for c in self.children]
        return 1 if len(self._signals) > 1 or any(rc not in clean for rc in codes) else 0

    def _loop(self) -> None:
        deadline = time.monotonic() + self._ready_timeout
        announced = self._ready is None
        while True:
            self._forward()
            if self._signals or self._failed:
                if all(c.poll() is not None for c in self.children):
                    return
            else:
                self._restart_exited()
                if self._watch is not None:
                    self._watch_step()
                if not announced:
                    announced = self._check_ready(deadline)
            time.sleep(POLL_S)

    def _forward(self) -> None:
        while self._forwarded < len(self._signals):
            self._forwarded += 1
            sig = signal.SIGTERM if self._forwarded == 1 else signal.SIGKILL
            if self._forwarded == 1:
                log.info("stopping: children finish their in-flight jobs "
                         "(send again to exit now)")
            for c in self.children:
                c.signal(sig)

    def _restart_exited(self) -> None:
        now = time.monotonic()
        for c in self.children:
            rc = c.poll()
            if rc is None:
                continue
            if c.restart_at is None:
                if c.first_run and rc > 0 and now - c.started_at < STARTUP_S:
                    self.stop_all(f"{c.name} could not start (exit code {rc}; see above)")
                    return
                delay = c.schedule_restart(now)
                how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
                log.error("%s (pid %d) exited unexpectedly (%s); restarting in %.1fs",
                          c.name, c.pid, how, delay)
            elif now >= c.restart_at:
                c.start()
                log.warning("%s restarted (pid %d)", c.name, c.pid)

    def _watch_step(self) -> None:
        assert self._watch is not None
        try:
            self._watch()
        except ServerError as e:
            self.stop_all(str(e))

    def _check_ready(self, deadline: float) -> bool:
        assert self._ready is not None
        if self._ready():
            if self._on_ready is not None:
                self._on_ready()
            return True
        if time.monotonic() > deadline:
            self.stop_all(f"not ready within {self._ready_timeout:g}s")
        return False

    def stop_all(self, why: str) -> None:
        """Stop every child gracefully and make run() fail with ``why``."""
        log.error("%s; stopping", why)
        self._failed = why
        for c in self.children:
            c.signal(signal.SIGTERM)


# ---- server and `up` -----------------------------------------------------------------


class ServerKeeper:
    """The embedded server of `up`/`server`: started on its recorded port, restarted
    (same port, same AOF directory) with a capped backoff when it dies."""

    def __init__(self, settings: Settings) -> None:
        self.data = DataDir(settings.data_dir)
        self.settings = settings
        self.server: EmbeddedServer | None = None
        self._crashes = 0
        self._started_at = 0.0

    def start(self) -> EmbeddedServer:
        self.data.lock()
        try:
            port = self.data.choose_port(self.settings.embedded_port)
            self.server = EmbeddedServer(self.settings.data_dir, port=port,
                                         binary=self.settings.server_bin)
            self._start()
        except BaseException:
            self.data.unlock()
            raise
        return self.server

    def _start(self) -> None:
        assert self.server is not None
        self.server.start()
        self._started_at = time.monotonic()
        self.data.started(self.server)

    def check(self) -> None:
        """Restart a dead server; raise ServerError when it cannot come back."""
        assert self.server is not None
        rc = self.server.returncode
        if rc is None:
            return
        if time.monotonic() - self._started_at >= RESTART_STABLE_S:
            self._crashes = 0
        # Short: the loop (and the forwarding of signals) waits meanwhile.
        delay = restart_delay(self._crashes, cap=5.0)
        self._crashes += 1
        if self._crashes > 5:
            raise ServerError(f"the embedded server keeps dying (exit status {rc}); "
                              f"see {self.server.log_path}")
        log.error("the embedded server died (exit status %s); restarting it on port %d "
                  "in %.1fs (data: %s)", rc, self.server.port, delay, self.server.data_dir)
        time.sleep(delay)
        self._start()
        log.warning("the embedded server is back on %s", self.server.url)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.data.stopped()
        self.data.unlock()


def server_command(settings: Settings) -> int:
    keeper = ServerKeeper(settings)
    server = keeper.start()
    print(f"server  {server.url}   (data: {server.data_dir}, AOF on)", flush=True)
    try:
        Supervisor([], watch=keeper.check).run()
    finally:
        keeper.stop()
    return 0


def up_command(cfg: UpConfig, settings: Settings) -> int:
    keeper = None
    url = cfg.url or settings.redis_url
    if not url:
        keeper = ServerKeeper(settings)
        url = keeper.start().url
    try:
        return _up_children(cfg, url, settings, keeper)
    finally:
        if keeper is not None:
            keeper.stop()


def _up_children(cfg: UpConfig, url: str, settings: Settings,
                 keeper: ServerKeeper | None) -> int:
    env = {"STREAMJOBS_REDIS_URL": url}
    api_port = cfg.api_port or settings.api_port
    with _worker_group(cfg.worker, env) as children, \
            tempfile.TemporaryDirectory(prefix="sj-ready-") as ready_dir:
        for c in children:
            c.ready_file = Path(ready_dir) / c.name
        if cfg.api:
            argv = [sys.executable, "-m", "streamjobs", *cfg.worker.log.argv(), "api",
                    "--port", str(api_port)]
            children.append(Child("api", argv, {**os.environ, **env}))
        health = f"http://{_client_host(settings.api_host)}:{api_port}/health"
        supervisor = Supervisor(
            children, watch=keeper.check if keeper else None,
            ready=lambda: _started(children) and (not cfg.api or _answers(health)),
            on_ready=lambda: _print_where(url, keeper, settings, api_port, cfg, children),
        )
        return supervisor.run()


def _started(children: list[Child]) -> bool:
    """Every child runs, and every worker child has said it started (its handlers imported,
    its group created): one that cannot start exits first, whatever the machine's load."""
    return all(c.poll() is None and (c.ready_file is None or c.ready_file.exists())
               for c in children)


def _client_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _print_where(url: str, keeper: ServerKeeper | None, settings: Settings, api_port: int,
                 cfg: UpConfig, children: list[Child]) -> None:
    server = keeper.server if keeper else None
    port = url.rsplit(":", 1)[-1].split("/")[0]
    cli = "redis-cli"
    if server is not None and (Path(server.binary).parent / "valkey-cli").is_file():
        cli = str(Path(server.binary).parent / "valkey-cli")
    w = cfg.worker
    pids = " ".join(str(c.pid) for c in children if c.name != "api")
    lines = [
        "streamjobs is up",
        f"  server   {redact(url)}"
        + (f"   (embedded, data in {server.data_dir})" if server else ""),
        f"           {cli} -p {port} XADD 'sj:{{demo}}:stream' '*' payload '{{\"n\":1}}'",
        f"  workers  pid {pids}: {' '.join(w.modules)} "
        f"(x{w.processes}, concurrency {w.concurrency})",
    ]
    if cfg.api:
        base = f"http://{settings.api_host}:{api_port}"
        lines += [f"  ui       {base}/ui   (the dashboard)",
                  f"  api      {base}   docs {base}/docs   metrics {base}/metrics",
                  f"           curl -X POST {base}/jobs/demo -d '{{\"payload\":{{\"n\":1}}}}'"]
    lines.append("  stop     Ctrl-C (a second Ctrl-C exits at once)")
    print("\n".join(lines), flush=True)

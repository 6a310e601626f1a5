"""Processes: a worker process, N of them under one parent, and `streamjobs up`."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from streamjobs.embedded import url_file
from streamjobs.errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    import argparse

    from streamjobs.config import Settings

log = logging.getLogger("streamjobs")


def import_handlers(modules: list[str]) -> None:
    """Import handler modules; the current directory is importable, as users expect."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"cannot import handler module {name!r}: {e}") from e


async def _watch_signals(stop: Any) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once (the PEL keeps the jobs)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        count = 0
        async for sig in signals:
            count += 1
            if count == 1:
                log.info("%s: finishing in-flight jobs (send again to exit now)",
                         signal.Signals(sig).name)
                stop()
            else:
                log.warning("second signal: exiting now")
                os._exit(1)


def run_worker_process(args: argparse.Namespace, url: str, settings: Settings) -> int:
    from streamjobs.metrics import WorkerMetrics
    from streamjobs.registry import default_registry
    from streamjobs.worker import Worker

    import_handlers(args.modules)
    types = [t for t in args.types.split(",") if t] or None
    metrics = WorkerMetrics(_metrics_registry(args))
    worker = Worker(url, default_registry, types=types, concurrency=args.concurrency,
                    settings=settings, grace_period=args.grace, metrics=metrics)
    metrics.describe(list(worker.handlers), worker.concurrency)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, worker.stop)
            log.info("worker %s: types %s, concurrency %d", worker.name,
                     ",".join(worker.handlers), worker.concurrency)
            await worker.run()
            tg.cancel_scope.cancel()

    anyio.run(main, backend_options=_loop_options())
    log.info("worker %s stopped", worker.name)
    return 0


def _metrics_registry(args: argparse.Namespace) -> Any:
    """A process's own registry when it serves /metrics itself; the default registry
    (written to PROMETHEUS_MULTIPROC_DIR) when a parent serves them for N processes."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    return registry


def _loop_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def worker_command(args: argparse.Namespace, url: str, settings: Settings) -> int:
    if args.concurrency < 1 or args.processes < 1:
        raise InvalidArgument("--concurrency and --processes must be >= 1")
    if args.processes == 1:
        return run_worker_process(args, url, settings)
    return _run_children(args, url)


def _child_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "streamjobs", "worker", *args.modules,
            "--concurrency", str(args.concurrency), "--grace", str(args.grace)]
    if args.types:
        argv += ["--types", args.types]
    return argv


def _run_children(args: argparse.Namespace, url: str) -> int:
    """N worker processes; one /metrics endpoint aggregates them (multiprocess mode)."""
    with tempfile.TemporaryDirectory(prefix="sj-metrics-") as mp_dir:
        env = {**os.environ, "STREAMJOBS_REDIS_URL": url, "PROMETHEUS_MULTIPROC_DIR": mp_dir}
        if args.metrics_port:
            _serve_multiprocess_metrics(args.metrics_host, args.metrics_port, mp_dir)
        children = [subprocess.Popen(_child_argv(args), env=env) for _ in range(args.processes)]
        log.info("started %d worker processes: %s", len(children),
                 " ".join(str(c.pid) for c in children))
        return _supervise(children)


def _serve_multiprocess_metrics(host: str, port: int, mp_dir: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=mp_dir)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Forward SIGTERM/SIGINT to the children; wait for them; a second signal kills."""
    signals_seen = []

    def forward(sig: int, _frame: Any) -> None:
        signals_seen.append(sig)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGKILL if len(signals_seen) > 1 else sig)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(c.poll() is None for c in children):
            if not signals_seen and any(c.poll() not in (None, 0) for c in children):
                log.error("a worker process exited unexpectedly; stopping the others")
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max((c.returncode or 0) for c in children)


# ---- server and `up` -----------------------------------------------------------------


def start_embedded(settings: Settings) -> Any:
    from streamjobs.embedded import EmbeddedServer

    server = EmbeddedServer(settings.data_dir, port=settings.embedded_port,
                            binary=settings.server_bin).start()
    url_file(settings.data_dir).write_text(server.url + "\n")
    return server


def _stop_embedded(server: Any, settings: Settings) -> None:
    server.stop()
    url_file(settings.data_dir).unlink(missing_ok=True)


def server_command(settings: Settings) -> int:
    server = start_embedded(settings)
    print(f"server  {server.url}   (data: {server.data_dir}, AOF on)", flush=True)
    try:
        _wait_for_signal()
    finally:
        _stop_embedded(server, settings)
    return 0


def _wait_for_signal() -> None:
    got: list[int] = []
    old = {s: signal.signal(s, lambda sig, _f: got.append(sig))
           for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not got:
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def up_command(args: argparse.Namespace, settings: Settings) -> int:
    server = None
    url = args.url or settings.redis_url
    if not url:
        server = start_embedded(settings)
        url = server.url
    try:
        return _up_children(args, url, settings, server)
    finally:
        if server is not None:
            _stop_embedded(server, settings)


def _up_children(args: argparse.Namespace, url: str, settings: Settings, server: Any) -> int:
    env = {**os.environ, "STREAMJOBS_REDIS_URL": url}
    worker_argv = [sys.executable, "-m", "streamjobs", "worker", *args.modules,
                   "--concurrency", str(args.concurrency), "--processes", str(args.processes),
                   "--grace", str(args.grace)]
    if args.types:
        worker_argv += ["--types", args.types]
    if args.metrics_port:
        worker_argv += ["--metrics-port", str(args.metrics_port),
                        "--metrics-host", args.metrics_host]
    children = [subprocess.Popen(worker_argv, env=env)]
    api_port = args.api_port or settings.api_port
    if not args.no_api:
        api_argv = [sys.executable, "-m", "streamjobs", "api", "--port", str(api_port)]
        children.append(subprocess.Popen(api_argv, env=env))
    _print_where(url, server, settings, api_port, args, children)
    return _supervise(children)


def _print_where(url: str, server: Any, settings: Settings, api_port: int,
                 args: argparse.Namespace, children: list[subprocess.Popen[bytes]]) -> None:
    port = url.rsplit(":", 1)[-1].split("/")[0]
    cli = "redis-cli"
    if server is not None and (Path(server.binary).parent / "valkey-cli").is_file():
        cli = str(Path(server.binary).parent / "valkey-cli")
    lines = [
        "streamjobs is up",
        f"  server   {url}" + (f"   (embedded, data in {Path(server.data_dir)})" if server else ""),
        f"           {cli} -p {port} XADD 'sj:{{demo}}:stream' '*' payload '{{\"n\":1}}'",
        f"  workers  pid {children[0].pid}: {' '.join(args.modules)} "
        f"(x{args.processes}, concurrency {args.concurrency})",
    ]
    if not args.no_api:
        base = f"http://{settings.api_host}:{api_port}"
        lines += [f"  api      {base}   docs {base}/docs   metrics {base}/metrics",
                  f"           curl -X POST {base}/jobs/demo -d '{{\"payload\":{{\"n\":1}}}}'"]
    lines.append("  stop     Ctrl-C (a second Ctrl-C exits at once)")
    print("\n".join(lines), flush=True)

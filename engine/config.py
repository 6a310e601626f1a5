"""Settings: one frozen object, read from ``STREAMJOBS_*`` environment variables.

Unknown ``STREAMJOBS_*`` variables are an error rather than silently ignored, so a
typo (``STREAMJOBS_REDIS_ULR``) fails loudly instead of starting an embedded server.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from streamjobs.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ENV_PREFIX = "STREAMJOBS_"
#: Levels of ``Settings.durability``, weakest first.
DURABILITY = ("none", "aof", "replica")
# Variables read by other parts of the project (tests, bench), not by Settings.
_FOREIGN = {
    "STREAMJOBS_TEST_REDIS_URL",
    # Set by `streamjobs up` for its worker children: the file a child touches once it runs.
    "STREAMJOBS_READY_FILE",
}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    #: Server URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    #: ``redis+sentinel://``; see streamjobs.connection); None starts the embedded server.
    redis_url: str | None = None
    #: Key prefix of every key streamjobs writes.
    prefix: str = "sj"
    #: Where the embedded server keeps its data (AOF) and socket.
    data_dir: Path = Path(".streamjobs")
    #: Loopback port of the embedded server (0: any free port; default 6379 when free).
    embedded_port: int | None = None
    #: Path of a valkey-server/redis-server binary for the embedded server.
    server_bin: str | None = None
    #: HTTP API bind address and port.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: API keys accepted as ``Authorization: Bearer <key>``; empty: no auth.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Keys that may only read (GET): the dashboard without its buttons, a status page.
    api_read_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Serve /metrics without an API key even when keys are configured.
    metrics_public: bool = False
    #: Largest accepted payload (JSON text) in bytes, at the API and in workers.
    max_payload_bytes: int = 256 * 1024
    #: Seconds a completed job's record (state, result) is kept.
    result_ttl: int = 3600
    #: What an enqueue waits for before it returns: ``none``, ``aof`` (fsynced to the
    #: server's AOF, WAITAOF 1 0) or ``replica`` (acknowledged by a replica, WAIT 1).
    durability: str = "none"
    #: Seconds an enqueue waits for that confirmation before raising NotDurable.
    durability_timeout: float = 2.0
    #: Seconds an enqueue keeps retrying through a failover or a lost connection.
    enqueue_deadline: float = 30.0
    #: Seconds between two scans (SCAN per primary) by which the API finds types no
    #: producer or worker of ours registered (plain XADD only); 0: only at start.
    types_rescan_s: float = 60.0
    #: Workers also serve webhook deliveries (the type ``streamjobs.webhook``) besides
    #: their own types. Off by default: one extra stream in every worker's reads; run
    #: one delivering worker (this on, or ``--types streamjobs.webhook``) per deployment.
    webhooks: bool = False
    #: Signs the calls of per-job webhooks (``enqueue(..., webhook=url)``) and of
    #: webhooks declared without a secret; empty: unsigned.
    webhook_secret: str = field(default="", repr=False)
    #: Seconds a webhook call may take (connect, send, answer).
    webhook_timeout: float = 10.0
    #: OpenTelemetry (``pip install streamjobs[otel]``): producers open a span per enqueue
    #: and write ``traceparent`` into the job's headers, workers a span per attempt. Off:
    #: the packages are never imported.
    tracing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``STREAMJOBS_*`` variables, then ``overrides``."""
        env = os.environ if env is None else env
        known = {f"{ENV_PREFIX}{f.name.upper()}": f for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        unknown = [k for k in unknown if k not in _FOREIGN]
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for var, f in known.items():
            if var in env:
                values[f.name] = _convert(f.name, env[var])
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.max_payload_bytes <= 0:
            raise ConfigError("max_payload_bytes must be > 0")
        if self.result_ttl < 0:
            raise ConfigError("result_ttl must be >= 0")
        if self.durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, "
                              f"not {self.durability!r}")
        if self.types_rescan_s < 0:
            raise ConfigError("types_rescan_s must be >= 0")
        if self.durability_timeout <= 0 or self.enqueue_deadline < 0:
            raise ConfigError("durability_timeout must be > 0 and enqueue_deadline >= 0")
        if self.webhook_timeout <= 0:
            raise ConfigError("webhook_timeout must be > 0")
        if not self.prefix or any(c in self.prefix for c in "{} "):
            raise ConfigError(f"invalid prefix {self.prefix!r}")


def _converter(hint: Any) -> Callable[[str], Any]:
    """How a variable's text becomes a field's value, read off the field's annotation, so
    a new field cannot be forgotten in a parallel table."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(args) == 1:
        return _converter(args[0])  # X | None
    if hint == tuple[str, ...]:
        return _parse_keys
    simple: dict[Any, Callable[[str], Any]] = {
        str: str, int: int, float: float, bool: _parse_bool, Path: Path,
    }
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no converter for a setting annotated {hint!r}")


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    name: _converter(hint) for name, hint in typing.get_type_hints(Settings).items()
}


def _convert(name: str, raw: str) -> Any:
    try:
        return _CONVERTERS[name](raw)
    except ValueError as e:
        raise ConfigError(f"STREAMJOBS_{name.upper()}={raw!r}: {e}") from e

"""Handlers, registered per type with their policy.

    from streamjobs import handler

    @handler("email", max_attempts=5, timeout=30)
    async def send_email(job): ...

Plain ``def`` handlers run in worker threads (or, with ``isolation="process"``, in child
processes: see engine/isolation.py); ``async def`` ones on the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from streamjobs.errors import ConfigError, InvalidArgument
from streamjobs.job import Job
from streamjobs.keys import MAX_PARTITIONS, check_type_name
from streamjobs.retry import Policy
from streamjobs.schedules import Schedule
from streamjobs.webhooks import Webhook

HandlerFn = Callable[[Job], Any] | Callable[[Job], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Handler:
    type: str
    fn: HandlerFn
    policy: Policy
    is_async: bool
    #: Declared with ``cron=``/``every=``: upserted by each worker at start.
    schedule: Schedule | None = None
    #: Hash tags its jobs are spread over (``T``, ``T#1`` … ``T#N-1``); see keys.py.
    partitions: int = 1
    #: Declared with ``webhook=``: upserted by each worker at start (engine/webhooks.py).
    webhook: Webhook | None = None


class Registry:
    """Maps each job type to one handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handler(
        self, type_: str, *, policy: Policy | None = None, cron: str | None = None,
        every: float | None = None, tz: str = "UTC", schedule_payload: Any = None,
        partitions: int = 1, webhook: str | Webhook | None = None, **policy_fields: Any,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Decorator: register ``fn`` for ``type_`` with ``Policy(**policy_fields)``.

        ``cron=`` (5 or 6 fields, seconds first) or ``every=`` (seconds) also declares a
        schedule named after the type (payload ``schedule_payload``), upserted on the
        server by every worker at start (engine/schedules.py).

        ``partitions`` > 1 spreads the type's jobs over that many hash tags (cluster
        slots): workers serving it read them all and publish the count for producers.

        ``webhook`` (a URL, or a :class:`~streamjobs.webhooks.Webhook` for a name, events
        or secret of its own) is called when a job of the type completes or ends dead;
        every worker of the type upserts it at start (a URL alone is named ``default``
        and signed with ``Settings.webhook_secret``).
        """
        check_type_name(type_)
        if not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
            raise ConfigError(f"handler {type_!r}: partitions must be an integer from 1 to "
                              f"{MAX_PARTITIONS}")
        schedule = None
        if cron is not None or every is not None:
            try:
                schedule = Schedule(type_, type_, cron=cron, every=every, tz=tz,
                                    payload=schedule_payload).check()
            except InvalidArgument as e:
                raise ConfigError(f"handler {type_!r}: {e}") from e
        hook = _declared_webhook(type_, webhook)
        if policy is not None and policy_fields:
            raise ConfigError("give either policy= or policy fields, not both")
        try:
            chosen = policy or Policy(**policy_fields)
        except TypeError as e:
            raise ConfigError(f"handler {type_!r}: {e}") from e

        def register(fn: HandlerFn) -> HandlerFn:
            if type_ in self._handlers and self._handlers[type_].fn is not fn:
                raise ConfigError(f"type {type_!r} already has a handler")
            is_async = inspect.iscoroutinefunction(fn)
            if chosen.isolation == "process":
                _check_isolatable(type_, fn, is_async)
            self._handlers[type_] = Handler(type_, fn, chosen, is_async, schedule, partitions,
                                           hook)
            return fn

        return register

    def get(self, type_: str) -> Handler:
        try:
            return self._handlers[type_]
        except KeyError:
            raise ConfigError(f"no handler registered for type {type_!r}") from None

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)


def _declared_webhook(type_: str, webhook: str | Webhook | None) -> Webhook | None:
    hook = Webhook(type_, webhook) if isinstance(webhook, str) else webhook
    if hook is None:
        return None
    try:
        return replace(hook, type=type_).check()
    except InvalidArgument as e:
        raise ConfigError(f"handler {type_!r}: {e}") from e


def _check_isolatable(type_: str, fn: HandlerFn, is_async: bool) -> None:
    """A child process finds the handler by module and name: it must be a module-level
    ``def``."""
    if is_async:
        raise ConfigError(f"handler {type_!r}: isolation='process' runs def handlers, "
                          "not async def ones")
    if "<" in getattr(fn, "__qualname__", "<") or not getattr(fn, "__module__", None):
        raise ConfigError(f"handler {type_!r}: isolation='process' needs a handler "
                          "importable by module and name (defined at module level)")


#: The registry the ``handler`` decorator and the CLI use.
default_registry = Registry()
handler = default_registry.handler

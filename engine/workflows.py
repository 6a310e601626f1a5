"""Workflows: jobs that wait for other jobs, built from steps (engine/deps.py does the
waiting). A step names the steps it runs after; :func:`chain` and :func:`group` build the
two common shapes, and :meth:`Producer.workflow` enqueues any acyclic graph of steps,
parents first, each child blocked until its parents have ended.

    await producer.workflow(chain(Step("fetch", url), Step("parse"), Step("store")))
    await producer.workflow(group([Step("resize", i) for i in imgs],
                                  then=Step("zip")))

A chain's step reads the previous one's result as ``job.parent_result``; a group's
callback (a chord) runs once after every member has ended, whatever their outcome
(``on_parent_failure="run"``), with ``job.parent_results`` and ``job.parent_states``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from streamjobs.contract import ParentPolicy
from streamjobs.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Job options a step may carry (``Producer.enqueue``'s keyword arguments).
STEP_OPTIONS = frozenset({"job_id", "max_attempts", "timeout", "headers", "expires_in",
                          "expires_at", "key", "webhook", "priority", "dedup_key",
                          "dedup_mode", "dedup_ttl"})
#: Steps one workflow may have.
MAX_STEPS = 10_000


@dataclass(frozen=True)
class Step:
    """One job of a workflow: its type and payload, its name within the workflow (made up
    when not given), the names of the steps it runs after, and its job options."""

    type: str
    payload: Any = None
    name: str | None = None
    after: Sequence[str] = ()
    on_parent_failure: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def _named(steps: Sequence[Step], start: int = 0) -> list[Step]:
    return [s if s.name is not None else replace(s, name=f"step{start + i}")
            for i, s in enumerate(steps)]


def chain(*steps: Step) -> list[Step]:
    """Each step after the one before it: it starts when that one completed (a failed
    step fails the rest, by default), with its result as ``job.parent_result``."""
    named = _named(steps)
    return [s if i == 0 else replace(s, after=(*s.after, str(named[i - 1].name)))
            for i, s in enumerate(named)]


def group(members: Sequence[Step], then: Step | None = None) -> list[Step]:
    """Members that run side by side; ``then`` (a chord's callback) runs once after all
    have ended, with their results and final states, unless told otherwise by its own
    ``on_parent_failure``."""
    named = _named(members)
    if then is None:
        return named
    callback = then if then.name is not None else replace(then, name="then")
    policy = callback.on_parent_failure or ParentPolicy.RUN
    return [*named, replace(callback, after=(*callback.after, *(str(m.name) for m in named)),
                            on_parent_failure=policy)]


def ordered(steps: Sequence[Step]) -> list[Step]:
    """The steps, parents before children; InvalidArgument for a duplicate or unknown
    name, a cycle, an unknown option or too many steps."""
    if not 1 <= len(steps) <= MAX_STEPS:
        raise InvalidArgument(f"a workflow has 1 to {MAX_STEPS} steps")
    steps = _named(steps)
    _check(steps)
    out: list[Step] = []
    placed: set[str] = set()
    pending = list(steps)
    while pending:
        ready = [s for s in pending if all(p in placed for p in s.after)]
        if not ready:
            raise InvalidArgument("the steps wait for each other in a cycle: "
                                  + ", ".join(sorted(str(s.name) for s in pending)))
        out += ready
        placed.update(str(s.name) for s in ready)
        pending = [s for s in pending if str(s.name) not in placed]
    return out


def _check(steps: Sequence[Step]) -> None:
    names = [str(s.name) for s in steps]
    if len(set(names)) != len(names):
        raise InvalidArgument("two steps have one name: "
                              + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    for s in steps:
        unknown = set(s.options) - STEP_OPTIONS
        if unknown:
            raise InvalidArgument(f"step {s.name!r}: unknown options {sorted(unknown)}")
        for parent in s.after:
            if parent not in names or parent == s.name:
                raise InvalidArgument(f"step {s.name!r} runs after {parent!r}: no such "
                                      "other step")

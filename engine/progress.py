"""A running attempt's progress and log lines: the context the worker binds to the
:class:`~streamjobs.job.Job` it hands a handler (``job.progress()``, ``job.log()``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from streamjobs.contract import LOG_LINE_CHARS, LOG_LINES
from streamjobs.errors import InvalidArgument

if TYPE_CHECKING:
    from streamjobs.keys import TypeKeys
    from streamjobs.scripts import Scripts
    from streamjobs.settle import Settler


class JobContext:
    """Progress goes to the server at once (record and a progress event, after the
    attempt's ``started`` event if the settler still holds it); log lines are kept here
    and written with the next progress, or when the attempt ends."""

    __slots__ = ("attempt", "entry_id", "job_id", "lines", "scripts", "settler", "tag", "tk")

    def __init__(self, scripts: Scripts, tk: TypeKeys, job_id: str, attempt: int = 1, *,
                 settler: Settler | None = None, tag: str = "", entry_id: str = "") -> None:
        self.scripts, self.tk, self.job_id, self.attempt = scripts, tk, job_id, attempt
        self.settler, self.tag, self.entry_id = settler, tag, entry_id
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} #{self.attempt} {text}".replace("\r", " ").replace("\n", " ")
        self.lines.append(line[:LOG_LINE_CHARS])
        if len(self.lines) > LOG_LINES:
            del self.lines[:-LOG_LINES]

    async def progress(self, fraction: float, message: str = "") -> None:
        if not 0 <= fraction <= 1:
            raise InvalidArgument(f"progress must be from 0 to 1, not {fraction!r}")
        if self.settler is not None:
            await self.settler.send_started(self.tag, self.entry_id)
        await self._write(f"{fraction:.6g}", message[:LOG_LINE_CHARS])

    async def flush(self) -> None:
        """Write the log lines not written yet (the worker calls it when the attempt ends)."""
        if self.lines:
            await self._write("", "")

    async def _write(self, progress: str, message: str) -> None:
        lines, self.lines = self.lines, []
        await self.scripts.progress(self.tk, self.job_id, self.attempt, progress, message,
                                    LOG_LINES, lines)

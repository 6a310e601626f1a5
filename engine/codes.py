"""Return codes of the Lua transitions and their one mapping to exceptions.

Every script returns ``{code, ...}``; the numbers are held against each script's
header by ``tests/test_script_headers.py``.
"""

from __future__ import annotations

from enum import IntEnum

from streamjobs import errors


class Code(IntEnum):
    #: The transition ran.
    OK = 0
    #: No job record and no stream entry for that id.
    NOT_FOUND = -1
    #: A job with that id already exists (enqueue with an explicit id).
    DUPLICATE = -2
    #: The job is not in a state this transition accepts.
    WRONG_STATE = -3
    #: The calling consumer does not own the entry in the pending list.
    NOT_OWNER = -4


_EXCEPTIONS: dict[Code, type[errors.TransitionError]] = {
    Code.NOT_FOUND: errors.JobNotFound,
    Code.DUPLICATE: errors.DuplicateJob,
    Code.WRONG_STATE: errors.WrongState,
    Code.NOT_OWNER: errors.NotOwner,
}


def raise_for_code(code: int, job_id: str | None = None, detail: str = "") -> None:
    """Raise the exception for a non-OK script code; return on ``OK``."""
    c = Code(code)
    if c is Code.OK:
        return
    raise _EXCEPTIONS[c](c, job_id, detail)

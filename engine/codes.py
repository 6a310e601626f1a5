"""Return codes of the Lua transitions (``lua/includes/codes.lua``).

Every script returns ``{code, ...}``; the numbers are held against each script's
header by ``tests/test_script_headers.py``. ``errors.raise_for_code`` maps them to
exceptions.
"""

from __future__ import annotations

from enum import IntEnum


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
    #: The transition had already run for this entry (a replay after a lost reply).
    ALREADY = -5
    #: Enqueue: a job of the same ``dedup_key`` answers for this one (its id is returned).
    DEDUPLICATED = -6
    #: Cancel of a running job: the request is recorded; its worker stops the attempt.
    REQUESTED = -7

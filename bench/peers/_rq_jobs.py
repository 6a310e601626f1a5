"""rq resolves jobs by dotted path and refuses ``__main__``: the rq driver's job lives here."""

from __future__ import annotations

HANDLER = None  # set by bench/peers/rq.py (a _common.Handler)


def job(payload: dict) -> None:
    h = HANDLER
    h.run(payload)

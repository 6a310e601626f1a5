"""rq resolves jobs by dotted path and refuses ``__main__``: the rq driver's job lives here."""

from __future__ import annotations

import time

HANDLER = None  # set by bench/peers/rq.py (a _common.Handler)


def job(payload: dict) -> None:
    h = HANDLER
    h.before(payload)
    if h.sleep_s:
        time.sleep(h.sleep_s)
    h.rec.finish()

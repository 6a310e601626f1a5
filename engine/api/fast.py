"""The API's hot routes without the framework: ``POST /jobs/{type}`` with a body that is
``{"payload": ...}`` alone, the way most producers call it, and ``POST /jobs/{type}/bulk``
whose every job is that.

In a py-spy profile of ``streamjobs api`` under load, 80 % of an enqueue request went to
FastAPI/Starlette's per-request work (routing over every route, dependencies, model
validation, response model) and 8 % to the enqueue. This middleware sits inside auth and
the body limit (they apply as to every request) and serves those shapes with the
routes' own code: the same strict JSON reading, the same ``routes.enqueue_jobs`` and the same
answers for every error (``errors.respond``). Any other request, or a body with any
other field, goes on to the framework unchanged (its body replayed).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from streamjobs.api.errors import respond
from streamjobs.api.middleware import _replay, send_json
from streamjobs.api.models import MAX_BULK, loads_strict
from streamjobs.api.routes import enqueue_jobs
from streamjobs.codes import Code
from streamjobs.contract import TYPE_NAME
from streamjobs.producer import JobSpec

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from streamjobs.api.state import ApiState

PREFIX = "/jobs/"


class PlainEnqueue:
    def __init__(self, app: ASGIApp, state: ApiState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _plain_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        type_, bulk = route
        msg = await receive()  # BodyLimit (outside) hands the body on in one piece
        body = msg.get("body", b"")
        payloads = None if msg.get("more_body") else _payloads(body, bulk)
        if payloads is None:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            results = await enqueue_jobs(self.state, type_, [JobSpec(p) for p in payloads])
        except Exception as exc:
            response = await respond(Request(scope), exc)
            await response(scope, receive, send)
            return
        if bulk:
            await send_json(send, 201, {"jobs": [
                {"id": r.job_id, "state": r.state, "deduplicated": r.code is Code.DEDUPLICATED,
                 "duplicate": r.code is Code.DUPLICATE} for r in results]})
            return
        (res,) = results
        # A job with no id and no dedup key can be neither a duplicate nor deduplicated.
        assert res.code is Code.OK, res
        await send_json(send, 201, {"id": res.job_id, "state": res.state,
                                    "deduplicated": False})


def _plain_route(scope: Scope) -> tuple[str, bool] | None:
    """``(type, bulk)`` of a ``POST /jobs/{type}`` or ``/jobs/{type}/bulk`` request of a
    valid type name, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    type_, slash, tail = path[len(PREFIX):].partition("/")
    if slash and tail != "bulk":
        return None
    return (type_, bool(slash)) if TYPE_NAME.fullmatch(type_) else None


def _payloads(body: bytes, bulk: bool) -> list[Any] | None:
    """The payloads of a body that is ``{"payload": ...}`` alone, or for bulk
    ``{"jobs": [...]}`` of 1 to MAX_BULK such jobs (read as the routes read them), else
    None: the framework answers it, its refusals included."""
    try:
        doc = loads_strict(body)
    except json.JSONDecodeError:
        return None
    if not bulk:
        return [doc["payload"]] if _payload_only(doc) else None
    if not (isinstance(doc, dict) and len(doc) == 1 and isinstance(doc.get("jobs"), list)):
        return None
    jobs = doc["jobs"]
    if not 1 <= len(jobs) <= MAX_BULK or not all(_payload_only(j) for j in jobs):
        return None
    return [j["payload"] for j in jobs]


def _payload_only(doc: Any) -> bool:
    return isinstance(doc, dict) and len(doc) == 1 and "payload" in doc

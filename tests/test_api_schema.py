"""Property-based run over the OpenAPI document: no input gets a 5xx.

The API is served by uvicorn on a loopback port in a thread (one event loop, as in
production); schemathesis generates requests, valid and invalid, for every operation.
Bounded: a few examples per operation, so the run stays well under a minute.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from streamjobs.api import create_app
from streamjobs.api.server import server_config
from streamjobs.config import Settings
from streamjobs.embedded import free_port
from tests.helpers import serving

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Examples per operation; STREAMJOBS_SCHEMA_EXAMPLES=2000 for a long run.
MAX_EXAMPLES = int(os.environ.get("STREAMJOBS_SCHEMA_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def api_url(redis_url: str) -> Iterator[str]:
    app = create_app(redis_url, Settings(redis_url=redis_url, max_payload_bytes=4096))
    with serving(server_config(app, Settings(), "127.0.0.1", free_port(), "warning")) as url:
        yield url


DOC = create_app("redis://127.0.0.1:1/0", Settings()).openapi()
OPERATIONS = [(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors(api_url: str, method: str, path: str) -> None:
    op = schemathesis.openapi.from_dict(DOC)[path][method]
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                         op.as_strategy(GenerationMode.NEGATIVE))
    sent: list[int] = []

    @given(strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        sent.append(1)
        response = case.call(base_url=api_url, timeout=10)
        where = f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}"
        assert response.status_code < 500, f"{where}: {response.text[:500]}"
        if response.status_code >= 400:
            assert "error" in response.json(), f"{where}: {response.text[:500]}"

    run()
    print(f"schemathesis: {method} {path}: {len(sent)} requests")  # shown with -s


def _param_pattern(path: str, method: str, name: str) -> str:
    (param,) = [p for p in DOC["paths"][path][method]["parameters"] if p["name"] == name]
    pattern: str = param["schema"].get("pattern") or next(
        s["pattern"] for s in param["schema"]["anyOf"] if "pattern" in s)
    return pattern


def test_schema_patterns_are_the_engines() -> None:
    """The document states exactly what the code accepts: the engine's compiled patterns."""
    from streamjobs.job import JOB_ID
    from streamjobs.keys import TYPE_NAME
    from streamjobs.listing import LEVEL_CURSOR, SCORE_CURSOR, STREAM_ID

    def anchored(*patterns: re.Pattern[str]) -> str:
        body = "|".join(p.pattern for p in patterns)
        return f"^{body}$" if len(patterns) == 1 else f"^(?:{body})$"

    for path, ops in DOC["paths"].items():
        for method in ops:
            if "{type}" in path:
                assert _param_pattern(path, method, "type") == anchored(TYPE_NAME), path
            if "{id}" in path:
                assert _param_pattern(path, method, "id") == anchored(JOB_ID), path
    assert _param_pattern("/jobs/{type}", "get", "cursor") == anchored(
        LEVEL_CURSOR, STREAM_ID, SCORE_CURSOR)
    assert _param_pattern("/dead/{type}", "get", "cursor") == anchored(STREAM_ID)
    item = DOC["components"]["schemas"]["EnqueueRequest"]["properties"]["id"]
    assert next(s["pattern"] for s in item["anyOf"] if "pattern" in s) == anchored(JOB_ID)


@pytest.mark.parametrize("name", ["a", "a.b", "...", ".a", "a.", "-", "_" * 64])
def test_type_pattern_accepts_what_the_engine_does(name: str) -> None:
    from streamjobs.keys import check_type_name

    assert check_type_name(name) == name
    assert re.fullmatch(_param_pattern("/jobs/{type}", "post", "type")[1:-1], name)


@pytest.mark.parametrize("name", [".", "..", "", "a b", "x" * 65])
def test_type_pattern_refuses_what_the_engine_does(name: str) -> None:
    from streamjobs.errors import InvalidTypeName
    from streamjobs.keys import check_type_name

    with pytest.raises(InvalidTypeName):
        check_type_name(name)
    assert not re.fullmatch(_param_pattern("/jobs/{type}", "post", "type")[1:-1], name)

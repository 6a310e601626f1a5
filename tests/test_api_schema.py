"""Property-based run over the OpenAPI document: no input gets a 5xx.

The API is served by uvicorn on a loopback port in a thread (one event loop, as in
production); schemathesis generates requests, valid and invalid, for every operation.
Bounded: a few examples per operation, so the run stays well under a minute.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from streamjobs.api import create_app
from streamjobs.config import Settings
from streamjobs.embedded import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def api_url(redis_url: str) -> Iterator[str]:
    port = free_port()
    app = create_app(redis_url, Settings(redis_url=redis_url, max_payload_bytes=4096))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)



DOC = create_app("redis://127.0.0.1:1/0", Settings()).openapi()
OPERATIONS = [(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors(api_url: str, method: str, path: str) -> None:
    op = schemathesis.openapi.from_dict(DOC)[path][method]
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                         op.as_strategy(GenerationMode.NEGATIVE))

    @given(strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        response = case.call(base_url=api_url, timeout=10)
        where = f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}"
        assert response.status_code < 500, f"{where}: {response.text[:500]}"
        if response.status_code >= 400:
            assert "error" in response.json(), f"{where}: {response.text[:500]}"

    run()

"""The HTTP API: an ASGI app on FastAPI, served by uvicorn (``streamjobs api``).

    from streamjobs.api import create_app
    app = create_app("redis://localhost:6379/0", Settings.from_env())

Routes, status codes and errors are documented in ``docs/api.md`` and at ``/docs``.
"""

from streamjobs.api.app import create_app, serve
from streamjobs.api.state import ApiState

__all__ = ["ApiState", "create_app", "serve"]

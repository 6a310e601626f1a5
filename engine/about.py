"""The installed distribution's version (``streamjobs --version``, metrics, the API)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version


@cache
def version() -> str:
    try:
        return _dist_version("streamjobs")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"

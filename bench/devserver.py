"""Development helper: start one fresh server, print its URL, keep it until killed/timeout."""

from __future__ import annotations

import sys
import time

from bench.server import fresh_server

if __name__ == "__main__":
    limit = float(sys.argv[1]) if len(sys.argv) > 1 else 3600
    with fresh_server("dev") as url:
        print(url, flush=True)
        time.sleep(limit)

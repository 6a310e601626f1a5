# docs/examples/flow.py — run with: python docs/examples/flow.py
import asyncio
import os

from streamjobs import Producer

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")


async def main() -> None:
    async with Producer(URL) as p:
        # Unique: one invoice job per customer and month while one waits or runs.
        a = await p.enqueue("monthly_invoice", {"month": "2024-06"}, dedup_key="c7-2024-06")
        b = await p.enqueue("monthly_invoice", {"month": "2024-06"}, dedup_key="c7-2024-06")
        print(b == a, b.deduplicated)                  # True True: a answers for b
        # Debounce: a burst becomes one job, with the last payload, 2 s after the last call.
        for n in range(3):
            last = await p.enqueue("welcome_email", {"to": f"v{n}@b.c"}, delay=2,
                                   dedup_key="burst", dedup_mode="debounce")
        print(last.state, last.deduplicated)           # delayed True
        # Expiry: not started within 10 minutes, it never runs (state "expired").
        await p.enqueue("welcome_email", {"to": "late@b.c"}, expires_in=600)
        # Cancel: a waiting or delayed job at once; a running one is stopped by its worker.
        later = await p.enqueue("welcome_email", {"to": "x@b.c"}, delay=3600)
        answer = await p.cancel("welcome_email", later)
        print(answer, answer.outcome)                  # delayed cancelled


asyncio.run(main())

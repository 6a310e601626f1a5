# docs/examples/schedules.py — run with: python docs/examples/schedules.py
import asyncio
import os

from streamjobs import Job, Producer, Registry, Worker

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
reg = Registry()


@reg.handler("nightly_report", cron="0 3 * * *", tz="Europe/Paris")  # declared in code
async def report(job: Job) -> None:
    print("report", job.id)


@reg.handler("heartbeat_ping", every=1, schedule_payload={"from": "code"})
async def ping(job: Job) -> None:
    print("ran", job.id, job.payload)


async def main() -> None:
    async with Producer(URL) as p:
        # At run time: 6 fields, seconds first. Any number of workers: one job per tick.
        await p.schedule("ping_api", "heartbeat_ping", {"from": "api"}, cron="*/2 * * * * *")
        worker = Worker(URL, reg)           # every worker runs the scheduling loop
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(3.5)
        await p.pause("heartbeat_ping")     # a type: no new starts, ticks still enqueue
        for s in await p.schedules():
            print("schedule", s.name, s.type, s.cron or f"every {s.every}s",
                  "next", s.next_run_ms)
        await p.resume("heartbeat_ping")
        await p.unschedule("ping_api")
        worker.stop()
        await task


asyncio.run(main())

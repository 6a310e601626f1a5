# docs/examples/workflow.py — run with: python docs/examples/workflow.py
import asyncio
import os

from streamjobs import Job, Producer, Registry, Step, Worker, chain, group

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
jobs = Registry()


@jobs.handler("wf_fetch")
async def fetch(job: Job) -> str:
    return f"<page {job.payload}>"


@jobs.handler("wf_count")
async def count(job: Job) -> int:
    return len(job.parent_result)                 # the previous step's result


@jobs.handler("wf_total")
async def total(job: Job) -> int:                 # a group's callback: every member's result
    return sum(len(page) for page in job.parent_results.values() if page is not None)


async def main() -> None:
    async with Producer(URL) as p, asyncio.TaskGroup() as tg:
        worker = Worker(URL, jobs, concurrency=8)
        tg.create_task(worker.run())
        # a chain: fetch, then count what it fetched
        ids = await p.workflow(chain(Step("wf_fetch", "a", name="fetch"),
                                     Step("wf_count", name="count")))
        print(await p.result("wf_count", ids["count"], timeout=10))      # 8
        # a group side by side, then one callback (a chord) with all their results
        ids = await p.workflow(group([Step("wf_fetch", n) for n in ("b", "cc", "ddd")],
                                     then=Step("wf_total", name="total")))
        print(await p.result("wf_total", ids["total"], timeout=10))      # 27
        # after= on a plain enqueue: waits for a job already enqueued
        first = await p.enqueue("wf_fetch", "e", delay=0.5)
        later = await p.enqueue("wf_count", None, after=[("wf_fetch", first)])
        print(later.state, await p.result("wf_count", later, timeout=10))  # blocked 8
        worker.stop()


asyncio.run(main())

# docs/examples/webhooks.py — run with: python docs/examples/webhooks.py
import asyncio
import os

from streamjobs import Job, PermanentError, Producer, Registry, Settings, Worker
from streamjobs.webhooks import verify

URL = os.environ.get("STREAMJOBS_REDIS_URL", "redis://127.0.0.1:6379/0")
reg = Registry()


@reg.handler("resize_image")
async def resize(job: Job) -> dict[str, int]:
    if job.payload["w"] <= 0:
        raise PermanentError("bad width")
    return {"w": job.payload["w"] // 2}


async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Your endpoint: check the signature, then handle the event (here: print it)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[1:]
    headers = dict(line.split(": ", 1) for line in head if line)
    body = await reader.readexactly(int(headers["Content-Length"]))
    print("signed:", verify("s3cret", headers, body), body.decode())
    writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    hook = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/events"
    async with Producer(URL) as p:
        # Per type, stored on the server: every completed or dead job of the type.
        await p.set_webhook("resize_image", hook, events=["completed", "dead"],
                            secret="s3cret")
        worker = Worker(URL, reg, settings=Settings(redis_url=URL, webhook_secret="s3cret"),
                        webhooks=True)  # this worker also delivers the calls
        task = asyncio.create_task(worker.run())
        await p.enqueue("resize_image", {"w": 640})
        await asyncio.sleep(1)
        await p.enqueue("resize_image", {"w": 0})
        await asyncio.sleep(1)
        await p.remove_webhook("resize_image")
        worker.stop()
        await task
    server.close()


asyncio.run(main())

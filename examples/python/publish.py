#!/usr/bin/env python3
"""Publish "check this URL" jobs to picket's jobs queue, with publisher confirms.

Each argument (or, with none or "-", each line of standard input) is either an
http(s) URL or a whole job as a JSON object (schema/job.schema.json). A job without
an "id" gets one, so its result can be matched by "job_id". Every job is checked
before the first is sent: a bad line sends nothing.

Prints "ID<TAB>URL" for each job the broker confirmed. Exit status: 0 all confirmed,
1 the broker refused or could not route them (no such queue, connection failed),
2 bad input.

    python3 publish.py https://www.example.gov/ https://county.example.org/
    python3 publish.py --key county-7 https://county.example.org/
    echo '{"url": "https://www.example.gov/", "expect": {"body_contains": "Welcome"}}' |
        python3 publish.py

The broker and the queue come from --amqp-url / --queue, else from the variables the
worker reads (PICKET__AMQP__URL, PICKET__AMQP__JOBS_QUEUE), else picket's defaults.
"""

import argparse
import asyncio
import json
import os
import sys
import uuid
from urllib.parse import urlsplit

import aio_pika
from aio_pika.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_QUEUE = "picket.jobs"
# Confirms are awaited in batches: one round trip per job would make a long list slow.
BATCH = 100


class BadInput(Exception):
    """A line that is neither an http(s) URL nor a JSON job."""


def broker(url):
    """host:port of an AMQP URL, without the credentials, for error messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("urls", nargs="*", metavar="URL_OR_JOB",
                   help='an http(s) URL or a job as JSON; none or "-": read lines from stdin')
    p.add_argument("--amqp-url", default=os.environ.get("PICKET__AMQP__URL", DEFAULT_AMQP_URL),
                   help="the broker (default: $PICKET__AMQP__URL or %(default)s)")
    p.add_argument("--queue", default=os.environ.get("PICKET__AMQP__JOBS_QUEUE", DEFAULT_QUEUE),
                   help="the jobs queue (default: $PICKET__AMQP__JOBS_QUEUE or %(default)s)")
    p.add_argument("--key", help="the monitor key given to every URL job (see CONTRACT.md, Monitors)")
    return p.parse_args()


def job_of(line, key):
    """The job a line stands for; raises BadInput naming what is wrong."""
    if line.startswith("{"):
        try:
            job = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"not valid JSON ({e})") from None
        if not isinstance(job.get("url"), str):
            raise BadInput('a JSON job needs a "url" string')
    else:
        parts = urlsplit(line)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput("not an http(s) URL or a JSON job")
        job = {"url": line}
        if key:
            job["key"] = key
    job.setdefault("id", uuid.uuid4().hex)
    return job


def read_jobs(args):
    """Every job of the arguments or stdin, all checked before any is sent."""
    from_stdin = args.urls in ([], ["-"])
    lines = sys.stdin.read().splitlines() if from_stdin else args.urls
    jobs = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            jobs.append(job_of(line, args.key))
        except BadInput as e:
            where = f"line {number}" if from_stdin else f"argument {number}"
            raise BadInput(f"{where}: {e}: {line[:200]!r}") from None
    return jobs


def message_of(job):
    props = {}
    # message_id is an AMQP short string (at most 255 bytes); the body's id is what counts.
    if len(str(job["id"]).encode()) <= 255:
        props["message_id"] = str(job["id"])
    return aio_pika.Message(
        body=json.dumps(job, ensure_ascii=False).encode(),
        content_type="application/json",
        # Persistent: a job survives a broker restart on a durable queue.
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **props,
    )


async def publish(args, jobs):
    try:
        connection = await aio_pika.connect(args.amqp_url)
    except (AMQPConnectionError, OSError) as e:
        raise ConnectionError(f"cannot connect to the broker at {broker(args.amqp_url)}: {e}") from None
    async with connection:
        # on_return_raises: a job the broker cannot route (its queue is gone) is an
        # error, not silently dropped.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            # Passive: never declare picket's queue here; the worker declares it with
            # its own arguments (dead-lettering, queue type), which a client must not guess.
            await channel.declare_queue(args.queue, passive=True)
        except ChannelNotFoundEntity:
            raise RuntimeError(
                f"queue {args.queue!r} does not exist: start a picket worker first "
                "(it declares its queues) or check --queue"
            ) from None
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start:start + BATCH]
            try:
                await asyncio.gather(*(
                    channel.default_exchange.publish(message_of(job), routing_key=args.queue)
                    for job in batch
                ))
            except PublishError as e:
                # The broker sends a return before the confirm of the same message.
                raise RuntimeError(
                    f"the broker could not route jobs to {args.queue!r} ({e.frame.reply_text})"
                ) from None
            for job in batch:
                print(f"{job['id']}\t{job['url']}", flush=True)


def main():
    args = arguments()
    try:
        jobs = read_jobs(args)
    except BadInput as e:
        print(f"publish: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(publish(args, jobs))
    except (RuntimeError, DeliveryError, AMQPError, OSError) as e:
        print(f"publish: {e}", file=sys.stderr)
        return 1
    print(f"publish: {len(jobs)} jobs confirmed on {args.queue}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

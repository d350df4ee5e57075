#!/usr/bin/env python3
"""Print the verdict changes picket publishes on its changes exchange.

A result whose verdict changed for its check ("changed": true) is published to the
changes exchange (a durable topic exchange, picket.changes by default) with routing
key PREVIOUS.VERDICT: up.down, down.up, up.degraded, ... This binds a private queue
to it with the given binding keys ("#", every change, by default; "#.down" for
everything that went down, "*.up" for recoveries) and prints one line per change:

    CHECKED_AT  PREVIOUS.VERDICT  URL  REASON: DETAIL

(--json prints the whole result instead). The queue is exclusive: it lives as long as
this process, and changes published while nobody listens are not kept for it; an
alerting service that must see every change binds a durable queue of its own.

    python3 subscribe.py                 # every change
    python3 subscribe.py '#.down'        # only what went down
    python3 subscribe.py --count 1 '*.*' # wait for one change, then exit

Stops on SIGINT/SIGTERM (exit 0), after --count changes (exit 0), or when the broker
closes the connection (exit 1). The broker and the exchange come from --amqp-url /
--exchange, else PICKET__AMQP__URL / PICKET__AMQP__CHANGES_EXCHANGE, else the defaults.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
from urllib.parse import urlsplit

import aio_pika
from aio_pika.exceptions import AMQPConnectionError, AMQPError

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_EXCHANGE = "picket.changes"


def broker(url):
    """host:port of an AMQP URL, without the credentials, for error messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("keys", nargs="*", default=["#"], metavar="BINDING_KEY",
                   help='topic binding keys (default "#": every change)')
    p.add_argument("--amqp-url", default=os.environ.get("PICKET__AMQP__URL", DEFAULT_AMQP_URL),
                   help="the broker (default: $PICKET__AMQP__URL or %(default)s)")
    p.add_argument("--exchange",
                   default=os.environ.get("PICKET__AMQP__CHANGES_EXCHANGE", DEFAULT_EXCHANGE),
                   help="the changes exchange (default: $PICKET__AMQP__CHANGES_EXCHANGE or %(default)s)")
    p.add_argument("--count", type=int, default=0, help="exit after this many changes")
    p.add_argument("--json", action="store_true", help="print each result as one JSON line")
    return p.parse_args()


def describe(routing_key, body):
    """One readable line for a change; a body that is not a JSON object is shown as such."""
    try:
        result = json.loads(body)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return f"-  {routing_key}  (not a JSON result: {len(body)} bytes)"
    return "  ".join([
        str(result.get("checked_at", "-")),
        routing_key,
        str(result.get("url", "-")),
        f"{result.get('reason', '-')}: {result.get('detail', '')}",
    ])


async def listen(args):
    """Prints changes until --count is reached (0) or the connection closes (1)."""
    try:
        connection = await aio_pika.connect(args.amqp_url)
    except (AMQPConnectionError, OSError) as e:
        raise ConnectionError(f"cannot connect to the broker at {broker(args.amqp_url)}: {e}") from None
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        # Declared exactly as the worker declares it (durable topic), so this may start
        # before any worker has run; an exchange of another kind is refused by the broker.
        exchange = await channel.declare_exchange(
            args.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)  # server-named, ours alone
        for key in args.keys:
            await queue.bind(exchange, routing_key=key)
        print(f"subscribe: listening on {args.exchange} for {' '.join(args.keys)}",
              file=sys.stderr, flush=True)
        seen = 0
        async with queue.iterator() as messages:
            async for message in messages:
                line = message.body.decode(errors="replace") if args.json else \
                    describe(message.routing_key or "", message.body)
                print(line, flush=True)
                # Acked after printing: a change is never taken without being shown.
                await message.ack()
                seen += 1
                if args.count and seen >= args.count:
                    return 0
    print("subscribe: the broker closed the connection", file=sys.stderr)
    return 1


async def until_signal(args):
    """Runs listen() and ends it cleanly on SIGINT or SIGTERM."""
    task = asyncio.ensure_future(listen(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0


def main():
    args = arguments()
    if args.count < 0:
        print("subscribe: --count must be 0 (no limit) or more", file=sys.stderr)
        return 2
    try:
        return asyncio.run(until_signal(args))
    except (AMQPError, OSError) as e:
        print(f"subscribe: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A live feed of certledger certificate events, read from NATS JetStream.

Usage:
  pip install nats-py
  python3 feed.py --url nats://127.0.0.1:4222                 # from now on
  python3 feed.py --from-beginning                            # replay all history first
  python3 feed.py --tenant acme --event-type CertificateIssued
  python3 feed.py --from-beginning --count 10                 # stop after 10 events

Each line: log position, time, tenant, certificate id, event type, stream version.
The payload is the protobuf message named in the `ce-type` header
(proto/certledger/events/v1/events.proto); decode it with code generated from proto/.
This script uses an ephemeral ordered consumer, so it needs no setup on the server and
leaves nothing behind.
"""

import argparse
import asyncio
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy


def subject_filter(tenant: str, aggregate: str, event_type: str) -> str:
    return f"certledger.v1.{tenant}.{aggregate}.*.{event_type}"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="CERTLEDGER")
    parser.add_argument("--tenant", default="*")
    parser.add_argument("--aggregate", default="certificate")
    parser.add_argument("--event-type", default="*")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=0, help="give up after this many seconds")
    args = parser.parse_args()

    nc = await nats.connect(args.url)
    js = nc.jetstream()
    policy = DeliverPolicy.ALL if args.from_beginning else DeliverPolicy.NEW
    sub = await js.subscribe(
        subject_filter(args.tenant, args.aggregate, args.event_type),
        stream=args.stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=policy),
    )
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout if args.timeout else None
    try:
        while args.count == 0 or seen < args.count:
            wait = 3600.0 if deadline is None else max(0.0, deadline - loop.time())
            if wait == 0.0:
                print(f"timed out after {seen} events", file=sys.stderr)
                return 1
            msg = await sub.next_msg(timeout=wait)
            h = msg.headers or {}
            event_type = h.get("ce-type", "?").rsplit(".", 1)[-1]
            print(
                f"{h.get('certledger-position', '?'):>8} {h.get('ce-time', '?')} "
                f"{h.get('certledger-tenant', '?')} {h.get('ce-subject', '?')} "
                f"{event_type} v{h.get('certledger-stream-version', '?')} ({len(msg.data)} bytes)",
                flush=True,
            )
            seen += 1
    except nats.errors.TimeoutError:
        print(f"timed out after {seen} events", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

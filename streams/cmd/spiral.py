"""``liqmon spiral``: ask the running worker that owns the global risk stage for a spiral
estimate on its live state, and print the reply as JSON.

Without ``--shock`` the worker runs the configured standard shocks (and updates
``liqmon_spiral_liquidated_usd``); with ``--shock KEY=PCT`` (repeatable) it runs that one
shock. Needs ``LIQMON_KAFKA_BOOTSTRAP``. No reply within ``--timeout``, no broker, or a
refused request: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from monitor.protocol import (
    COMMAND_VERSION,
    CommandReply,
    RecordError,
    SpiralRequest,
    decode_reply,
    encode,
    encode_pretty,
)
from monitor.stages.stress import StressInputError, parse_shock
from streams import topics
from streams.cmd.arguments import positive_number
from streams.kafka.security import kafka_client_options
from streams.settings import Settings

__all__ = ["EXIT_FAILED", "EXIT_OK", "SpiralCommandError", "add_parser", "request_spiral", "run"]

EXIT_OK = 0
EXIT_FAILED = 2
_PROG = "liqmon spiral"


class SpiralCommandError(Exception):
    """No usable reply: the one line to print."""


def add_parser(subparsers: Any) -> None:
    """Register the ``spiral`` sub-command on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "spiral",
        help="spiral estimate on a running worker's live state (needs LIQMON_KAFKA_BOOTSTRAP)",
        description=__doc__,
    )
    parser.add_argument("--shock", action="append", default=[], metavar="KEY=PCT",
                        help="multiply KEY by (1 + PCT), e.g. USDe@binance=-35%% (repeatable); "
                             "default: the configured standard shocks")
    parser.add_argument("--timeout", type=positive_number, default=30.0, metavar="S",
                        help="seconds to wait for the reply (default 30)")
    parser.set_defaults(func=run)


async def request_spiral(bootstrap: str, request: SpiralRequest, timeout_s: float) -> CommandReply:
    """Send ``request`` to the global stage and return its reply (raises SpiralCommandError)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client_options(), enable_auto_commit=False,
                                request_timeout_ms=max(int(timeout_s * 1000), 1000))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kafka_client_options(),
                                request_timeout_ms=max(int(timeout_s * 1000), 1000))
    try:
        await asyncio.wait_for(asyncio.gather(consumer.start(), producer.start()), timeout_s)
    except (TimeoutError, KafkaError, OSError):
        await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)
        raise SpiralCommandError(f"cannot reach Kafka at {bootstrap}") from None
    try:
        existing = await consumer.topics()
        if topics.RISK_SIGNALS not in existing or topics.ACKS not in existing:
            raise SpiralCommandError(
                f"no liqmon worker has run against {bootstrap} (topic {topics.RISK_SIGNALS} missing)"
            )
        acks = [TopicPartition(topics.ACKS, p) for p in sorted(consumer.partitions_for_topic(topics.ACKS) or {0})]
        consumer.assign(acks)
        await consumer.seek_to_end(*acks)
        for tp in acks:  # fix the start before sending: the reply cannot be missed
            await consumer.position(tp)
        key = request.request_id.encode()
        await producer.send_and_wait(topics.RISK_SIGNALS, encode(request), key=key, partition=0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left_s := deadline - loop.time()) > 0:
            batches = await consumer.getmany(timeout_ms=max(int(min(left_s, 0.5) * 1000), 1))
            for records in batches.values():
                for rec in records:
                    if rec.key != key or rec.value is None:
                        continue
                    try:
                        reply = decode_reply(rec.value)
                    except RecordError:
                        continue  # not a reply (the same key on another record)
                    if reply.request_id == request.request_id:
                        return reply
        raise SpiralCommandError(
            f"no reply within {timeout_s:g} s: is a liqmon worker running against {bootstrap}?"
        )
    finally:
        await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)


def run(args: argparse.Namespace) -> int:
    """Execute ``liqmon spiral``: print the reply; 0 on success, 2 otherwise."""
    try:
        shocks = dict(parse_shock(text) for text in args.shock) if args.shock else None
    except StressInputError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    bootstrap = Settings().kafka_bootstrap
    if not bootstrap:
        print(f"{_PROG}: error: LIQMON_KAFKA_BOOTSTRAP is not set (the spiral runs on a worker's live state)",
              file=sys.stderr)
        return EXIT_FAILED
    # the client library logs connection retries; the outcome is the one line below
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    request = SpiralRequest(v=COMMAND_VERSION, request_id=uuid.uuid4().hex, shocks=shocks)
    try:
        reply = asyncio.run(request_spiral(bootstrap, request, args.timeout))
    except SpiralCommandError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not reply.ok:
        print(f"{_PROG}: error: the worker refused the request: {reply.error}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.buffer.write(encode_pretty(reply) + b"\n")
    if reply.accounts_left_out:
        print(f"{_PROG}: note: {reply.accounts_left_out:,} unified accounts live on account shards and are not "
              "in this spiral: spiral_run.copy_sharded_accounts is false (README \"Account shards\")", file=sys.stderr)
    return EXIT_OK

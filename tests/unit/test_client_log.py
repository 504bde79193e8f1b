"""The Kafka client's log: each message once per interval, then how many were held back."""

from __future__ import annotations

import logging

from streams.kafka.client_log import OncePerInterval


def _record(msg: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_message_passes_once_per_interval_then_says_how_many_were_held() -> None:
    now = [0.0]
    once = OncePerInterval(30.0, clock=lambda: now[0])
    passed = []
    for t in range(0, 65):  # one attempt a second, with its node id
        now[0] = float(t)
        record = _record("Unable connect to node with id %s", t)
        if once.filter(record):
            passed.append((t, record.getMessage()))
    assert passed == [(0, "Unable connect to node with id 0"),
                      (30, "Unable connect to node with id 30 [29 more like it in the last 30 s]"),
                      (60, "Unable connect to node with id 60 [29 more like it in the last 30 s]")]


def test_other_messages_and_loggers_are_their_own() -> None:
    once = OncePerInterval(30.0, clock=lambda: 0.0)
    assert once.filter(_record("a %s", 1)) and once.filter(_record("b %s", 1))
    assert once.filter(_record("a %s", 1, name="aiokafka.producer.sender"))
    assert not once.filter(_record("a %s", 2))

"""The account shards' topics: created with one ``risk.shards`` partition per shard, and a
shard count that does not fit an existing topic refused in one line (a worker exits 2)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams import topics
from streams.errors import KafkaReplayError
from streams.kafka.broker import EmbeddedBroker, embedded_broker
from streams.kafka.replay import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()


def test_the_shard_topic_has_a_partition_per_shard_and_a_mismatch_is_refused() -> None:
    with embedded_broker() as broker:  # its own: the topics it makes are not the session's
        _check(broker)


def _check(broker: EmbeddedBroker) -> None:
    asyncio.run(ensure_topics(broker.bootstrap, 2, account_shards=3))
    assert asyncio.run(_partitions(broker.bootstrap, topics.RISK_SHARDS)) == 3
    assert asyncio.run(_partitions(broker.bootstrap, topics.SHARD_STEPS)) == 1
    asyncio.run(ensure_topics(broker.bootstrap, 2, account_shards=3))  # again: nothing to do
    with pytest.raises(KafkaReplayError, match=r"risk\.shards has 3 partitions but LIQMON_ACCOUNT_SHARDS is 5"):
        asyncio.run(ensure_topics(broker.bootstrap, 2, account_shards=5))
    env = {**os.environ, "LIQMON_KAFKA_BOOTSTRAP": broker.bootstrap, "LIQMON_BROKER_KIND": "tansu",
           "LIQMON_ACCOUNT_SHARDS": "5", "LIQMON_PARTITIONS": "2", "LIQMON_METRICS_PORT": "0"}
    worker = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert worker.returncode == 2, worker.stderr.decode()[-2000:]
    assert "LIQMON_ACCOUNT_SHARDS is 5" in (worker.stdout + worker.stderr).decode()

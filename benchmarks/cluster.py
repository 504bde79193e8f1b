"""What the benchmarks share: a bench worker group on the embedded broker, and its end markers.

Used by ``liqmon bench`` (:mod:`benchmarks.main`) and its end-to-end run (:mod:`benchmarks.e2e`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from monitor.ingest.batch import Control
from monitor.protocol import AckCollector, MarketAck
from streams import topics
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.security import kafka_client_options

__all__ = ["LATENCY_CONFIG", "PARTITIONS", "send_end", "start_worker", "stop", "worker_env"]

#: Partitions of the bench's market topic.
PARTITIONS = 4


async def send_end(bootstrap: str, run_id: str) -> None:
    """An ``end`` control record on every partition of the market topic (a run's last record)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kafka_client_options())
    await producer.start()
    try:
        for p in range(PARTITIONS):
            await producer.send_and_wait(topics.MARKET, Control("end", run_id, p).encode(), partition=p)
    finally:
        await producer.stop()


def worker_env(broker: EmbeddedBroker, config_path: Path | None = None) -> dict[str, str]:
    """A bench worker's environment: this broker, the bench's partitions and group, no inherited LIQMON_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env.update({
        "LIQMON_KAFKA_BOOTSTRAP": broker.bootstrap,
        "LIQMON_BROKER_KIND": "tansu",
        "LIQMON_PARTITIONS": str(PARTITIONS),
        "LIQMON_METRICS_PORT": "0",
        "LIQMON_APP_ID": "liqmon-bench",
    })
    if config_path is not None:
        env["LIQMON_CONFIG"] = str(config_path)
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A ``liqmon worker`` process logging to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: Engine config of the latency runs: every band at once (no durations), small batches.
LATENCY_CONFIG = """
[peg]
clear_duration_ms = 0
[[peg.bands]]
severity = "info"
threshold_bps = 50.0
min_duration_ms = 0
[[peg.bands]]
severity = "warning"
threshold_bps = 100.0
min_duration_ms = 0
[[peg.bands]]
severity = "high"
threshold_bps = 300.0
min_duration_ms = 0
[[peg.bands]]
severity = "critical"
threshold_bps = 1000.0
min_duration_ms = 0
[ingest]
batch_max_events = 64
batch_max_span_ms = 10
"""


async def wait_acks(
    bootstrap: str, run_id: str, n_parts: int, timeout_s: float, *, global_stage: bool = False
) -> list[MarketAck]:
    """Every market partition's ack of ``run_id`` (and the global stage's if asked), by partition."""
    consumer = AIOKafkaConsumer(topics.ACKS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, **kafka_client_options())
    await consumer.start()
    collector = AckCollector(run_id)
    deadline = time.monotonic() + timeout_s
    try:
        while not collector.ended(n_parts, global_stage=global_stage) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    collector.take(rec.value)
    finally:
        await consumer.stop()
    if not collector.ended(n_parts, global_stage=global_stage):
        missing_global = global_stage and not collector.global_acks
        raise RuntimeError(f"worker acknowledged {len(collector.market)}/{n_parts} partitions"
                           f"{' and not the global stage' if missing_global else ''} in {timeout_s:.0f} s")
    return collector.in_order()

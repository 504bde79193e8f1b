"""The worker's faust app passes its fetch wait to the aiokafka consumer it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import EngineConfig
from monitor.metrics import Metrics
from streams.app import EMBEDDED_FETCH_MAX_WAIT_MS, create_app
from streams.faust_kafka import FAUST_FETCH_MAX_WAIT_MS
from streams.settings import Settings


@pytest.mark.parametrize(
    ("env", "expected_ms"),
    [
        ({"broker_kind": "tansu"}, EMBEDDED_FETCH_MAX_WAIT_MS),
        ({"broker_kind": "kafka"}, FAUST_FETCH_MAX_WAIT_MS),
        ({"broker_kind": "tansu", "fetch_max_wait_ms": 321}, 321),
    ],
)
async def test_worker_consumer_gets_the_configured_fetch_wait(
    tmp_path: Path, env: dict[str, object], expected_ms: int
) -> None:
    settings = Settings(app_id="test-fetch-wait", partitions=2, data_dir=tmp_path, **env)  # type: ignore[arg-type]
    app = create_app(settings, EngineConfig(), "127.0.0.1:9", Metrics(CollectorRegistry()))
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == expected_ms
    finally:
        await consumer.stop()
    assert EMBEDDED_FETCH_MAX_WAIT_MS < FAUST_FETCH_MAX_WAIT_MS

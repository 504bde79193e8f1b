"""Shared fixtures: paths to the real October data, the embedded broker (one per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedBroker, embedded_broker

REPO_ROOT = Path(__file__).resolve().parents[1]
OCT10_DIR = REPO_ROOT.parent / "shared" / "data" / "oct10"


@pytest.fixture(scope="session")
def oct10_dir() -> Path:
    if not OCT10_DIR.is_dir():
        pytest.fail(f"real October data not found at {OCT10_DIR} (expected ../shared beside the repo)")
    return OCT10_DIR


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The embedded Kafka-compatible broker, started once and always stopped."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with embedded_broker(log_path=log) as running:
        yield running

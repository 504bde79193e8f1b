"""``liqmon worker``: run the faust worker (on the embedded broker when none is configured)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server

from monitor.metrics import Metrics
from streams.broker import embedded_broker
from streams.delivery import attach_delivery
from streams.settings import Settings, load_engine_config

__all__ = ["resolve_bootstrap", "run_worker", "serve_metrics"]


def serve_metrics(addr: str, port: int) -> Metrics:
    """Build the metric catalogue on a fresh registry and serve it on addr:port (0 = off)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if port:
        start_http_server(port, addr=addr, registry=registry)
    return metrics


@contextlib.contextmanager
def resolve_bootstrap(settings: Settings) -> Iterator[tuple[str, Settings]]:
    """The configured bootstrap, or an embedded broker started for the block."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap, settings
        return
    with embedded_broker() as broker:
        print(f"liqmon: embedded broker on {broker.bootstrap}", file=sys.stderr)
        yield broker.bootstrap, settings.model_copy(update={"broker_kind": "tansu"})


def run_worker(settings: Settings) -> int:
    """Run the worker until it is stopped; returns the process exit code."""
    from faust.worker import Worker

    class QuietWorker(Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # faust's progress spinner lowers the root logger to DEBUG so it can spin on
            # every record: every library debug line would then be formatted (measured:
            # ~4% of the market agent's time). The worker runs headless: no spinner.
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    from streams.app import create_app

    config = load_engine_config(settings.config, settings.margin_tables)
    with resolve_bootstrap(settings) as (bootstrap, effective):
        import asyncio

        from streams.kafka_replay import ensure_topics

        # Create the topics with their designed partition counts before faust can
        # auto-create them with its defaults (a mismatch would stop the worker).
        asyncio.run(ensure_topics(bootstrap, effective.partitions, effective.replication_factor))
        metrics = serve_metrics(effective.metrics_addr, effective.metrics_port)
        metrics.worker_up.set(1)
        app = create_app(effective, config, bootstrap, metrics)
        attach_delivery(app, effective, metrics)
        level = effective.log_level.lower()
        logging.basicConfig(level=logging.WARNING)
        if level not in {"crit", "error", "warn", "info", "debug"}:
            level = "warn"
        worker = QuietWorker(app, loglevel=level, quiet=True)
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0

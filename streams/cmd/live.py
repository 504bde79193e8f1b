"""``liqmon live``: connect to the configured venues, normalise, publish to Kafka, record.

Batches and dead letters are published exactly as the replayer publishes them
(:mod:`streams.kafka.publish`); ``feed_stale``, ``feed_lag`` and ``book_gap`` alerts go to ``alerts.cascade``.
With ``--record FILE.jsonl.gz`` every raw frame (REST snapshots, connection resets,
silent-channel reports, rejected frames, the session's book throttle and the
contract-value table and the venue margin tables included) is written in the capture format, so
``liqmon replay --capture FILE`` replays the session through the same books and engine,
to the same alerts and dead letters.

On the embedded default (no ``LIQMON_KAFKA_BOOTSTRAP``) it runs the whole pipeline: it
starts the broker, a worker the way ``liqmon replay`` does (its log in ``OUT/worker.log``),
and prints every alert on ``alerts.cascade`` as it comes (the worker's and the feeds'), one
line each on stdout. ``--no-worker`` starts none (workers of your own read the broker).
With ``LIQMON_KAFKA_BOOTSTRAP`` set it only publishes: the workers are yours.

A recording that cannot be written (a full disk) stops, logged once and in
``liqmon_recording_failed``, while the session goes on; the exit summary says where it
stopped, and the exit code is then 1.

Run standalone: ``python -m streams.cmd.live --duration 60 --record out/live.jsonl.gz``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.config import EngineConfig
from streams.cmd.arguments import positive_number
from streams.errors import EXIT_OUTPUT_FAILED, UsageError
from streams.feeds.config import LiveConfig, split_config
from streams.settings import ConfigFileError, Settings, read_config_file

if TYPE_CHECKING:  # the feeds are imported when a session starts
    from streams.feeds.runner import LiveStats, Recorder
    from streams.kafka.broker import EmbeddedBroker
    from streams.kafka.publish import KafkaPublisher

__all__ = [
    "add_parser",
    "main",
    "parse_venue_url",
    "print_alerts",
    "publish_summary",
    "run",
    "stop_signals",
    "watch_broker",
    "watch_worker",
]

#: After the feeds stop, how long alerts of the last batches still get to be printed.
ALERT_GRACE_S = 2.0
#: How long the producer gets to stop after the session's own drain (``[live] publish_drain_s``).
PUBLISHER_STOP_S = 10.0


def parse_venue_url(text: str) -> tuple[str, str]:
    """``VENUE=URL`` → (venue, url)."""
    venue, sep, url = text.partition("=")
    if not sep or not venue or not url:
        raise argparse.ArgumentTypeError(f"expected VENUE=URL, got {text!r}")
    return venue.strip(), url.strip()


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML: engine config plus a [live] table (venues, streams, timeouts); "
                             "default LIQMON_CONFIG")
    parser.add_argument("--record", type=Path, default=None, metavar="FILE.jsonl.gz",
                        help="write every raw frame in the capture format")
    parser.add_argument("--ws-url", type=parse_venue_url, action="append", default=[], metavar="VENUE=URL",
                        help="override a venue's websocket base URL (repeatable)")
    parser.add_argument("--rest-url", type=parse_venue_url, action="append", default=[], metavar="VENUE=URL",
                        help="override a venue's REST base URL (repeatable)")
    parser.add_argument("--duration", type=positive_number, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--no-worker", action="store_true",
                        help="on the embedded broker, start no worker and print no alerts (default: start "
                             "one and print its alerts as they come)")
    parser.add_argument("--out", type=Path, default=Path("out/live"), metavar="DIR",
                        help="where the worker started on the embedded broker logs (DIR/worker.log)")


def add_parser(subparsers: Any) -> None:
    """Register the ``live`` sub-command on an argparse subparsers object."""
    parser = subparsers.add_parser("live", help="connect to the venues, publish normalised batches, record",
                                   description=__doc__)
    _add_arguments(parser)
    parser.set_defaults(func=run)


def load_configs(path: Path | None) -> tuple[EngineConfig, LiveConfig]:
    if path is None:
        return EngineConfig(), LiveConfig()
    return read_config_file(path, split_config)


async def print_alerts(bootstrap: str, stop: asyncio.Event) -> int:
    """Print each alert on ``alerts.cascade`` once (by id), one line on stdout, until ``stop``."""
    from aiokafka import AIOKafkaConsumer

    from monitor.alerts import format_alert_line
    from monitor.protocol import Alert
    from streams import topics
    from streams.kafka.replay import collect_alerts
    from streams.kafka.security import kafka_client_options

    seen: set[str] = set()

    def show(_read_ms: float, alert: Alert) -> None:
        if alert.alert_id not in seen:
            seen.add(alert.alert_id)
            print(format_alert_line(alert), flush=True)

    consumer = AIOKafkaConsumer(topics.ALERTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, **kafka_client_options())
    await consumer.start()
    try:
        await collect_alerts(consumer, stop, show)
    finally:
        await consumer.stop()
    return len(seen)


async def watch_worker(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """Say once, on stderr, when the worker ``liqmon live`` started has exited."""
    while worker.poll() is None:
        await asyncio.sleep(1.0)
    print(f"liqmon: the worker exited with code {worker.returncode}: no more alerts; see {log_path}",
          file=sys.stderr, flush=True)


async def watch_broker(broker: EmbeddedBroker) -> None:
    """Say once, on stderr, when the embedded broker has exited (killed, out of memory): the
    session goes on reading and recording its venues, but publishes nothing from then on
    (each item shed is counted, and the exit summary says how many)."""
    while broker.process.poll() is None:
        await asyncio.sleep(1.0)
    print(f"liqmon: the embedded broker exited with code {broker.process.returncode}: nothing is published "
          "or alerted from now on; the recording (--record) goes on", file=sys.stderr, flush=True)


async def _run_live(
    args: argparse.Namespace, bootstrap: str, effective: Settings, engine: EngineConfig, live: LiveConfig,
    recorder: Recorder | None = None, worker: subprocess.Popen[bytes] | None = None,
    broker: EmbeddedBroker | None = None,
) -> int:
    # the feeds (aiohttp, websockets) are imported when a live session starts, not for
    # every command of the command line
    from streams.cmd.worker import serve_metrics
    from streams.feeds.instruments import fetch_instruments
    from streams.feeds.margin_tables import fetch_margin_tables
    from streams.feeds.runner import LiveRunner
    from streams.kafka.client_log import quiet_client_logs
    from streams.kafka.publish import KafkaPublisher
    from streams.kafka.replay import ensure_topics

    quiet_client_logs()  # a broker away: the client's per-attempt errors once per 30 s, not 100 a second
    # The broker (embedded or not) is resolved by the caller, outside this event loop.
    await ensure_topics(bootstrap, effective.partitions, effective.replication_factor, effective.account_shards)
    printing = asyncio.Event()
    printer = asyncio.ensure_future(print_alerts(bootstrap, printing)) if worker is not None else None
    watcher = asyncio.ensure_future(watch_worker(worker, args.out / "worker.log")) if worker is not None else None
    broker_watcher = asyncio.ensure_future(watch_broker(broker)) if broker is not None else None
    metrics = serve_metrics(effective.metrics_addr, effective.live_metrics_port)
    publisher = await KafkaPublisher.start(bootstrap)
    tables = await fetch_margin_tables(live)
    instruments = await fetch_instruments(live)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":  # no loop signal handlers there; Ctrl-C still interrupts
        for sig in stop_signals():
            with contextlib.suppress(RuntimeError):  # not the main thread (embedded use)
                loop.add_signal_handler(sig, stop.set)
    runner = LiveRunner(engine, live, publisher, recorder=recorder, metrics=metrics, margin_tables=tables,
                        instruments=instruments)
    print(f"liqmon: live on {len(runner.connections)} connections to {', '.join(runner.adapters)}; "
          f"publishing to {bootstrap}", file=sys.stderr, flush=True)
    try:
        stats = await runner.run(args.duration, stop)
    finally:
        await _stop_publisher(publisher)
        if printer is not None:
            await asyncio.sleep(ALERT_GRACE_S)  # alerts of the last batches are on their way
            printing.set()
            await printer
        for task in (watcher, broker_watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    print(f"liqmon: {stats.frames:,} frames, {runner.ingest.stats.events:,} events, "
          f"{sum(runner.ingest.stats.deadletters.values())} dead letters, {sum(stats.alerts.values())} feed alerts, "
          f"{stats.reconnects} reconnects, {sum(stats.shed.values()):,} frames shed"
          + publish_summary(stats) + _recording_summary(args.record, recorder), file=sys.stderr)
    lost = stats.unpublished or stats.unconfirmed or (recorder is not None and recorder.error is not None)
    return EXIT_OUTPUT_FAILED if lost else 0


def stop_signals() -> list[signal.Signals]:
    """Signals that end a session the way its ``--duration`` does (published, recorded,
    closed): Ctrl-C, a service manager's stop, and the terminal closing (SIGHUP) unless
    ``nohup`` started the session to outlive its terminal (it stays ignored then)."""
    out = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        out.append(signal.SIGHUP)
    return out


async def _stop_publisher(publisher: KafkaPublisher) -> None:
    """Stop the producer, for at most :data:`PUBLISHER_STOP_S` (a broker away may not answer)."""
    try:
        await asyncio.wait_for(publisher.stop(), PUBLISHER_STOP_S)
    except Exception as exc:  # whatever the producer raises (TimeoutError too): said, not a traceback
        print(f"liqmon: the producer did not stop cleanly: {type(exc).__name__} {exc}".rstrip(), file=sys.stderr)


def publish_summary(stats: LiveStats) -> str:
    """The exit summary's word on what the broker never got (nothing when it got everything)."""
    out = ""
    if stats.unpublished:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(stats.unpublished.items()))
        out += f"; {sum(stats.unpublished.values()):,} items NOT published ({kinds}): the broker was away"
    if stats.unconfirmed:
        out += f"; the broker did not confirm the last records ({stats.unconfirmed})"
    return out


def _recording_summary(path: Path | None, recorder: Recorder | None) -> str:
    """The exit summary's word on ``--record``: where it went, or where and why it stopped."""
    if recorder is None:
        return ""
    if recorder.error is None:
        return f"; recorded {path}"
    return (f"; the recording {path} STOPPED after {recorder.lines:,} lines "
            f"({recorder.error.strerror or recorder.error}): it ends there")


def _open_recorder(path: Path | None) -> Recorder | None:
    """The ``--record`` file opened for writing, or a :class:`UsageError` saying why not."""
    if path is None:
        return None
    from streams.feeds.runner import Recorder

    try:
        return Recorder(path)
    except OSError as exc:
        raise UsageError(f"cannot write --record {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``liqmon live``; returns the exit code."""
    settings = Settings()
    engine, live = load_configs(args.config or settings.config)  # the file its worker reads too
    try:
        live = live.with_urls(dict(args.ws_url), dict(args.rest_url))
    except ValueError as exc:
        raise ConfigFileError(str(exc)) from None
    from streams.cmd.worker import resolve_broker, worker_env, worker_process

    try:
        with contextlib.ExitStack() as stack:
            recorder = _open_recorder(args.record)  # before anything starts: a path it cannot write is one line
            if recorder is not None:
                stack.callback(recorder.close)
            bootstrap, effective, broker = stack.enter_context(resolve_broker(settings))
            worker = None
            if not settings.kafka_bootstrap and not args.no_worker:
                log_path = args.out / "worker.log"
                worker = stack.enter_context(worker_process(worker_env(
                    bootstrap, effective, metrics_port=effective.metrics_port, config=args.config or effective.config,
                ), log_path))
                print(f"liqmon: worker started (log {log_path}); alerts print here as they come",
                      file=sys.stderr, flush=True)
            return asyncio.run(_run_live(args, bootstrap, effective, engine, live, recorder, worker, broker))
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liqmon live", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ConfigFileError, UsageError) as exc:
        print(f"liqmon: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

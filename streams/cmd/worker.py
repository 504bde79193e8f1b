"""``liqmon worker``: a supervised faust worker that outlives its broker.

``liqmon worker`` supervises one faust worker process (``liqmon worker --once``):

- it waits for the broker (capped, jittered backoff), creates the pipeline's topics, and
  starts the faust worker;
- the faust worker probes its broker every second (``liqmon_broker_connected``, and
  ``/ready`` next to ``/metrics``); when the broker has been unreachable for
  ``LIQMON_BROKER_LOST_S``, or answers again sooner but without the pipeline's topics (an
  in-memory broker restarted empty: the offsets the worker's state reflects went with
  them), it exits with :data:`BROKER_LOST_EXIT`, and the supervisor waits
  for a broker at the same address, re-creates the topics (an in-memory broker comes back
  empty) and starts a new faust worker, which goes on from the checkpoints (or, on an
  empty broker, from nothing). Meanwhile the supervisor serves ``/metrics`` with
  ``liqmon_broker_connected 0`` and ``/ready`` answering 503;
- SIGTERM or SIGINT stop it: the faust worker gets ``LIQMON_STOP_TIMEOUT_S`` to stop
  cleanly, even in the middle of a rebalance, and then exits anyway (its checkpoints make
  an abrupt exit cost re-reading only).

With no ``LIQMON_KAFKA_BOOTSTRAP`` the embedded broker is started first and supervised
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from monitor.metrics import Metrics
from streams import topics
from streams.app.health import HealthServer, Readiness
from streams.backoff import Backoff, BackoffPolicy
from streams.errors import UsageError
from streams.kafka.broker import EmbeddedBroker, broker_reachable, die_with_parent, embedded_broker
from streams.kafka.security import KafkaConnectError, topic_exists
from streams.settings import Settings, load_engine_config
from streams.sinks.delivery import attach_delivery

__all__ = [
    "BROKER_LOST_EXIT",
    "LONE_WORKER_REBALANCE_S",
    "replay_metrics_port",
    "resolve_bootstrap",
    "resolve_broker",
    "run_faust_worker",
    "run_worker",
    "serve_metrics",
    "worker_process",
]

log = logging.getLogger("liqmon.worker")

#: Exit code of a faust worker that lost its broker (EX_TEMPFAIL): the supervisor restarts it.
BROKER_LOST_EXIT = 75

#: The group timeouts of the one worker a replay starts on the embedded broker it started:
#: that broker holds a group's first join for half the session timeout (DESIGN, "embedded
#: broker quirks"), so 2 s instead of the 6 s default starts the replay 2 s sooner. No
#: other member can join that group; faust's heartbeats run on its consumer thread.
LONE_WORKER_REBALANCE_S = 2.0


def serve_metrics(addr: str, port: int, readiness: Readiness | None = None, *, fallback: bool = False) -> Metrics:
    """Build the metric catalogue on a fresh registry and serve it on addr:port (0 = off),
    with ``/ready`` next to it when a readiness is given; with ``fallback``, a port found
    taken is replaced by a free one, said on stderr."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if not port:
        return metrics
    try:
        _serve(addr, port, registry, readiness)
    except OSError as exc:  # the port taken (another worker, exporter), an address not ours
        if not (fallback and exc.errno == errno.EADDRINUSE):
            raise UsageError(f"cannot serve /metrics on {addr}:{port}: {exc.strerror or exc} "
                             "(choose another port, or 0 to turn /metrics off)") from None
        other = _serve(addr, 0, registry, readiness)
        print(f"liqmon: /metrics on {addr}:{other} ({port} is taken: another replay?)", file=sys.stderr, flush=True)
    return metrics


def _serve(addr: str, port: int, registry: CollectorRegistry, readiness: Readiness | None) -> int:
    """Serve ``registry`` on addr:port (0: a free port); the port it listens on."""
    if readiness is not None:
        return HealthServer(addr, port, registry, readiness).port
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_address[1])


def replay_metrics_port(given: int | None, settings: Settings) -> tuple[int, bool]:
    """The /metrics port of the worker a replay starts and whether it may fall back to a free
    one: ``given`` (``--metrics-port``) or ``LIQMON_REPLAY_METRICS_PORT`` when set, held to;
    else 9466, replaced by a free port when taken (two replays side by side)."""
    if given is not None:
        return given, False
    return settings.replay_metrics_port, "replay_metrics_port" not in settings.model_fields_set


@contextlib.contextmanager
def resolve_broker(settings: Settings) -> Iterator[tuple[str, Settings, EmbeddedBroker | None]]:
    """The configured bootstrap, or an embedded broker started for the block (and its process)."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap, settings, None
        return
    with embedded_broker(log_level=settings.broker_log) as broker:
        print(f"liqmon: embedded broker on {broker.bootstrap}", file=sys.stderr)
        yield broker.bootstrap, settings.model_copy(update={"broker_kind": "tansu"}), broker


@contextlib.contextmanager
def resolve_bootstrap(settings: Settings) -> Iterator[tuple[str, Settings]]:
    """The configured bootstrap, or an embedded broker started for the block."""
    with resolve_broker(settings) as (bootstrap, effective, _broker):
        yield bootstrap, effective


def _say(text: str) -> None:
    print(f"liqmon worker: {text}", file=sys.stderr, flush=True)


#: How long the supervisor waits between looks for a broker (and after a worker's exit).
_BROKER_WAIT = BackoffPolicy(initial_s=0.5, max_s=10.0, factor=2.0, jitter_ratio=0.25)


# -- the supervisor --------------------------------------------------------------------
class _Supervisor:
    """Runs faust workers one after another while the broker comes and goes."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        # Jitter only needs to differ between processes, not to be reproducible.
        self._backoff = Backoff(_BROKER_WAIT, random.Random())
        self._ever_ran = False
        self._waiting_said = False

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.stop.set()
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def backoff(self) -> None:
        """Wait before the next try, capped exponential with jitter (0.5 s → 10 s); a stop ends it."""
        self.stop.wait(self._backoff.next_delay())

    def broker_ready(self) -> bool:
        """The broker answers and the topics exist (created when missing)."""
        from streams.errors import KafkaReplayError
        from streams.kafka.replay import ensure_topics

        if not asyncio.run(broker_reachable(self.bootstrap)):
            if not self._waiting_said:
                _say(f"no broker at {self.bootstrap} yet; waiting for it")
                self._waiting_said = True
            return False
        try:
            asyncio.run(ensure_topics(self.bootstrap, self.settings.partitions, self.settings.replication_factor,
                                     self.settings.account_shards))
        except KafkaReplayError as exc:  # the topics do not fit the settings: no retry helps
            _say(str(exc))
            raise SystemExit(2) from exc
        except KafkaConnectError as exc:
            if not self._ever_ran:
                raise  # the settings, not the broker: one line, exit 2, at start
            _say(f"broker at {self.bootstrap} not ready yet ({exc})")
            return False
        except Exception as exc:  # a broker that accepts connections but is not up yet
            _say(f"broker at {self.bootstrap} not ready yet ({type(exc).__name__})")
            return False
        self._backoff.reset()
        self._waiting_said = False
        return True

    @contextlib.contextmanager
    def standby_endpoints(self) -> Iterator[None]:
        """``/metrics`` and ``/ready`` while no faust worker runs (broker_connected 0, not ready)."""
        port = self.settings.metrics_port
        if not port:
            yield
            return
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.worker_up.set(1)
        metrics.broker_connected.set(0)
        try:
            server = HealthServer(self.settings.metrics_addr, port, registry, Readiness())
        except OSError:  # the port is still held by the faust worker that just exited
            yield
            return
        try:
            yield
        finally:
            server.close()

    def run_child(self) -> int:
        env = {**os.environ, "LIQMON_KAFKA_BOOTSTRAP": self.bootstrap,
               "LIQMON_BROKER_KIND": self.settings.broker_kind}
        self.child = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--once"], env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - runs before any thread exists in the child
        )
        try:
            while True:
                try:
                    return self.child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    if self.stop.is_set():
                        return self._stop_child()
        finally:
            self.child = None

    def _stop_child(self) -> int:
        assert self.child is not None
        try:
            return self.child.wait(timeout=self.settings.stop_timeout_s + 2.0)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait(timeout=5)

    def run(self) -> int:
        while not self.stop.is_set():
            with self.standby_endpoints():
                while not self.stop.is_set() and not self.broker_ready():
                    self.backoff()
            if self.stop.is_set():
                return 0
            self._ever_ran = True
            code = self.run_child()
            if self.stop.is_set():
                return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
            if code != BROKER_LOST_EXIT:
                return code
            _say(f"lost the broker at {self.bootstrap}; waiting for it to come back")
        return 0


def run_worker(settings: Settings) -> int:
    """``liqmon worker``: supervise faust workers until stopped; returns the exit code."""
    load_engine_config(settings.config, settings.margin_tables)  # a bad config fails here, in one line
    with resolve_bootstrap(settings) as (bootstrap, effective):
        supervisor = _Supervisor(bootstrap, effective)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, supervisor.on_signal)
        return supervisor.run()


# -- the faust worker ------------------------------------------------------------------
def attach_broker_watch(app: Any, bootstrap: str, settings: Settings, metrics: Metrics, readiness: Readiness,
                        ) -> None:
    """Probe the broker every second; exit with :data:`BROKER_LOST_EXIT` once it is gone,
    or as soon as it answers again without the pipeline's topics (restarted empty: the
    offsets this worker's state reflects are gone with them, and no topic is there to
    consume; the supervisor re-creates the topics and starts a new faust worker)."""
    lost_after_s = settings.broker_lost_s
    lost_since: list[float] = []

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def probe_broker() -> None:
        ok = await broker_reachable(bootstrap)
        if ok and lost_since:  # back: the same broker, or one restarted empty?
            present = await topic_exists(bootstrap, topics.RISK_SIGNALS, settings)
            if present is False:
                _say(f"broker at {bootstrap} came back without the pipeline's topics; restarting")
                os._exit(BROKER_LOST_EXIT)
            ok = present is True  # not asked yet: still lost
        metrics.broker_connected.set(1 if ok else 0)
        readiness.broker_connected = ok
        if ok:
            lost_since.clear()
            return
        if not lost_since:
            lost_since.append(time.monotonic())
            _say(f"broker at {bootstrap} unreachable")
        elif time.monotonic() - lost_since[0] >= lost_after_s:
            # Checkpoints make an abrupt exit safe: the next worker re-reads from them.
            _say(f"broker at {bootstrap} unreachable for {lost_after_s:.0f} s; restarting")
            os._exit(BROKER_LOST_EXIT)

    # faust calls receivers as (app, partitions, signal=..., ...); mode types them as *args
    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        readiness.assigned = True

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        readiness.assigned = False


def _check_writable(directory: Path) -> None:
    """The faust data directory made if missing; a :class:`UsageError` when it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use LIQMON_DATA_DIR {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"cannot use LIQMON_DATA_DIR {directory}: not writable")


def run_faust_worker(settings: Settings) -> int:
    """``liqmon worker --once``: one faust worker against ``LIQMON_KAFKA_BOOTSTRAP``."""
    from faust.worker import Worker

    from streams.app.faust_app import create_app, data_dir

    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise UsageError("liqmon worker --once needs LIQMON_KAFKA_BOOTSTRAP (without it, `liqmon worker` starts "
                         "an embedded broker)")
    _check_writable(data_dir(settings))
    stop_timeout_s = settings.stop_timeout_s

    class QuietWorker(Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # faust's progress spinner lowers the root logger to DEBUG so it can spin on
            # every record: every library debug line would then be formatted (measured:
            # ~4% of the market agent's time). The worker runs headless: no spinner.
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        async def on_stop(self) -> None:
            readiness.stopping = True
            _exit_after(stop_timeout_s)
            await super().on_stop()

    config = load_engine_config(settings.config, settings.margin_tables)
    readiness = Readiness()
    readiness.broker_connected = asyncio.run(broker_reachable(bootstrap))  # until the probe timer runs
    metrics = serve_metrics(settings.metrics_addr, settings.metrics_port, readiness,
                            fallback=settings.metrics_port_fallback)
    metrics.worker_up.set(1)
    metrics.broker_connected.set(1 if readiness.broker_connected else 0)
    app = create_app(settings, config, bootstrap, metrics)
    attach_delivery(app, settings, metrics)
    attach_broker_watch(app, bootstrap, settings, metrics, readiness)
    logging.basicConfig(level=logging.WARNING)
    worker = QuietWorker(app, loglevel=settings.log_level, quiet=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _exit_after(timeout_s: float) -> None:
    """Exit the process if it has not stopped within ``timeout_s`` (a wedged shutdown)."""

    def force() -> None:
        _say(f"did not stop within {timeout_s:.0f} s; exiting")
        os._exit(0)

    timer = threading.Timer(timeout_s, force)
    timer.daemon = True
    timer.start()


def worker_env(
    bootstrap: str, effective: Settings, *, metrics_port: int, config: Path | None, margin_tables: Path | None = None,
    rebalance_timeout_s: float | None = None, metrics_port_fallback: bool = False,
) -> dict[str, str]:
    """The environment of a worker a command starts beside it (``replay``, ``live``): its broker,
    metrics port, partitions, the config file (the worker reads its engine part), and a
    group timeout when the command wants one (:data:`LONE_WORKER_REBALANCE_S`)."""
    env = {
        "LIQMON_KAFKA_BOOTSTRAP": bootstrap,
        "LIQMON_BROKER_KIND": effective.broker_kind,
        "LIQMON_METRICS_PORT": str(metrics_port),
        "LIQMON_METRICS_PORT_FALLBACK": "1" if metrics_port_fallback else "0",
        "LIQMON_PARTITIONS": str(effective.partitions),
        "LIQMON_ACCOUNT_SHARDS": str(effective.account_shards),
    }
    if config is not None:
        env["LIQMON_CONFIG"] = str(config)
    if margin_tables is not None:
        env["LIQMON_MARGIN_TABLES"] = str(margin_tables)
    if rebalance_timeout_s is not None:
        env["LIQMON_REBALANCE_TIMEOUT_S"] = str(rebalance_timeout_s)
    return env


@contextlib.contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``liqmon worker`` as a child process; always stopped on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

"""The ``liqmon`` command line: replay, worker, broker, bench, stress, spiral, import, live."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from monitor.config import error_place
from replay.capture import CaptureError, open_capture
from replay.outputs import write_alerts, write_snapshots, write_summary
from replay.progress import ReplayProgress
from replay.storage import STORAGE_ERRNOS
from streams.cmd.arguments import count, port_number, positive_count, positive_counts, positive_number, section_names
from streams.errors import KafkaReplayError, OutputError, UsageError, run_writing_outputs
from streams.kafka.broker import BrokerError
from streams.settings import ConfigFileError, Settings, load_engine_config, settings_error_line

if TYPE_CHECKING:  # the scenario package is imported when a replay asks for one
    from monitor.config import EngineConfig
    from monitor.protocol import Alert
    from replay.routing import ReplayStats
    from replay.scenario import ScenarioResult

__all__ = ["main"]


def _parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be 'max' or a number, got {text!r}") from None
    if not speed > 0:
        raise argparse.ArgumentTypeError("speed must be > 0")
    return speed


def _utc(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC time."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> int:
    """UTC time as 'YYYY-mm-dd HH:MM[:SS]', ISO 8601, or integer ms."""
    import datetime as dt

    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use 2025-10-10T21:00 or ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


class Phases:
    """Wall time of each phase of a command, printed at its end."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._mark = self.started

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now

    def line(self) -> str:
        parts = [f"{name} {s:,.1f} s" for name, s in self.seconds.items()]
        return "time: " + " · ".join(parts) + f" · total {time.perf_counter() - self.started:,.1f} s"


def _scenario(args: argparse.Namespace, out_dir: Path) -> Any:
    """The requested synthetic scenario: from the cache, else generated (into the cache)."""
    from replay.scenario import generate
    from replay.scenario.cache import generate_cached

    knobs: dict[str, Any] = {}
    for item in args.knob or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--knob expects NAME=VALUE, got {item!r}")
        knobs[name] = orjson.loads(value) if value[:1] in "-0123456789[{tf" else value
    try:
        if args.no_scenario_cache:
            if not args.quiet:
                print(f"liqmon: generating scenario {args.scenario} (seed {args.seed}) ...", file=sys.stderr)
            return generate(args.scenario, args.seed, out_dir / "scenario", knobs or None)
        if not args.quiet:
            print(f"liqmon: scenario {args.scenario} (seed {args.seed}): cached in {args.scenario_cache}, "
                  "else generated there ...", file=sys.stderr, flush=True)
        result, hit = generate_cached(args.scenario, args.seed, args.scenario_cache, knobs or None)
        if not args.quiet:
            print(f"liqmon: scenario {'from the cache' if hit else 'generated'}: {result.out_dir}",
                  file=sys.stderr, flush=True)
        return result
    except ValidationError as exc:
        reason = _knob_errors(exc)
        if reason is None:
            raise
        raise UsageError(f"scenario {args.scenario!r}: {reason}") from None
    except (ValueError, KeyError) as exc:
        raise UsageError(f"scenario {args.scenario!r}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # the cache or the output directory cannot be written
        where = exc.filename or (out_dir / "scenario" if args.no_scenario_cache else args.scenario_cache)
        said = f"scenario {args.scenario!r}: cannot write {where}: {exc.strerror or exc}"
        if exc.errno in STORAGE_ERRNOS:  # a full disk: the machine's, not the user's
            raise OutputError(said) from None
        raise UsageError(said) from None


def _knob_errors(exc: ValidationError) -> str | None:
    """The ``--knob`` values a scenario refused, each named with the reason (None: the
    error is not about a scenario's knobs)."""
    from replay.scenario.config import ScenarioKnobs
    from replay.scenario.weekend.scenario import WeekendKnobs

    model = {knobs.__name__: knobs for knobs in (ScenarioKnobs, WeekendKnobs)}.get(exc.title)
    if model is None:
        return None
    parts = []
    for error in exc.errors(include_url=False):
        name = error_place(error)
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown knob {name!r} (knobs: {', '.join(model.model_fields)})")
        else:
            parts.append(f"knob {name}: {error['msg']}")
    return "; ".join(parts)


def _margin_tables_path(args: argparse.Namespace, settings: Settings, capture: Path) -> Path | None:
    """``--margin-tables``, else ``LIQMON_MARGIN_TABLES``, else the capture itself when a live
    recording starts with the venues' margin tables (RISK_MODEL §3), else the built-ins."""
    if args.margin_tables is not None:
        return Path(args.margin_tables)
    if settings.margin_tables is not None:
        return settings.margin_tables
    from monitor.stages.stress import StressInputError
    from replay.margin_tables import capture_margin_tables

    try:
        return capture if capture_margin_tables(capture) else None
    except StressInputError as exc:
        raise UsageError(str(exc)) from None


@dataclasses.dataclass
class _ReplayInputs:
    """What a replay runs on: the capture, the engine config and the population."""

    capture: Path
    config: EngineConfig
    #: The input lines, each checked against its model when read.
    positions: list[dict[str, Any]] | None
    accounts: list[dict[str, Any]] | None
    scenario: ScenarioResult | None
    #: The margin tables in force (a file, or the capture's recorded ones), or None.
    margin_tables: Path | None


@dataclasses.dataclass
class _ReplayRun:
    """What a replay produced, inline or through Kafka."""

    alerts: list[Any]
    stats: Any  # replay.replayer.ReplayStats
    mode: str
    snapshots: list[Any]
    worker_deadletters: int = 0


def _replay_inputs(args: argparse.Namespace, settings: Settings, out_dir: Path, phases: Phases) -> _ReplayInputs:
    scenario = None
    if args.scenario:
        if args.capture is not None:
            raise UsageError("give either --capture or --scenario, not both")
        scenario = _scenario(args, out_dir)
        if scenario.config_path is not None and not (args.config or settings.config):
            args.config = scenario.config_path  # e.g. its own peg asset; the worker gets it too
        phases.done("scenario")
        args.capture = scenario.capture_path
        args.positions = args.positions or scenario.positions_path
        args.accounts = args.accounts or scenario.accounts_path
    elif args.capture is None:
        raise UsageError("one of --capture FILE or --scenario NAME is required")
    capture: Path = args.capture
    try:
        open_capture(capture).close()
    except CaptureError as exc:
        raise UsageError(str(exc)) from None
    tables = _margin_tables_path(args, settings, capture)
    config = load_engine_config(args.config or settings.config, tables)
    from monitor.accounts.watch import account_document
    from monitor.models.loops.lending import checked_position
    from replay.replayer import InputFileError, load_jsonl

    def as_the_stage_takes_it(raw: dict[str, Any]) -> object:
        """The account as the global stage takes it: the model, default price keys filled in."""
        return account_document(raw, 0, config)

    def as_the_stage_takes_position(raw: dict[str, Any]) -> object:
        """The position as the global stage takes it: the model, an e-mode the config knows."""
        return checked_position(raw, config.risk.aave_v3)

    try:
        positions = load_jsonl(args.positions, as_the_stage_takes_position) if args.positions else None
        accounts = load_jsonl(args.accounts, as_the_stage_takes_it) if args.accounts else None
    except (OSError, InputFileError) as exc:
        raise UsageError(str(exc)) from None
    phases.done("inputs")
    return _ReplayInputs(capture, config, positions, accounts, scenario, tables)


def _run_inline(
    args: argparse.Namespace, settings: Settings, inputs: _ReplayInputs, recorder: Any, progress: ReplayProgress | None
) -> _ReplayRun:
    from replay.replayer import replay_inline

    inline = asyncio.run(
        replay_inline(
            inputs.capture, inputs.config, args.speed, args.from_ms, args.to_ms, progress,
            on_alert=recorder.on_alert, on_batch=recorder.on_batch, on_snapshot=recorder.on_risk_snapshot,
            partitions=settings.partitions, positions=inputs.positions, accounts=inputs.accounts,
            account_shards=settings.account_shards, on_idle=recorder.idle,
        )
    )
    return _ReplayRun(inline.alerts, inline.stats, "inline", inline.snapshots)


def _run_kafka(
    args: argparse.Namespace, settings: Settings, inputs: _ReplayInputs, recorder: Any, out_dir: Path,
    progress: ReplayProgress | None,
) -> _ReplayRun:
    from streams.cmd.worker import (
        LONE_WORKER_REBALANCE_S,
        replay_metrics_port,
        resolve_bootstrap,
        worker_env,
        worker_process,
    )
    from streams.kafka.client_log import quiet_client_logs
    from streams.kafka.replay import ReplayHooks, ensure_topics, replay_kafka

    quiet_client_logs()  # a broker lost: the client's per-attempt errors once per 30 s, not 100 a second
    # On the broker this command starts, its worker is the group's only member.
    lone = not settings.kafka_bootstrap and settings.rebalance_timeout_s is None

    with resolve_bootstrap(settings) as (bootstrap, effective):
        asyncio.run(ensure_topics(bootstrap, effective.partitions, effective.replication_factor,
                                 effective.account_shards))
        with contextlib.ExitStack() as stack:
            alive: Callable[[], bool] | None = None
            if not args.no_worker:
                # The replay's worker serves the replay's /metrics (9466 unless told, or taken).
                port, fallback = replay_metrics_port(args.metrics_port, settings)
                env = worker_env(
                    bootstrap, effective, config=args.config or settings.config, margin_tables=inputs.margin_tables,
                    metrics_port=port, metrics_port_fallback=fallback,
                    rebalance_timeout_s=LONE_WORKER_REBALANCE_S if lone else None,
                )
                proc = stack.enter_context(worker_process(env, out_dir / "worker.log"))
                alive = lambda: proc.poll() is None  # noqa: E731
            hooks = ReplayHooks(
                progress=progress, on_alert=recorder.on_alert,
                on_batch=recorder.on_batch, on_snapshot=recorder.on_risk_snapshot, alive=alive,
            )
            try:
                kafka = asyncio.run(
                    replay_kafka(
                        inputs.capture, inputs.config, bootstrap, speed=args.speed, from_ms=args.from_ms,
                        to_ms=args.to_ms, positions=inputs.positions, accounts=inputs.accounts,
                        group=effective.app_id, idle_timeout_s=args.idle_timeout, hooks=hooks,
                    )
                )
            except KafkaReplayError as exc:
                said = _worker_error(out_dir / "worker.log") if alive is not None and not alive() else None
                if said is None:
                    raise
                raise KafkaReplayError(f"{exc}; it said: {said}") from None
    return _ReplayRun(kafka.alerts, kafka.stats, "kafka", kafka.snapshots, kafka.worker_deadletters)


def _worker_error(log_path: Path) -> str | None:
    """The one-line error a worker printed before it exited (its last), if any."""
    prefix = "liqmon: error: "
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    said = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    return said[-1] if said else None


def _calibration(inputs: _ReplayInputs, recorder: Any, phases: Phases) -> tuple[dict[str, Any], Table | None, str]:
    """The scenario's calibration rows: the summary's extra fields, the table, whose figures."""
    scenario = inputs.scenario
    if scenario is None:
        return {}, None, ""
    from replay.calibration import calibration_table
    from replay.scenario import calibrate_scenario

    figures_of, rows = calibrate_scenario(scenario)
    recorder.set_calibration(rows)
    extra: dict[str, Any] = {
        "scenario": {"name": scenario.name, "seed": scenario.seed, "generation_s": round(scenario.generation_s, 2)},
        "calibration": [dataclasses.asdict(r) for r in rows],
        "calibration_passed": all(r.passed for r in rows),
    }
    phases.done("calibration")
    return extra, calibration_table(rows), figures_of


def _write_outputs(out_dir: Path, run: _ReplayRun, inputs: _ReplayInputs, recorder: Any, extra: dict[str, Any],
                   ) -> tuple[list[Alert], dict[str, Any]]:
    """``alerts.jsonl``, ``snapshots.jsonl``, ``summary.json`` and ``report.html`` in ``out_dir``;
    (the alerts in order, the summary). A file that cannot be written (a full disk) is an
    :class:`OutputError` naming it."""
    from replay.report.recorder import write_report

    config_hash = inputs.config.config_hash
    path = out_dir / "alerts.jsonl"
    try:
        ordered = write_alerts(path, run.alerts)
        path = out_dir / "snapshots.jsonl"
        write_snapshots(path, run.snapshots)
        path = out_dir / "summary.json"
        summary = write_summary(
            path, capture=inputs.capture, mode=run.mode, config_hash=config_hash,
            stats=run.stats, alerts=ordered, worker_deadletters=run.worker_deadletters, extra=extra,
        )
        path = out_dir / "report.html"
        write_report(recorder, path, title=f"liqmon replay: {inputs.capture.name}", config_hash=config_hash,
                     summary=summary)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return ordered, summary


def _check_window(args: argparse.Namespace, stats: ReplayStats, capture: Path) -> None:
    """A ``--from``/``--to`` window that held no frame of the capture is the user's error,
    said with the span the capture's frames do cover (before: an empty report, exit 0)."""
    first_ms, last_ms = stats.outside_first_ts_ms, stats.outside_last_ts_ms
    if first_ms is None or last_ms is None or stats.first_ts_ms is not None or stats.deadletters:
        return  # no frame outside the window; or one was taken, or refused (its dead letter says why)
    window = " ".join(f"{flag} {_utc(ms)}" for flag, ms in (("--from", args.from_ms), ("--to", args.to_ms))
                      if ms is not None)
    raise UsageError(f"no frame of {capture.name} is in the window {window}: its {stats.outside_frames:,} frames "
                     f"span {_utc(first_ms)} to {_utc(last_ms)}")


def cmd_replay(args: argparse.Namespace) -> int:
    if args.from_ms is not None and args.to_ms is not None and args.from_ms >= args.to_ms:
        raise UsageError(f"--from {_utc(args.from_ms)} is not before --to {_utc(args.to_ms)}: the window is empty")
    settings = Settings()
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file: outputs go to a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write outputs to --out {out_dir}: {exc.strerror or exc}") from None
    phases = Phases()
    inputs = _replay_inputs(args, settings, out_dir, phases)
    config = inputs.config
    from replay.report.recorder import ReportRecorder

    recorder = ReportRecorder(config)
    progress = None if args.quiet else ReplayProgress()
    try:
        if args.inline:
            run = _run_inline(args, settings, inputs, recorder, progress)
        else:
            run = _run_kafka(args, settings, inputs, recorder, out_dir, progress)
    finally:
        if progress is not None:
            progress.close()
    phases.done("replay")
    _check_window(args, run.stats, inputs.capture)
    extra, calibration, figures_of = _calibration(inputs, recorder, phases)
    ordered, summary = _write_outputs(out_dir, run, inputs, recorder, extra)
    phases.done("report")
    if not args.quiet:
        from replay.story import build_story, print_story

        # a pipe or file gets rows of 160 columns, not rich's 80
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        print_story(console, build_story(ordered, run.snapshots), ordered, verbose=args.verbose)
        if calibration is not None:
            console.print(f"\ncalibration against the public figures of {figures_of}:", soft_wrap=True)
            console.print(calibration)
        print(
            f"\n{summary['events']:,} events from {summary['frames']:,} frames in {summary['wall_s']} s; "
            f"{summary['deadletters']} dead letters; config {config.config_hash}; outputs in {out_dir}/"
        )
        print(phases.line())
    return 130 if run.stats.interrupted else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.cmd.worker import run_faust_worker, run_worker

    if args.once:
        return run_faust_worker(Settings())
    return run_worker(Settings())


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.kafka.broker import start_broker

    broker = start_broker(port=args.port, log_level=Settings().broker_log)
    print(f"liqmon: embedded broker listening on {broker.bootstrap} (Ctrl-C to stop)", flush=True)
    print(f"export LIQMON_KAFKA_BOOTSTRAP={broker.bootstrap} LIQMON_BROKER_KIND=tansu", flush=True)
    try:
        while broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.main import run_bench

    code: int = run_bench(args)
    return code


#: ``liqmon bench``'s sections (``--only``), and those it runs without ``--only``.
BENCH_SECTIONS = ("pipeline", "latency", "loops", "accounts", "parsers", "e2e", "scenario", "generation")
BENCH_DEFAULT_SECTIONS = BENCH_SECTIONS[:-1]


def _add_bench_parser(sub: Any) -> None:
    """``liqmon bench`` and its options (each section's sizes and runs)."""
    bench = sub.add_parser("bench", help="measure throughput and latency")
    bench.add_argument("--events", type=positive_count, default=2_000_000, help="market events to produce")
    bench.add_argument("--workers", type=positive_counts, default=(1, 2),
                       help="worker processes for the pipeline section, comma-separated counts (default 1,2)")
    bench.add_argument("--repeats", type=positive_count, default=3,
                       help="pipeline runs per worker count (each on a fresh broker) and generation runs;"
                       " medians are reported")
    bench.add_argument("--scenario-repeats", type=positive_count, default=1,
                       help="replays of the synthetic day per mode, taking turns, each against the floor"
                       " timed just before it; the median run is reported and every run's ratio listed")
    bench.add_argument("--latency-seconds", type=positive_number, default=30.0,
                       help="seconds of the latency run's steady stream")
    bench.add_argument("--latency-rate", type=positive_number, default=10_000.0, help="events/s for the latency run")
    bench.add_argument("--only", type=section_names(BENCH_SECTIONS), default=None,
                       help=f"comma list: {','.join(BENCH_SECTIONS)} (default: all but generation)")
    bench.add_argument("--e2e-rate", type=positive_number, default=20_000.0, help="frames/s of the e2e websocket run")
    bench.add_argument("--e2e-seconds", type=positive_number, default=10.0, help="seconds of the e2e run")
    bench.add_argument("--e2e-no-shed", action="store_true",
                       help="the e2e run with load shedding off ([live.overload] shed_backlog_frames = 0)")
    bench.add_argument("--accounts", type=positive_count, default=1_000_000,
                       help="unified accounts of the accounts bench")
    bench.add_argument("--global-accounts", type=positive_count, default=None,
                       help="account records given to the global stage in the accounts bench (default --accounts)")
    bench.add_argument("--account-shards", type=count, default=4,
                       help="the accounts bench also runs one account shard of this many (0: not)")
    bench.add_argument("--stress-accounts", type=positive_count, default=200_000,
                       help="accounts of the accounts bench's liqmon stress run")
    bench.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    bench.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liqmon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="replay a capture through Kafka (or --inline) and report alerts")
    rp.add_argument("--capture", type=Path, default=None, help="capture file (.jsonl or .jsonl.gz)")
    rp.add_argument("--scenario", default=None,
                    help="generate and replay a synthetic scenario: oct10, oct10-post-fix-index, oct10-aave-mtm, "
                         "calm, stablecoin-weekend")
    rp.add_argument("--seed", type=count, default=1, help="scenario seed, 0 or more (same seed, same bytes)")
    rp.add_argument("--knob", action="append", default=None, metavar="NAME=VALUE",
                    help="scenario knob, e.g. duration_s=3600 (repeatable)")
    rp.add_argument("--speed", type=_parse_speed, default=None, help="'max' (default) or N× real time")
    rp.add_argument("--out", type=Path, default=Path("out/replay"), help="output directory")
    rp.add_argument("--from", dest="from_ms", type=_parse_time, default=None, help="start (UTC)")
    rp.add_argument("--to", dest="to_ms", type=_parse_time, default=None, help="end (UTC, exclusive)")
    rp.add_argument("--inline", action="store_true", help="no broker: call the engine directly")
    rp.add_argument("--config", type=Path, default=None, help="engine config TOML")
    rp.add_argument("--idle-timeout", type=positive_number, default=180.0, metavar="S",
                    help="give up (exit 1, one line naming what is missing) after S seconds without progress")
    rp.add_argument("--no-worker", action="store_true", help="use workers already running")
    rp.add_argument("--metrics-port", type=port_number, default=None,
                    help="/metrics port of the replay's worker (default LIQMON_REPLAY_METRICS_PORT, 0 = off)")
    rp.add_argument("--quiet", action="store_true", help="no progress and no timeline")
    rp.add_argument("--verbose", action="store_true", help="also print every alert, one line each")
    rp.add_argument("--scenario-cache", type=Path, default=Path("out/scenario-cache"),
                    help="where generated scenarios are kept, keyed by name, seed, knobs and generator version")
    rp.add_argument("--no-scenario-cache", action="store_true",
                    help="generate the scenario into OUT/scenario even if it is cached")
    rp.add_argument("--positions", type=Path, default=None,
                    help="lending positions (JSON lines), loaded before the market data")
    rp.add_argument("--accounts", type=Path, default=None,
                    help="unified accounts (JSON lines), loaded before the market data")
    rp.add_argument("--margin-tables", type=Path, default=None, metavar="TABLES",
                    help="venue margin tables (JSON document or recording); default: the "
                         "capture's own margin_tables frames, else the built-in tables")
    rp.set_defaults(func=cmd_replay)

    wp = sub.add_parser("worker", help="run a supervised faust worker against LIQMON_KAFKA_BOOTSTRAP")
    wp.add_argument("--once", action="store_true",
                    help="run one faust worker in this process, no supervisor (exits 75 when the broker is lost)")
    wp.set_defaults(func=cmd_worker)

    bp = sub.add_parser("broker", help="run the embedded broker in the foreground")
    bp.add_argument("--port", type=port_number, default=None,
                    help="port on 127.0.0.1 to listen on (default: a free one); in use: one line, exit 2")
    bp.set_defaults(func=cmd_broker)

    _add_bench_parser(sub)

    # Commands with their own modules (imported here, so `liqmon --help` lists them all).
    from replay.importers import add_import_parser
    from streams.cmd import live, spiral, stress

    for adder in (stress.add_parser, spiral.add_parser, add_import_parser, live.add_parser):
        adder(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (UsageError, ConfigFileError, CaptureError, BrokerError) as exc:
        print(f"liqmon: error: {exc}", file=sys.stderr)
        return 2
    except KafkaReplayError as exc:  # the pipeline, not the user: one line, exit 1
        print(f"liqmon: replay failed: {exc}", file=sys.stderr)
        return 1
    except OutputError as exc:  # the machine (a full disk), not the user: one line, exit 1
        print(f"liqmon: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        print(f"liqmon: error: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("liqmon: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(run_writing_outputs(main))

"""``liqmon bench``: throughput, latency and scale figures, measured on this machine.

Sections (``--only`` picks some):

- ``pipeline``: N market events (``PIPELINE_EVENTS_PER_S`` per second of event time) are
  produced (as the real wire unit, batches built by :class:`monitor.ingest.frames.Ingest`) to
  the market topic of a fresh embedded broker; then
  (a) a bare aiokafka consumer reads and JSON-decodes every record, and (b) a real faust
  worker (subprocess, same code as production) consumes them through the peg engine,
  state table and metrics. Prints events/s for both and the ratio b/a, once per worker
  count in ``--workers`` (default 1 and 2: the machine's two cores): the median of
  ``--repeats`` runs, each on a fresh broker with its own (a).
- ``latency``: a steady stream at ``--latency-rate`` events/s with wall-clock event
  times, prices crossing peg bands so alerts fire; p50/p99 from an event's ``ts_ms`` to
  the moment its alert is read back from ``alerts.cascade``.
- ``loops``: one USDe price tick against 1,000,000 loop positions (LoopBook), median
  and p99 per tick, memory per position.
- ``accounts``: the columnar account book (``benchmarks/accounts.py``): one price key
  held by a fifth of ``--accounts`` portfolio-margin accounts stepping through the status
  lines, p99 per tick and memory per account; the standard-shock spirals on the same book;
  the streaming global stage given ``--global-accounts`` of them as account records (load,
  first evaluation, the same walk once, spirals on its live state, checkpoint, memory), and
  one account shard of ``--account-shards`` given the same records (what one worker does
  for its shard: load, first evaluation, walks, checkpoint, memory per account held) and
  the aggregation stage's copy of them for the spirals (load, spirals, memory, checkpoint);
  ``liqmon stress`` on ``--stress-accounts`` of them against orjson-parsing their file
  (each line dropped as parsed, and all kept in a list with the collector paused and on).
- ``parsers``: frames/s of each venue parser (single core), when the feeds are present.
- ``e2e``: local websocket server → ``liqmon live`` → Kafka → worker, frames/s and
  receive-to-alert latency (``benchmarks/e2e.py``).
- ``scenario``: generation of the synthetic six hours, then their replay at full speed
  through Kafka and inline, in events/s and as a multiple of real time.
- ``generation``: the generation part of ``scenario`` alone: its time against the time to
  gunzip and JSON-parse the capture it wrote (the issue's target: at most 3×).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.cluster import LATENCY_CONFIG, PARTITIONS, send_end, start_worker, stop, wait_acks, worker_env
from benchmarks.e2e import bench_e2e
from monitor.config import EngineConfig
from monitor.ingest.frames import Ingest, Routed
from monitor.protocol import Alert
from replay.replayer import partition_for
from streams import topics
from streams.app.faust_app import EMBEDDED_FETCH_MAX_WAIT_MS
from streams.cli import BENCH_DEFAULT_SECTIONS
from streams.kafka.broker import embedded_broker
from streams.kafka.replay import collect_alerts, ensure_topics
from streams.kafka.security import kafka_client_options

__all__ = ["run_bench"]

T0_MS = 1_760_130_000_000
#: Event-time density of the pipeline load: 20k events per second of event time, the
#: order of the crash minutes (OCT10_FACTS). It sets how many idle-partition ticks (one
#: per second of event time, to every partition) travel with the data.
PIPELINE_EVENTS_PER_S = 20_000
#: Assets and venues of the synthetic load: a USDe peg book on three venues plus majors.
_LOAD = [
    ("USDe", "USDEUSDT", "binance-spot", 1.0),
    ("USDe", "USDEUSDT", "binance-usdm", 1.0),
    ("USDe", "USDe/USDT", "curve", 1.0),
    ("BTC", "BTCUSDT", "binance-spot", 116_800.0),
    ("ETH", "ETHUSDT", "binance-spot", 4_390.0),
    ("SOL", "SOLUSDT", "binance-spot", 224.5),
]


def _frames(n: int, start_ms: int, step_us: int) -> Iterator[tuple[str, str, dict[str, Any], int]]:
    """Synthetic bookTicker frames; USDe on one venue wanders out of band now and then."""
    for i in range(n):
        asset, symbol, venue, px = _LOAD[i % len(_LOAD)]
        ts = start_ms + (i * step_us) // 1000
        if asset == "USDe" and venue == "binance-spot" and (i // 50_000) % 4 == 3:
            px = 0.97
        wobble = ((i * 7919) % 1000 - 500) * 1e-7 * px
        yield (*_frame(venue, symbol, px + wobble, i), ts)


def _frame(venue: str, symbol: str, mid: float, seq: int) -> tuple[str, str, dict[str, Any]]:
    if venue == "curve":
        return venue, "price", {"base": "USDe", "quote": "USDT", "price": round(mid, 8), "depth_usd": 5e7}
    raw = {"u": seq, "s": symbol, "b": f"{mid * 0.99995:.8f}", "B": "12.5", "a": f"{mid * 1.00005:.8f}", "A": "9.75"}
    return venue, f"{symbol.lower()}@bookTicker", raw


def _build_records(n_events: int) -> tuple[list[tuple[int, bytes, bytes | None]], int, float]:
    """The load as market-topic records (partition, value, key), built once by Ingest.

    Returns the records, the number of events in them and the ingest rate (events/s).
    """
    ingest = Ingest(EngineConfig())
    records: list[tuple[int, bytes, bytes | None]] = []
    started = time.perf_counter()
    for venue, channel, raw, ts in _frames(n_events, T0_MS, 1_000_000 // PIPELINE_EVENTS_PER_S):
        for item in ingest.feed(venue, channel, raw, ts, b""):
            assert isinstance(item, Routed)
            parts = range(PARTITIONS) if item.broadcast else (partition_for(item.batch.asset, PARTITIONS),)
            value = item.batch.encode()
            records.extend((part, value, item.batch.asset.encode()) for part in parts)
    for routed in ingest.finish():
        records.append((partition_for(routed.batch.asset, PARTITIONS), routed.batch.encode(), None))
    return records, ingest.stats.events, ingest.stats.events / (time.perf_counter() - started)


async def _produce_records(bootstrap: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                **kafka_client_options())
    await producer.start()
    try:
        pending = []
        for part, value, key in records:
            pending.append(await producer.send(topics.MARKET, value, key=key, partition=part))
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _bare_consume(bootstrap: str, n_records: int) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_client_options(), enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20)
    await consumer.start()
    tps = [TopicPartition(topics.MARKET, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    events = 0
    seen = 0
    started = time.perf_counter()
    try:
        while seen < n_records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for rec in records:
                    obj = orjson.loads(rec.value)
                    events += len(obj.get("k", ()))  # ticks carry no events
                    seen += 1
    finally:
        await consumer.stop()
    return events, time.perf_counter() - started


def _pipeline_run(records: list[tuple[int, bytes, bytes | None]], workdir: Path, workers: int,
                  rep: int) -> dict[str, Any]:
    """One fresh broker: the records, (a) bare consume + decode, (b) ``workers`` faust workers."""
    with embedded_broker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        asyncio.run(_produce_records(broker.bootstrap, records))
        # (a) is a fraction of a second: three reads of the topic, all kept for the median.
        bare = [asyncio.run(_bare_consume(broker.bootstrap, len(records))) for _ in range(3)]
        run_id = f"bench-pipeline-{workers}-{rep}"
        asyncio.run(send_end(broker.bootstrap, run_id))
        # All workers start together: the group's first join gathers them in one
        # generation (DESIGN quirk 1), so the partitions are split before processing.
        procs = [start_worker(worker_env(broker), workdir / f"worker-pipeline-{workers}-{rep}-{i}.log")
                 for i in range(workers)]
        try:
            acks = asyncio.run(wait_acks(broker.bootstrap, run_id, PARTITIONS, timeout_s=900))
        finally:
            for proc in procs:
                stop(proc)
    processed = sum(a.events for a in acks)
    firsts = [a.first_wall_s for a in acks if a.first_wall_s]
    span_s = max(a.ack_wall_s for a in acks) - min(firsts)
    return {
        "a": [events / seconds for events, seconds in bare],
        "b": processed / span_s,
        "processed": processed,
        "alerts": sum(a.alerts for a in acks),
    }


def bench_pipeline(n_events: int, workdir: Path, workers: tuple[int, ...] = (1, 2),
                   repeats: int = 3) -> dict[str, Any]:
    """(a) and (b) for each worker count, each the median of ``repeats`` runs on fresh brokers.

    One run takes a second or two, so a stall of the shared two cores moves it by tens of
    per cent; the median of a few runs is the figure ((a) is read three times per broker),
    the runs are printed too.
    """
    records, n_produced, ingest_rate = _build_records(n_events)
    n_records = len(records)
    out: dict[str, Any] = {
        "events": n_produced,
        "records": n_records,
        "events_per_record": round(n_produced / n_records, 1),
        "event_time_events_per_s": PIPELINE_EVENTS_PER_S,
        "ingest_events_per_s": round(ingest_rate),
        "repeats": repeats,
    }
    for n in workers:
        runs = [_pipeline_run(records, workdir, n, rep) for rep in range(repeats)]
        a = statistics.median(x for r in runs for x in r["a"])
        b = statistics.median(r["b"] for r in runs)
        out[f"workers_{n}"] = {
            "a_bare_consume_decode_events_per_s": round(a),
            "b_full_pipeline_events_per_s": round(b),
            "b_over_a": round(b / a, 3),
            "runs_a": [round(x) for r in runs for x in r["a"]],
            "runs_b": [round(r["b"]) for r in runs],
            "pipeline_events_processed": [r["processed"] for r in runs],
            "alerts": runs[0]["alerts"],
        }
    return out


async def _latency_run(bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
    from monitor.config import load_config_text

    cfg = load_config_text(LATENCY_CONFIG)
    ingest = Ingest(cfg)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kafka_client_options(), linger_ms=1)
    # The observer fetches like the worker does (a longer wait would be the reader's own
    # delay on the embedded broker, which holds a fetch while any partition is empty).
    consumer = AIOKafkaConsumer(topics.ALERTS, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                **kafka_client_options(),
                                enable_auto_commit=False, fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS)
    await producer.start()
    await consumer.start()
    latencies_ms: list[float] = []
    stop = asyncio.Event()

    def on_alert(read_ms: float, alert: Alert) -> None:
        latencies_ms.append(read_ms - alert.ts_ms)

    async def send(item: Routed) -> None:
        parts = range(PARTITIONS) if item.broadcast else (partition_for(item.batch.asset, PARTITIONS),)
        for part in parts:
            await producer.send(topics.MARKET, item.batch.encode(), key=item.batch.asset.encode(), partition=part)

    collector = asyncio.create_task(collect_alerts(consumer, stop, on_alert))
    await asyncio.sleep(1.0)  # consumer positioned at the end
    try:
        tick_s = 0.01
        per_tick = max(int(rate * tick_s), 1)
        started = time.monotonic()
        i = 0
        next_tick = started
        while time.monotonic() - started < seconds:
            now_ms = int(time.time() * 1000)
            for _ in range(per_tick):
                asset, symbol, venue, px = _LOAD[i % len(_LOAD)]
                if asset == "USDe" and venue == "binance-spot" and (now_ms // 250) % 2:
                    px = 0.95  # crosses the bands four times a second
                venue_id, channel, raw = _frame(venue, symbol, px, i)
                for item in ingest.feed(venue_id, channel, raw, now_ms, b""):
                    assert isinstance(item, Routed)
                    await send(item)
                i += 1
            for item in ingest.finish():  # the live publisher's 10 ms linger
                await send(item)
            next_tick += tick_s
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_s = time.monotonic() - started
        await producer.flush()
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await collector
        await consumer.stop()
        await producer.stop()
    latencies_ms.sort()
    if not latencies_ms:
        raise RuntimeError("no alerts came back during the latency run")

    def pct(q: float) -> float:
        return round(latencies_ms[min(int(q * len(latencies_ms)), len(latencies_ms) - 1)], 1)

    return {
        "rate_target_events_per_s": rate,
        "rate_achieved_events_per_s": round(i / sent_s),
        "alerts": len(latencies_ms),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies_ms[-1], 1),
    }


def bench_latency(rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    config_path = workdir / "latency.toml"
    config_path.write_text(LATENCY_CONFIG)
    with embedded_broker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        worker = start_worker(worker_env(broker, config_path), workdir / "worker-latency.log")
        try:
            # Warm-up: wait until the worker has joined and answers an end marker.
            asyncio.run(send_end(broker.bootstrap, "warmup"))
            asyncio.run(wait_acks(broker.bootstrap, "warmup", PARTITIONS, timeout_s=120))
            return asyncio.run(_latency_run(broker.bootstrap, rate, seconds))
        finally:
            stop(worker)


def bench_loops(n_positions: int = 1_000_000, ticks: int = 200) -> dict[str, Any]:
    from benchmarks.loop_synthetic import synthetic_loop_book

    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    book = synthetic_loop_book(n_positions, seed=1)
    build_s = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times_ms = []
    price = 1.0
    for k in range(ticks):
        price = 1.0 - 0.0005 * (k % 100)  # USDe walking down 0 → −5% and back
        t = time.perf_counter()
        book.update_price("USDe@binance", price)
        times_ms.append((time.perf_counter() - t) * 1000)
    times_ms.sort()
    return {
        "positions": n_positions,
        "build_s": round(build_s, 2),
        "tick_median_ms": round(statistics.median(times_ms), 4),
        "tick_p99_ms": round(times_ms[int(0.99 * (len(times_ms) - 1))], 4),
        "bytes_per_position": round(current / n_positions, 1),
        "peak_bytes_per_position_during_build": round(peak / n_positions, 1),
    }


def _gunzip_parse_s(path: Path) -> float:
    """Seconds to gunzip a capture and orjson-parse each of its lines (the replays' floor)."""
    import gzip

    t = time.perf_counter()
    with gzip.open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
    return time.perf_counter() - t


def bench_generation(workdir: Path, seed: int = 1, repeats: int = 1) -> tuple[Any, dict[str, Any]]:
    """Generate the synthetic six hours; time that against gunzip + JSON parse of the capture.

    With ``repeats`` > 1 both are timed that many times, alternately (the machine's speed
    drifts), and the figures are the medians; every run's ratio is listed too.
    """
    from replay.scenario import generate

    runs: list[tuple[float, float]] = []
    result: Any = None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = generate("oct10", seed, workdir / "scenario")
        generation_s = time.perf_counter() - t
        runs.append((generation_s, _gunzip_parse_s(result.capture_path)))
    generation_s = statistics.median(g for g, _ in runs)
    read_s = statistics.median(r for _, r in runs)
    out: dict[str, Any] = {"frames": result.frames, "generation_s": round(generation_s, 1),
                           "gunzip_parse_s": round(read_s, 2),
                           "generation_over_read": round(generation_s / read_s, 1)}
    if len(runs) > 1:
        out["runs_generation_over_read"] = [round(g / r, 2) for g, r in runs]
    return result, out


def _scenario_run(result: Any, mode: str, run_dir: Path) -> dict[str, Any]:
    """One replay of the generated day (``kafka`` or ``inline``), against the floor timed
    just before it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    env["LIQMON_METRICS_PORT"] = "0"
    cmd = [sys.executable, "-m", "streams.cli", "replay", "--capture", str(result.capture_path),
           "--positions", str(result.positions_path), "--accounts", str(result.accounts_path),
           "--out", str(run_dir), "--quiet", "--metrics-port", "0"]
    if mode == "inline":
        cmd.append("--inline")
    floor_s = _gunzip_parse_s(result.capture_path)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL)
    total_s = time.perf_counter() - t
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    span_s = float(summary["event_span_s"])
    return {
        "events": summary["events"],
        "alerts": summary["alerts"],
        "replay_wall_s": summary["wall_s"],
        "command_wall_s": round(total_s, 1),
        "events_per_s": round(summary["events"] / summary["wall_s"]),
        "x_real_time": round(span_s / summary["wall_s"], 1),
        "gunzip_parse_s": round(floor_s, 2),
        # the measure: the replay against gunzip + parse of its capture, one run
        "over_gunzip_parse": round(summary["wall_s"] / floor_s, 1),
    }


def bench_scenario(workdir: Path, seed: int = 1, repeats: int = 1) -> dict[str, Any]:
    """Generate the synthetic six hours, then replay them at full speed through Kafka and inline.

    Each replay is measured against the floor timed just before it. With ``repeats`` > 1
    the two modes take turns that many times (the machine's speed drifts); each mode's
    figures are then those of its median run, and every run's ratio is listed.
    """
    result, out = bench_generation(workdir, seed)
    reps = range(max(1, repeats))
    runs: dict[str, list[dict[str, Any]]] = {"kafka": [], "inline": []}
    for rep in reps:
        for mode, done in runs.items():
            done.append(_scenario_run(result, mode, workdir / f"replay-{mode}-{rep}"))
    for mode, done in runs.items():
        ranked = sorted(done, key=lambda r: float(r["over_gunzip_parse"]))
        out[mode] = ranked[len(ranked) // 2]
        if len(done) > 1:
            out[mode]["runs_over_gunzip_parse"] = [r["over_gunzip_parse"] for r in done]
    out["kafka_equals_inline"] = all(
        (workdir / f"replay-kafka-{rep}" / "alerts.jsonl").read_bytes()
        == (workdir / f"replay-inline-{rep}" / "alerts.jsonl").read_bytes()
        for rep in reps
    )
    return out


def bench_parsers() -> dict[str, Any]:
    try:
        from benchmarks.parsers import parser_throughput  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return {"skipped": "feed parsers not installed"}
    result: dict[str, Any] = parser_throughput(1.0)
    return {k: round(v) for k, v in result.items()}


def _bench_accounts_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from benchmarks.accounts import (
        bench_account_shard,
        bench_accounts,
        bench_aggregation_copy,
        bench_global_stage,
        bench_stress,
    )

    n = args.accounts
    print(f"bench: {n:,} unified accounts: one key ticking, then the standard-shock spirals ...",
          file=sys.stderr, flush=True)
    out = bench_accounts(n)
    n_global = args.global_accounts or n
    print(f"bench: the global stage given {n_global:,} account records ...", file=sys.stderr, flush=True)
    out["global_stage"] = bench_global_stage(n_global)
    shards = args.account_shards
    if shards:
        print(f"bench: one account shard of {shards} given {n_global:,} account records ...", file=sys.stderr,
              flush=True)
        out["account_shard"] = bench_account_shard(n_global, shards)
        print(f"bench: the aggregation's copy of {n_global:,} sharded accounts for the spirals ...",
              file=sys.stderr, flush=True)
        out["aggregation_copy"] = bench_aggregation_copy(n_global, shards)
    n_stress = args.stress_accounts
    print(f"bench: liqmon stress on {n_stress:,} accounts ...", file=sys.stderr, flush=True)
    out["stress"] = bench_stress(n_stress, work)
    return out


def run_bench(args: argparse.Namespace) -> int:
    sections = set(args.only or BENCH_DEFAULT_SECTIONS)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="liqmon-bench-") as tmp:
        work = Path(tmp)
        if "pipeline" in sections:
            print(f"bench: pipeline with {args.events:,} events ...", file=sys.stderr, flush=True)
            results["pipeline"] = bench_pipeline(args.events, work, args.workers, args.repeats)
        if "latency" in sections:
            print(f"bench: latency at {args.latency_rate:,.0f} events/s ...", file=sys.stderr, flush=True)
            results["latency"] = bench_latency(args.latency_rate, args.latency_seconds, work)
        if "loops" in sections:
            print("bench: 1M loop positions ...", file=sys.stderr, flush=True)
            results["loops"] = bench_loops()
        if "accounts" in sections:
            results["accounts"] = _bench_accounts_section(args, work)
        if "parsers" in sections:
            results["parsers"] = bench_parsers()
        if "e2e" in sections:
            e2e_rate = args.e2e_rate
            print(f"bench: e2e websocket → live → worker at {e2e_rate:,.0f} frames/s ...", file=sys.stderr, flush=True)
            results["e2e"] = bench_e2e(e2e_rate, args.e2e_seconds, workdir=work,
                                       shed=not args.e2e_no_shed)
        if "generation" in sections and "scenario" not in sections:
            print("bench: synthetic six hours: generate, then gunzip and parse ...", file=sys.stderr, flush=True)
            results["generation"] = bench_generation(work, repeats=args.repeats)[1]
        if "scenario" in sections:
            print("bench: synthetic six hours: generate, replay through Kafka and inline ...",
                  file=sys.stderr, flush=True)
            results["scenario"] = bench_scenario(work, repeats=args.scenario_repeats)
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        try:
            Path(args.json).write_text(text + "\n")
        except OSError as exc:  # a write's own error names no file: the one-line error names it
            exc.filename = exc.filename or args.json
            raise
    return 0

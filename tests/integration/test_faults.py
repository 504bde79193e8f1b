"""Fault injection: workers killed, stopped and added mid-replay cost no alert.

A shortened synthetic October day (20:00 → 21:20, the tariff shock and the crash minutes,
small populations) is replayed through the embedded broker at 300x real time against a
group of ``liqmon worker`` processes. Workers are SIGKILLed at chosen moments (in the
crash minutes, right after a rebalance, during the end markers), with and without a
replacement, a third worker joins mid-run, one is SIGSTOPped past its session timeout and
continued. Every run must give ``alerts.jsonl`` identical, byte for byte, to the inline
run of the same capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics
from streams.kafka.broker import EmbeddedBroker, embedded_broker, free_port, start_broker

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.slow]

SPEED = 300
#: faust's broker_rebalance_timeout on the embedded broker (streams/app/faust_app.py).
REBALANCE_TIMEOUT_S = 6.0
#: Event time of the crash minutes after the replay's first market frame (20:00 + 55 min).
CRASH_S = 55 * 60 / SPEED
KNOBS = {
    "duration_s": 4800, "n_alts": 6, "n_binance_usde_loopers": 150, "n_binance_whales": 8,
    "n_binance_market_makers": 12, "n_binance_lst_loopers": 60, "n_aave_usde_loops": 120,
    "n_aave_eth_loans": 60, "n_perp_positions_per_book": 60,
}


@dataclass(frozen=True)
class Scenario:
    dir: Path
    inline_alerts: bytes

    def replay_args(self) -> list[str]:
        return ["--capture", str(self.dir / "capture.jsonl.gz"), "--positions", str(self.dir / "positions.jsonl"),
                "--accounts", str(self.dir / "accounts.jsonl")]


def liqmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *args]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    from replay.scenario import generate

    base = tmp_path_factory.mktemp("faults")
    generate("oct10", 3, base / "scenario", KNOBS)
    sc = Scenario(base / "scenario", b"")
    out = base / "inline"
    subprocess.run(liqmon_cmd("replay", *sc.replay_args(), "--inline", "--quiet", "--out", str(out)),
                   check=True, timeout=300)
    alerts = (out / "alerts.jsonl").read_bytes()
    kinds = {orjson.loads(line)["kind"] for line in alerts.splitlines()}
    assert {"unified_liquidation", "margin_call", "cascade_stage", "peg_deviation"} <= kinds
    return Scenario(sc.dir, alerts)


@dataclass
class Cluster:
    """Workers of one consumer group on one broker, each a ``liqmon worker`` process."""

    broker: EmbeddedBroker
    tmp: Path
    app_id: str
    workers: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    #: Unified accounts over this many account shards (0: the global stage holds them).
    account_shards: int = 0

    def env(self) -> dict[str, str]:
        return {**os.environ, "LIQMON_KAFKA_BOOTSTRAP": self.broker.bootstrap, "LIQMON_BROKER_KIND": "tansu",
                "LIQMON_APP_ID": self.app_id, "LIQMON_CHECKPOINT_INTERVAL_S": "0.5",
                "LIQMON_ACCOUNT_SHARDS": str(self.account_shards), "LIQMON_LOG_LEVEL": "info"}

    def start(self, name: str) -> None:
        port = free_port()
        log = (self.tmp / f"{name}.log").open("ab")
        env = {**self.env(), "LIQMON_METRICS_PORT": str(port), "LIQMON_DATA_DIR": str(self.tmp / name)}
        proc = subprocess.Popen(liqmon_cmd("worker"), env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.workers[name] = (proc, port)

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.workers[name][0].pid, sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.workers[name][0].wait(timeout=10)
        del self.workers[name]

    def gauge(self, name: str, metric: str) -> float:
        """Sum of a metric's samples on a worker's /metrics (0 when not served yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.workers[name][1]}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(metric) and not line.startswith("#"))

    def owner_of_global(self) -> str:
        for name in self.workers:
            if self.gauge(name, 'liqmon_assigned_partitions{topic="risk.signals"}') == 1:
                return name
        raise AssertionError("no worker owns the global partition")

    def wait_assigned(self, n_workers: int, timeout_s: float = 90.0) -> None:
        """Until the group has settled: every market partition and the global one assigned."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            market = [self.gauge(w, 'liqmon_assigned_partitions{topic="market.batches"}') for w in self.workers]
            glob = sum(self.gauge(w, 'liqmon_assigned_partitions{topic="risk.signals"}') for w in self.workers)
            if len(market) == n_workers and sum(market) == 8 and all(market) and glob == 1:
                return
            time.sleep(0.5)
        raise AssertionError(f"the group did not settle on {n_workers} workers (logs in {self.tmp})")

    def replace(self, name: str) -> float:
        """Start a replacement worker; seconds until the group has settled with it.

        Issue #7's liveness bound: a replacement gets its partitions within 2x the rebalance
        timeout of its start (process start-up included).
        """
        started = time.monotonic()
        self.start(name)
        self.wait_assigned(len(self.workers), timeout_s=4 * REBALANCE_TIMEOUT_S)
        return time.monotonic() - started

    def stop(self) -> None:
        for proc, _ in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.workers.clear()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with embedded_broker(log_path=tmp_path / "tansu.log") as broker:
        c = Cluster(broker, tmp_path, f"liqmon-faults-{request.node.name[-20:]}")
        try:
            yield c
        finally:
            c.stop()


#: Account shards of the sharded runs: more shards than two workers, as many as three.
SHARDS = 3


@pytest.fixture
def sharded(cluster: Cluster) -> Cluster:
    """The cluster with its unified accounts over :data:`SHARDS` account shards."""
    cluster.account_shards = SHARDS
    return cluster


async def _wait_loaded(bootstrap: str, timeout_s: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.ACKS, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                if any(orjson.loads(r.value).get("stage") == "loaded" for r in records):
                    return
        raise AssertionError(f"positions and accounts were never acknowledged: {await _load_trail(bootstrap)}")
    finally:
        await consumer.stop()


async def _load_trail(bootstrap: str) -> str:
    """Where the load stopped: the replay's sync markers on the input topics, and those the
    forwarders put on risk.signals (all there: the global stage did not ack; some missing:
    a forwarder did not forward them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (topics.POSITIONS, topics.ACCOUNTS, topics.RISK_SIGNALS)
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        markers: dict[str, list[str]] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    obj = orjson.loads(r.value)
                    raw = obj.get("raw", obj) if isinstance(obj, dict) else {}
                    if isinstance(raw, dict) and raw.get("ctl") == "sync":
                        where = f"{obj.get('input', '')}:{obj['src'][0]}" if "src" in obj else f"{tp.partition}"
                        markers.setdefault(tp.topic, []).append(where)
        return f"records {dict((f'{tp.topic}:{tp.partition}', n) for tp, n in ends.items() if n)}, markers {markers}"
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        return f"(no trail: {exc!r})"
    finally:
        await consumer.stop()


@contextlib.contextmanager
def replaying(cluster: Cluster, scenario: Scenario, out: Path, speed: str = str(SPEED),
              ) -> Iterator[subprocess.Popen[bytes]]:
    """A paced replay (``speed``) against the running workers; yields once market data flows."""
    log = (cluster.tmp / "replay.log").open("ab")
    proc = subprocess.Popen(
        liqmon_cmd("replay", *scenario.replay_args(), "--no-worker", "--quiet", "--speed", speed,
                   "--out", str(out)),
        env=cluster.env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        asyncio.run(_wait_loaded(cluster.broker.bootstrap, 120))
        yield proc
    finally:
        if proc.poll() is None:
            proc.wait(timeout=240)


#: The workers' metrics a failed replay's message quotes: who owns what, where the shards
#: and the stages stand.
_DIAGNOSIS = ("liqmon_assigned_partitions", "liqmon_shard_behind_records", "liqmon_shard_wait_seconds_total",
              "liqmon_recoveries_total", "liqmon_rewinds_total", "liqmon_checkpoints_total", "liqmon_consumer_lag")


def workers_state(cluster: Cluster) -> str:
    """Each live worker's metrics of :data:`_DIAGNOSIS` (non-zero samples), for a failure's message."""
    out = []
    for name, (_, port) in cluster.workers.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError as exc:
            out.append(f"{name}: no metrics ({exc})")
            continue
        samples = [line for line in text.splitlines() if line.startswith(_DIAGNOSIS)
                   and not line.endswith((" 0.0", " 0"))]
        out.append(f"{name}: " + "; ".join(samples))
    return "\n".join(out)


def assert_same_alerts(proc: subprocess.Popen[bytes], out: Path, scenario: Scenario, cluster: Cluster) -> None:
    replay_log = (cluster.tmp / "replay.log").read_text()[-2000:]
    assert proc.returncode == 0, f"{replay_log}\nworkers (logs in {cluster.tmp}):\n{workers_state(cluster)}"
    got = (out / "alerts.jsonl").read_bytes()
    want = scenario.inline_alerts
    missing = set(want.splitlines()) - set(got.splitlines())
    extra = set(got.splitlines()) - set(want.splitlines())
    assert got == want, f"{len(missing)} alerts missing, {len(extra)} invented (logs in {cluster.tmp})"


def start_group(cluster: Cluster, names: tuple[str, ...]) -> None:
    for name in names:
        cluster.start(name)
    cluster.wait_assigned(len(names))


@pytest.mark.parametrize("victim", ["global-owner", "market-only"])
def test_a_worker_killed_in_the_crash_minutes_and_replaced(
    cluster: Cluster, scenario: Scenario, tmp_path: Path, victim: str
) -> None:
    start_group(cluster, ("w1", "w2"))
    owner = cluster.owner_of_global()
    name = owner if victim == "global-owner" else next(w for w in cluster.workers if w != owner)
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S)
        cluster.kill(name)
        time.sleep(3)
        settled_s = cluster.replace("w3")
        assert settled_s <= 2 * REBALANCE_TIMEOUT_S, f"the replacement took {settled_s:.1f} s to get its partitions"
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def test_a_worker_killed_right_after_a_rebalance(cluster: Cluster, scenario: Scenario, tmp_path: Path) -> None:
    start_group(cluster, ("w1", "w2"))
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S - 4)
        cluster.start("w3")
        cluster.wait_assigned(3)  # the rebalance that took w3 in is done ...
        cluster.kill(cluster.owner_of_global())  # ... and the owner of the global stage dies
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def test_the_global_owner_killed_during_the_end_markers(
    cluster: Cluster, scenario: Scenario, tmp_path: Path
) -> None:
    start_group(cluster, ("w1", "w2"))
    owner = cluster.owner_of_global()
    survivor = next(w for w in cluster.workers if w != owner)
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        # the first end marker acknowledged by a market partition: the ends are under way
        deadline = time.monotonic() + 120
        while cluster.gauge(survivor, "liqmon_checkpoints_total") == 0 or not _end_acked(cluster):
            assert time.monotonic() < deadline, "no end marker was acknowledged"
            time.sleep(0.05)
        cluster.kill(owner)
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def _end_acked(cluster: Cluster) -> bool:
    async def look() -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topics.ACKS, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            batch = await consumer.getmany(timeout_ms=100)
            return any("partition" in orjson.loads(r.value) for rs in batch.values() for r in rs)
        finally:
            await consumer.stop()

    return asyncio.run(look())


def test_a_worker_killed_with_no_replacement(cluster: Cluster, scenario: Scenario, tmp_path: Path) -> None:
    start_group(cluster, ("w1", "w2"))
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S)
        cluster.kill(cluster.owner_of_global())
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def test_a_third_worker_joining_mid_run(cluster: Cluster, scenario: Scenario, tmp_path: Path) -> None:
    start_group(cluster, ("w1", "w2"))
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S / 2)
        cluster.start("w3")
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def stop_and_continue_in_the_crash(cluster: Cluster, scenario: Scenario, out: Path, zombie: str) -> None:
    """A replay with ``zombie`` SIGSTOPped in the crash minutes past its session timeout,
    then continued; the alerts must be the inline run's."""
    with replaying(cluster, scenario, out) as proc:
        time.sleep(CRASH_S)
        cluster.signal(zombie, signal.SIGSTOP)
        time.sleep(12)  # twice the embedded session timeout (6 s): the group moves on
        cluster.signal(zombie, signal.SIGCONT)
    assert_same_alerts(proc, out, scenario, cluster)


def test_a_worker_stopped_past_its_session_timeout_then_continued(
    cluster: Cluster, scenario: Scenario, tmp_path: Path
) -> None:
    start_group(cluster, ("w1", "w2"))
    stop_and_continue_in_the_crash(cluster, scenario, tmp_path / "out", cluster.owner_of_global())


def test_sigterm_stops_a_worker_within_10_s_mid_rebalance(
    cluster: Cluster, scenario: Scenario, tmp_path: Path
) -> None:
    start_group(cluster, ("w1", "w2"))
    with replaying(cluster, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S / 2)
        cluster.start("w3")  # a rebalance begins ...
        time.sleep(1.0)
        victim, _ = cluster.workers.pop("w1")
        os.killpg(victim.pid, signal.SIGTERM)  # ... and a worker is told to stop in it
        victim.wait(timeout=10)  # liveness bound of the issue, not a speed measurement
    assert_same_alerts(proc, tmp_path / "out", scenario, cluster)


def one_line_failure(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("liqmon: replay failed")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_a_replay_without_workers_names_what_is_missing(scenario: Scenario, tmp_path: Path) -> None:
    with embedded_broker() as broker:
        env = {**os.environ, "LIQMON_KAFKA_BOOTSTRAP": broker.bootstrap, "LIQMON_BROKER_KIND": "tansu"}
        proc = subprocess.run(
            liqmon_cmd("replay", "--capture", str(scenario.dir / "capture.jsonl.gz"), "--no-worker", "--quiet",
                       "--to", "2025-10-10T20:05:00Z", "--idle-timeout", "5", "--out", str(tmp_path / "out")),
            check=False, env=env, capture_output=True, text=True, timeout=120)
    line = one_line_failure(proc)
    assert "market partitions [0, 1, 2, 3, 4, 5, 6, 7] did not acknowledge" in line
    assert "the global stage did not acknowledge" in line
    assert "live workers in the group: 0" in line and "nothing new for 5 s" in line


def test_losing_the_broker_ends_a_replay_in_one_line(scenario: Scenario, tmp_path: Path) -> None:
    broker = start_broker(log_path=tmp_path / "tansu.log")
    c = Cluster(broker, tmp_path, "liqmon-faults-broker-loss")
    try:
        start_group(c, ("w1",))
        log = (tmp_path / "replay.log").open("a")
        proc = subprocess.Popen(
            liqmon_cmd("replay", *scenario.replay_args(), "--no-worker", "--quiet", "--speed", str(SPEED),
                       "--out", str(tmp_path / "out")),
            env=c.env(), stdout=log, stderr=subprocess.PIPE, text=True)
        asyncio.run(_wait_loaded(broker.bootstrap, 120))
        time.sleep(2)
        os.killpg(broker.process.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)  # the bound: one line within 60 s
        line = one_line_failure(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr))
        assert f"lost the broker at {broker.bootstrap}" in line
    finally:
        c.stop()
        broker.stop()


def _ready(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@pytest.mark.parametrize("account_shards", [0, SHARDS])
def test_a_worker_outlives_its_broker(scenario: Scenario, tmp_path: Path, account_shards: int) -> None:
    """The broker stopped, then started again empty at the same address: the worker lives
    on, starts a new faust worker on re-created topics, and a replay gives the inline alerts
    (with the accounts on shards too: their readers and steps start again with it)."""
    port = free_port()
    broker = start_broker(port, log_path=tmp_path / "tansu.log")
    c = Cluster(broker, tmp_path, "liqmon-faults-outlive", account_shards=account_shards)
    try:
        start_group(c, ("w1",))
        metrics_port = c.workers["w1"][1]
        _wait_for("the worker is ready", lambda: _ready(metrics_port)[0] == 200, 60)
        broker.stop()
        _wait_for("the worker shows the lost broker", lambda: c.gauge("w1", "liqmon_broker_connected") == 0
                  and _ready(metrics_port)[0] == 503, 60)
        assert c.workers["w1"][0].poll() is None, "the worker process must outlive its broker"
        broker = start_broker(port, log_path=tmp_path / "tansu-again.log")  # same address, empty
        c.broker = broker
        _wait_for("the worker is ready again", lambda: _ready(metrics_port)[0] == 200, 120)
        assert c.gauge("w1", "liqmon_broker_connected") == 1
        # back within LIQMON_BROKER_LOST_S but empty: a new faust worker on re-created topics
        assert "came back without the pipeline's topics; restarting" in (tmp_path / "w1.log").read_text()
        out = tmp_path / "out"
        proc = subprocess.run(liqmon_cmd("replay", *scenario.replay_args(), "--no-worker", "--quiet",
                                         "--out", str(out)), check=False, env=c.env(), capture_output=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        assert (out / "alerts.jsonl").read_bytes() == scenario.inline_alerts
    finally:
        c.stop()
        broker.stop()


# -- account shards (LIQMON_ACCOUNT_SHARDS): the same alerts however the shards are spread --

def _shards_by_worker(cluster: Cluster) -> dict[str, int]:
    return {w: int(cluster.gauge(w, 'liqmon_assigned_partitions{topic="risk.shards"}')) for w in cluster.workers}


@pytest.fixture(scope="module")
def sharded_inline_snapshots(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The risk snapshots of the inline run over the same account shards."""
    out = tmp_path_factory.mktemp("sharded-inline")
    subprocess.run(liqmon_cmd("replay", *scenario.replay_args(), "--inline", "--quiet", "--out", str(out)),
                   check=True, timeout=300, env={**os.environ, "LIQMON_ACCOUNT_SHARDS": str(SHARDS)})
    assert (out / "alerts.jsonl").read_bytes() == scenario.inline_alerts, "inline: shards change no alert"
    return (out / "snapshots.jsonl").read_bytes()


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_one_two_or_three_workers_running_the_account_shards(
    sharded: Cluster, scenario: Scenario, sharded_inline_snapshots: bytes, tmp_path: Path, n_workers: int
) -> None:
    """The unified accounts on three shards spread over the workers; the alerts are the
    inline run's (one global stage), byte for byte, and the risk snapshots those of the
    inline run over the same shards. One worker takes the replay at full speed (full packs,
    signal records spanning minutes of event time: the shards' largest steps)."""
    names = tuple(f"w{i}" for i in range(1, n_workers + 1))
    start_group(sharded, names)
    spread = _shards_by_worker(sharded)
    assert sum(spread.values()) == SHARDS, spread
    assert sum(1 for n in spread.values() if n) == min(n_workers, SHARDS), spread
    with replaying(sharded, scenario, tmp_path / "out", "max" if n_workers == 1 else str(SPEED)) as proc:
        pass
    assert_same_alerts(proc, tmp_path / "out", scenario, sharded)
    assert (tmp_path / "out" / "snapshots.jsonl").read_bytes() == sharded_inline_snapshots
    # the shards start on the global stage's pokes: it has waited for them, and waits no more
    assert sum(sharded.gauge(w, "liqmon_shard_wait_seconds_total") for w in names) > 0
    assert sum(sharded.gauge(w, "liqmon_shard_behind_records") for w in names) == 0


@pytest.mark.parametrize("victim", ["global-owner", "shards-only"])
def test_a_worker_running_account_shards_killed_in_the_crash_minutes(
    sharded: Cluster, scenario: Scenario, tmp_path: Path, victim: str
) -> None:
    """Killed: the owner of the aggregation (and maybe of shards), or a worker running only
    shards and market partitions; a replacement joins. No alert lost or invented."""
    start_group(sharded, ("w1", "w2"))
    owner = sharded.owner_of_global()
    name = owner if victim == "global-owner" else next(w for w in sharded.workers if w != owner)
    assert victim == "global-owner" or _shards_by_worker(sharded)[name] > 0, "the victim runs no shard"
    with replaying(sharded, scenario, tmp_path / "out") as proc:
        time.sleep(CRASH_S)
        sharded.kill(name)
        time.sleep(3)
        sharded.replace("w3")
    assert_same_alerts(proc, tmp_path / "out", scenario, sharded)


def test_a_worker_running_account_shards_stopped_past_its_session_timeout_then_continued(
    sharded: Cluster, scenario: Scenario, tmp_path: Path
) -> None:
    """The stopped worker's shards move; when it wakes its shards may write a step or a
    checkpoint more before they are stopped: both are the same as the new owners'."""
    start_group(sharded, ("w1", "w2"))
    owner = sharded.owner_of_global()
    zombie = next(w for w in sharded.workers if w != owner)
    assert _shards_by_worker(sharded)[zombie] > 0, "the stopped worker runs no shard"
    stop_and_continue_in_the_crash(sharded, scenario, tmp_path / "out", zombie)

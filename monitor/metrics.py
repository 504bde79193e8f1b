"""The metric catalogue: every liqmon metric, built on an injected registry.

Label sets are closed (venue, asset, symbol, stage, kind, severity from configured or
fixed lists); never an account or position id. Units are in the names. Latency is in
seconds with millisecond-scale buckets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS_S", "PEG_UNDETERMINED_REASONS", "Metrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Why a venue-local depeg cannot be judged (monitor.models.peg.asset_peg.AssetPeg.undetermined): a closed set.
PEG_UNDETERMINED_REASONS = ("too_few_sources", "stale_witnesses")


class Metrics:
    """All metrics of one process, registered on ``registry`` (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # Peg (RISK_MODEL §5)
        self.peg_deviation_bps = Gauge(
            "liqmon_peg_deviation_bps", "Peg deviation of the venue mid in USD, bps",
            ["asset", "venue"], registry=r)
        self.peg_level = Gauge(
            "liqmon_peg_level", "Peg band level: 0 normal, 1 info, 2 warning, 3 high, 4 critical",
            ["asset", "venue"], registry=r)
        self.peg_venue_local_undetermined = Gauge(
            "liqmon_peg_venue_local_undetermined",
            "1 while a venue at the venue-local level cannot be judged: too few other fresh "
            "sources (witnesses), by reason", ["asset", "venue", "reason"], registry=r)
        #: (asset, venue) → reason currently exported as 1 (only changes touch the gauge).
        self._undetermined: dict[tuple[str, str], str] = {}
        # Pipeline health
        self.events_total = Counter(
            "liqmon_events", "Market events processed, by source venue", ["source"], registry=r)
        self.deadletter_total = Counter(
            "liqmon_deadletter", "Records sent to the dead-letter topic, by reason",
            ["reason"], registry=r)
        self.alerts_total = Counter(
            "liqmon_alerts", "Alerts emitted, by kind and severity", ["kind", "severity"],
            registry=r)
        self.topic_records_total = Counter(
            "liqmon_topic_records", "Kafka records handled, by topic and direction (in/out)",
            ["topic", "direction"], registry=r)
        self.consumer_lag = Gauge(
            "liqmon_consumer_lag", "Records behind the log end, by topic", ["topic"], registry=r)
        self.processing_latency_seconds = Histogram(
            "liqmon_processing_latency_seconds",
            "Receive-to-processed latency of market events, seconds", ["agent"],
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.agent_last_event_timestamp_seconds = Gauge(
            "liqmon_agent_last_event_timestamp_seconds",
            "Wall time of the last record an agent processed, unix seconds", ["agent"],
            registry=r)
        self.worker_up = Gauge("liqmon_worker_up", "1 while the worker runs", registry=r)
        self.broker_connected = Gauge(
            "liqmon_broker_connected", "1 while the worker's Kafka consumer reaches a broker",
            registry=r)
        self.assigned_partitions = Gauge(
            "liqmon_assigned_partitions", "Partitions of a topic assigned to this worker",
            ["topic"], registry=r)
        # Crash consistency (streams/app/checkpoint.py): checkpoints written and recoveries
        self.checkpoints_total = Counter(
            "liqmon_checkpoints", "Stage checkpoints written, by stage (market, global)",
            ["stage"], registry=r)
        self.checkpoint_bytes = Gauge(
            "liqmon_checkpoint_bytes", "Size of the newest checkpoint (compressed), by stage",
            ["stage"], registry=r)
        self.recoveries_total = Counter(
            "liqmon_recoveries",
            "Partition states loaded on assignment, by stage and source (checkpoint, empty)",
            ["stage", "source"], registry=r)
        self.rewinds_total = Counter(
            "liqmon_rewinds", "Seeks back to a checkpoint's offset, by stage", ["stage"], registry=r)
        # Account shards (streams/app/shard_join.py): what the global stage waits for
        self.shard_behind_records = Gauge(
            "liqmon_shard_behind_records",
            "Log records an account shard has yet to report while the global stage waits for it (0: not waited for)",
            ["shard"], registry=r)
        self.shard_wait_seconds_total = Counter(
            "liqmon_shard_wait_seconds", "Time the global stage has spent waiting for the account shards, seconds",
            registry=r)
        # Alert delivery (streams/sinks/retry_queue.py): per sink, closed set (webhook, alertmanager)
        self.alerts_dropped_total = Counter(
            "liqmon_alerts_dropped",
            "Alerts dropped undelivered: retry queue full (overflow) or refused by the receiver (rejected)",
            ["sink", "reason"], registry=r)
        self.alert_queue_depth = Gauge(
            "liqmon_alert_queue_depth", "Alerts waiting in a sink's retry queue (in flight included), by sink",
            ["sink"], registry=r)
        self.unpriced_total = Counter(
            "liqmon_unpriced_events", "Events whose quote currency has no USD price",
            ["source"], registry=r)
        self._feed_metrics(r)
        self._risk_metrics(r)

    def _feed_metrics(self, r: CollectorRegistry) -> None:
        """Live feeds (streams/feeds): staleness, book gaps, resyncs, reconnects, lag, shedding, recording."""
        self.feed_last_event_age_seconds = Gauge(
            "liqmon_feed_last_event_age_seconds",
            "Receive-time age of the newest frame on a subscribed channel, seconds",
            ["venue", "channel"], registry=r)
        self.feed_gaps_total = Counter(
            "liqmon_feed_gaps", "Order-book sequence gaps detected, by venue", ["venue"],
            registry=r)
        self.feed_resyncs_total = Counter(
            "liqmon_feed_resyncs", "Order books re-synchronised from a snapshot, by venue",
            ["venue"], registry=r)
        self.feed_reconnects_total = Counter(
            "liqmon_feed_reconnects", "Websocket reconnections, by venue", ["venue"], registry=r)
        self.feed_lag_seconds = Gauge(
            "liqmon_feed_lag_seconds",
            "How far the feed reader is behind the venue (event-time lag or socket backlog, the larger), "
            "seconds", ["venue"], registry=r)
        self.feed_shed_frames_total = Counter(
            "liqmon_feed_shed_frames",
            "Frames coalesced away while the reader was behind (an older quote or book snapshot "
            "of the same channel superseded by a newer one), by venue and channel",
            ["venue", "channel"], registry=r)
        self.publish_backlog_items = Gauge(
            "liqmon_publish_backlog_items",
            "Batches, alerts and dead letters liqmon live holds for the broker (grows while it is away)",
            registry=r)
        self.publish_dropped_total = Counter(
            "liqmon_publish_dropped",
            "Items liqmon live never handed to the broker (shed from a full backlog, refused, left at the end), "
            "by kind", ["kind"], registry=r)
        self.recording_failed = Gauge(
            "liqmon_recording_failed",
            "1 once liqmon live's --record file could not be written: the recording stopped, the "
            "session goes on", registry=r)

    def _risk_metrics(self, r: CollectorRegistry) -> None:
        """The risk engine's figures: liquidity, cascade, loops, unified accounts, spiral."""
        # Liquidity (RISK_MODEL §4): configured symbols only (closed label set)
        self.book_depth_usd = Gauge(
            "liqmon_book_depth_usd", "Cumulative book depth within band_bps of mid, USD",
            ["venue", "symbol", "side", "band_bps"], registry=r)
        self.book_spread_bps = Gauge(
            "liqmon_book_spread_bps", "Book spread, bps of mid", ["venue", "symbol"], registry=r)
        self.books_withdrawn_ratio = Gauge(
            "liqmon_books_withdrawn_ratio", "Share of monitored books in liquidity withdrawal",
            registry=r)
        # Cascade (RISK_MODEL §6)
        self.cascade_stage = Gauge(
            "liqmon_cascade_stage", "Highest active cascade stage (0 = none)", registry=r)
        self.cascade_stage_active = Gauge(
            "liqmon_cascade_stage_active", "1 while a cascade stage is active", ["stage"],
            registry=r)
        # Loops (RISK_MODEL §2)
        self.loops_liquidatable_usd = Gauge(
            "liqmon_loops_liquidatable_usd", "Collateral of loop positions liquidatable now, USD",
            ["protocol", "asset"], registry=r)
        self.loops_ladder_usd = Gauge(
            "liqmon_loops_ladder_usd",
            "Collateral that becomes liquidatable within a further drop_pct move, USD",
            ["protocol", "asset", "drop_pct"], registry=r)
        self.loops_collateral_illusion_ratio = Gauge(
            "liqmon_loops_collateral_illusion_ratio", "Gross collateral / real equity of loops",
            ["protocol", "asset"], registry=r)
        self.loops_positions = Gauge(
            "liqmon_loops_positions", "Loop positions by health-factor band",
            ["protocol", "hf_band"], registry=r)
        # Unified accounts (RISK_MODEL §3)
        self.unified_accounts = Gauge(
            "liqmon_unified_accounts", "Unified accounts by status", ["venue", "status"],
            registry=r)
        self.unified_effective_leverage = Gauge(
            "liqmon_unified_effective_leverage", "Effective leverage quantiles of unified accounts",
            ["venue", "quantile"], registry=r)
        self.unified_shortfall_usd = Gauge(
            "liqmon_unified_shortfall_usd", "Largest MM shortfalls of unified accounts (top 5), USD",
            ["venue", "rank"], registry=r)
        # Spiral (RISK_MODEL §7)
        self.spiral_liquidated_usd = Gauge(
            "liqmon_spiral_liquidated_usd", "Spiral estimate: notional liquidated after a standard shock, USD",
            ["shock"], registry=r)

    def set_peg_undetermined(self, asset: str, reasons: dict[str, str]) -> None:
        """Export ``AssetPeg.undetermined()`` of one asset: 1 on the reason, 0 once it ends."""
        current = self._undetermined
        for key, reason in list(current.items()):
            if key[0] == asset and reasons.get(key[1]) != reason:
                self.peg_venue_local_undetermined.labels(asset, key[1], reason).set(0)
                del current[key]
        for venue, reason in reasons.items():
            if current.get((asset, venue)) != reason and reason in PEG_UNDETERMINED_REASONS:
                self.peg_venue_local_undetermined.labels(asset, venue, reason).set(1)
                current[(asset, venue)] = reason

    def clear_global_stage(self) -> None:
        """Stop exporting the global risk stage's figures (this worker no longer owns it).

        Prometheus rules sum these over workers: labelled children are removed, and the two
        unlabelled gauges go to 0, neutral for the rules' ``max`` and ``sum``.
        """
        for gauge in (
            self.loops_liquidatable_usd, self.loops_ladder_usd, self.loops_collateral_illusion_ratio,
            self.loops_positions, self.unified_accounts, self.unified_effective_leverage,
            self.unified_shortfall_usd, self.cascade_stage_active, self.spiral_liquidated_usd,
        ):
            gauge.clear()
        self.cascade_stage.set(0)
        self.books_withdrawn_ratio.set(0)

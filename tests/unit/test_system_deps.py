"""scripts/system-deps.sh with stand-in commands: what it installs, that no service starts
while it installs, and that it stops only the services of packages it installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-deps.sh"
TOOLS = ("bash", "tee", "chmod", "rm", "cat")
_LOG = 'echo "${0##*/} $*" >> "$CALLS"\n'
# apt-get asks the policy, as invoke-rc.d does before starting a service
_APT = _LOG + '[ "$1" = install ] && { "$POLICY_RC_D" prometheus start; echo "policy-rc.d $?" >> "$CALLS"; }\nexit 0\n'


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _run(tmp_path: Path, present: tuple[str, ...], policy_exists: bool = False) -> tuple[list[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    _stub(bin_dir, "id", "echo 0\n")
    _stub(bin_dir, "apt-get", _APT)
    for name in ("systemctl", "pkill", *present):
        _stub(bin_dir, name, _LOG)
    policy = tmp_path / "policy-rc.d"
    if policy_exists:
        policy.write_text("#!/bin/sh\nexit 0\n")
        policy.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    env = {"PATH": str(bin_dir), "CALLS": str(calls), "POLICY_RC_D": str(policy), "HOME": str(tmp_path)}
    subprocess.run([str(bin_dir / "bash"), str(SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
    return calls.read_text().splitlines(), policy


def _stopped(calls: list[str]) -> list[str]:
    return [c.split()[-1] for c in calls if c.startswith("systemctl stop")]


def test_installs_what_is_missing_with_service_starts_refused(tmp_path: Path) -> None:
    calls, policy = _run(tmp_path, present=("openssl",))
    install = next(c for c in calls if c.startswith("apt-get install"))
    assert install.split()[-4:] == ["prometheus", "prometheus-alertmanager", "chromium", "stunnel4"]
    assert "policy-rc.d 101" in calls  # refused while installing
    assert not policy.exists()  # and gone afterwards
    assert _stopped(calls) == ["prometheus", "prometheus-node-exporter", "prometheus-alertmanager"]


def test_a_service_already_on_the_machine_is_left_alone(tmp_path: Path) -> None:
    calls, _ = _run(tmp_path, present=("amtool", "openssl", "prometheus-node-exporter"))
    assert _stopped(calls) == ["prometheus"]
    assert not any("alertmanager" in c or "node-exporter" in c for c in calls if not c.startswith("apt-get"))


def test_the_machines_own_policy_decides_and_stays(tmp_path: Path) -> None:
    calls, policy = _run(tmp_path, present=("promtool", "amtool", "openssl"), policy_exists=True)
    assert "policy-rc.d 0" in calls and policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert _stopped(calls) == []


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    calls, _ = _run(tmp_path, present=("promtool", "amtool", "chromium", "stunnel4", "openssl"))
    assert calls == []


@pytest.mark.skipif(os.name != "posix", reason="bash script")
def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)

#!/usr/bin/env bash
# Debian packages the test suite uses: Prometheus server + promtool, Alertmanager + amtool,
# Chromium, stunnel4 (TLS in front of the embedded broker) and openssl (its test certificates).
# Installs only what is missing; needs root (or sudo) and apt-get.
#
# The Debian packages start their services on install; the tests run their own instances.
# While installing, a policy-rc.d that refuses every start keeps them from starting (unless
# the machine already has one, which then decides); afterwards only services of packages
# this run installed are stopped, so a Prometheus the user already ran is left alone.
# POLICY_RC_D overrides the policy file's path (tests).
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v stunnel4 >/dev/null 2>&1 || need+=(stunnel4)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: apt-get not found; install ${need[*]} by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
# Services that may come with the packages installed now (the node exporter is a
# recommendation of prometheus: only when it was not on the machine before).
started=()
for pkg in "${need[@]}"; do
  case "$pkg" in
    prometheus)
      started+=(prometheus)
      command -v prometheus-node-exporter >/dev/null 2>&1 || started+=(prometheus-node-exporter) ;;
    prometheus-alertmanager) started+=(prometheus-alertmanager) ;;
  esac
done
policy="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# system-deps: no service starts while installing\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Where the machine's own policy let them start: stop what this run installed, nothing else.
for svc in ${started[@]+"${started[@]}"}; do
  $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true
  $SUDO pkill -f "/usr/bin/$svc" >/dev/null 2>&1 || true
done

#!/usr/bin/env bash
# Debian packages the test suite uses: Prometheus server + promtool, Alertmanager + amtool,
# Chromium, stunnel4 (TLS in front of the embedded broker) and openssl (its test certificates).
# Installs only what is missing; needs root (or sudo) and apt-get.
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
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start services on install; the tests run their own instances.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true
  $SUDO pkill -f "/usr/bin/$svc" >/dev/null 2>&1 || true
done

#!/usr/bin/env bash
# Put Prometheus' `promtool` under .engines/prometheus/ for the alert-rule tests: it checks
# deploy/prometheus/alerts.yml and runs its unit tests (alerts_test.yml). Taken from
# Debian's `prometheus` package, unpacked rather than installed, so no service is set up.
# Idempotent: nothing is done when the binary is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=.engines/prometheus
PROMTOOL=$TARGET/usr/bin/promtool

if [ -x "$PROMTOOL" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -qq prometheus 2>/dev/null); then
  # A fresh machine may have no package lists yet.
  apt-get update -qq
  (cd "$work" && apt-get download -qq prometheus)
fi
mkdir -p "$TARGET"
dpkg-deb -x "$work"/prometheus_*.deb "$TARGET"
"$PROMTOOL" --version | head -1

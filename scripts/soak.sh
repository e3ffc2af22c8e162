#!/usr/bin/env bash
# A longer soak: mixed traffic through every feature while ports come and go
# and the configuration changes, for MINUTES (default 10), as root. Prints a
# soak-report line (pings lost, drops by port and reason, RSS after the
# warm-up) and fails on a lost ping, an unexplained drop or RSS growth.
# The test suite runs the same test for 30 s (control/tests/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
if ! [[ $minutes =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "usage: scripts/soak.sh [MINUTES]" >&2
  exit 2
fi
SOAK_SECS=$((minutes * 60)) cargo test -q -p vswitch-control --test soak -- --nocapture 2>&1 |
  grep -E 'soak-report|test result|panicked|FAILED|lost|unexplained|grew' || true
test "${PIPESTATUS[0]}" -eq 0

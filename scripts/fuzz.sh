#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for SECONDS each (default 60)
# over the committed seeds (fuzz/seeds/TARGET) and the local corpus
# (fuzz/corpus/TARGET, not committed; new inputs land there).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# A crash fails the run: libFuzzer writes the input to fuzz/artifacts/TARGET/
# and this script says how to reproduce it; fix the bug and keep the input
# as a regression test. Needs a nightly toolchain (cargo-fuzz's sanitizer
# flags); without one it says so and skips (exit 0). Installs cargo-fuzz
# from crates.io if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain on this machine (cargo-fuzz needs one): skipped"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building fuzz targets"
cargo +nightly fuzz build -O 2>&1 | grep -E '^(error|warning: unused)' || true

# Per-target libFuzzer options: the pipeline reads steps, a few KiB make sense.
opts_for() {
  case $1 in
    pipeline) echo "-max_len=4096 -len_control=0" ;;
    *) echo "-max_len=4096" ;;
  esac
}

fail=0
printf '%-16s %12s %10s %8s %s\n' TARGET EXECS EXEC/S COV RESULT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  log=$(mktemp)
  # shellcheck disable=SC2046
  if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      $(opts_for "$t") >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    fail=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  printf '%-16s %12s %10s %8s %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" "$result"
  if [ "$result" = CRASH ]; then
    if grep -qE 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log"; then
      grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -20 | sed 's/^/    /'
      echo "    reproduce: cd fuzz && cargo +nightly fuzz run $t artifacts/$t/<crash-file>"
    else
      # Not a fuzzing crash (a build error, a missing tool): show why.
      tail -20 "$log" | sed 's/^/    /'
    fi
  fi
  rm -f "$log"
done
exit $fail

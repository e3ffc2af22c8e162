#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for SECONDS each (default 60)
# over the committed seeds (fuzz/seeds/TARGET) and the local corpus
# (fuzz/corpus/TARGET, not committed; new inputs land there).
#
#   scripts/fuzz.sh [--cpu] [SECONDS] [TARGET...]
#
# With --cpu, SECONDS is the fuzzer's own CPU time (user + system) rather
# than wall time: a run may share the machine, or be paused with SIGSTOP and
# resumed with SIGCONT (say while a benchmark needs a quiet machine), and
# still fuzz that long. It is then stopped with SIGINT (libFuzzer prints its
# final statistics) once its CPU time reaches SECONDS. libFuzzer times an
# input by the wall clock, so a pause would count as a hang: in this mode an
# input hangs after 1200 s instead of 10 (pauses must be shorter than that).
#
# A crash fails the run: libFuzzer writes the input to fuzz/artifacts/TARGET/
# and this script says how to reproduce it; fix the bug and keep the input
# as a regression test. FUZZ_LOG_DIR=DIR keeps each target's libFuzzer log
# there (DIR/TARGET.log). Needs a nightly toolchain (cargo-fuzz's sanitizer
# flags); without one it says so and skips (exit 0). Installs cargo-fuzz
# from crates.io if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

cpu=0
if [ "${1:-}" = --cpu ]; then
  cpu=1
  shift
fi
secs=${1:-60}
shift || true
if ! [[ $secs =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [--cpu] [SECONDS] [TARGET...]" >&2
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

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) / hz) }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Runs the built fuzzer directly (what `cargo fuzz run` execs) until its CPU
# time reaches $secs, then interrupts it. Exit status: the fuzzer's, but an
# interrupt we sent is success.
run_cpu_budget() {
  local t=$1 log=$2
  local bin
  bin=$(ls -d target/*/release/"$t" | head -1)
  # shellcheck disable=SC2046
  "$bin" "corpus/$t" "seeds/$t" -artifact_prefix="artifacts/$t/" -max_total_time=1000000000 \
    -rss_limit_mb=2048 -timeout=1200 -print_final_stats=1 $(opts_for "$t") >"$log" 2>&1 &
  local pid=$! interrupted=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(cpu_secs "$pid")" -ge "$secs" ]; then
      interrupted=1
      kill -INT "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true
      break
    fi
    sleep 5
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ $interrupted = 1 ] && grep -q 'run interrupted' "$log"; then
    rc=0
  fi
  return $rc
}

fail=0
printf '%-16s %12s %10s %8s %8s %s\n' TARGET EXECS EXEC/S COV FEATURES RESULT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  log=$(mktemp)
  if [ $cpu = 1 ]; then
    if run_cpu_budget "$t" "$log"; then
      result=ok
    else
      result=CRASH
      fail=1
    fi
  # shellcheck disable=SC2046
  elif cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
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
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  printf '%-16s %12s %10s %8s %8s %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "$result"
  if [ -n "${FUZZ_LOG_DIR:-}" ]; then
    cp "$log" "$FUZZ_LOG_DIR/$t.log"
  fi
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

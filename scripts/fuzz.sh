#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints one line per target:
# executions, corpus size and crashes. `scripts/fuzz.sh 60` is the long run the README
# reports; the test command runs `scripts/fuzz.sh 5 core` as a smoke pass.
#
# Targets live in fuzz/ (the core: query, xml, decrypt, settings_env, webhook_answer,
# openai_answer, split) and native/fuzz/ (settings_yaml; needs the whole native server, so it
# builds for minutes and runs only when asked for: `scripts/fuzz.sh 60 all`).
# New corpus entries go to target/fuzz-corpus/ (not kept); seeds and regressions are read from
# <fuzz dir>/regressions/<target>/. A crash fails the script and is copied there, so it
# becomes a regression test (core/tests/fuzz_regressions.rs, native/tests/fuzz_regressions.rs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
which="${2:-all}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

dirs=("$root/fuzz")
if [[ "$which" == all ]]; then
  dirs+=("$root/native/fuzz")
fi

status=0
report=()
for dir in "${dirs[@]}"; do
  cd "$dir"
  cargo +nightly fuzz build -O >/dev/null 2>"$root/target/fuzz-build.log" || {
    cat "$root/target/fuzz-build.log"
    exit 1
  }
  for target in $(cargo +nightly fuzz list); do
    corpus="$root/target/fuzz-corpus/$target"
    seeds="$dir/regressions/$target"
    mkdir -p "$corpus" "$seeds"
    log="$root/target/fuzz-$target.log"
    set +e
    cargo +nightly fuzz run -O "$target" "$corpus" "$seeds" -- \
      -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    crashes=0
    for crash in "$dir"/artifacts/"$target"/crash-* "$dir"/artifacts/"$target"/oom-* "$dir"/artifacts/"$target"/timeout-*; do
      [[ -e "$crash" ]] || continue
      crashes=$((crashes + 1))
      cp "$crash" "$seeds/"
      rm -f "$crash"
    done
    if [[ $code -ne 0 || $crashes -gt 0 ]]; then
      status=1
      tail -40 "$log"
    fi
    report+=("$(printf '%-16s %12s runs  %6s corpus  %s crashes' "$target" "${runs:-?}" "$(ls "$corpus" | wc -l)" "$crashes")")
  done
done
printf 'fuzzing, %ss per target:\n' "$secs"
printf '  %s\n' "${report[@]}"
exit $status

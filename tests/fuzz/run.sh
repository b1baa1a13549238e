#!/usr/bin/env bash
# Run every fuzz target for a bounded time (FUZZ_SECONDS, default 45) from the
# committed seed corpus, after replaying the committed regression inputs
# (regressions/<target>/: every crash found becomes one). Needs cargo-fuzz;
# works on the stable toolchain with RUSTC_BOOTSTRAP=1 (ASan included).
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-45}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/ferry/fuzz-target}
export RUSTC_BOOTSTRAP=1
targets=(bundle_header bundle_stream feed_index uboot_env grub_env config kubeconfig)
cargo fuzz build --fuzz-dir .
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  t0=$SECONDS
  # new inputs go to the scratch dir; seeds and regressions are read only
  if ! cargo fuzz run --fuzz-dir . "$t" "$work/$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=1024 -print_final_stats=1 >"$work/$t.log" 2>&1; then
    tail -40 "$work/$t.log"
    echo "fuzz: $t FAILED; the crashing input is in artifacts/$t/ (add it under regressions/$t/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t ok, $runs runs in $((SECONDS - t0)) s"
done

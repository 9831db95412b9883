#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) and minimises its corpus afterwards.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them
# (its sanitizer runtimes ship with rust-std). CI does not fuzz: tests/fuzz_corpus.rs replays
# the committed corpus on every run.
#   cargo install cargo-fuzz --locked   # once
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"; shift || true
targets=("${@:-header metadata binary hook rle pixels}")
export RUSTC_BOOTSTRAP=1
for t in ${targets[@]}; do
  max_len=65536; [ "$t" = hook ] && max_len=4096; [ "$t" = binary ] && max_len=8192; [ "$t" = rle ] && max_len=8192; [ "$t" = pixels ] && max_len=16384
  cargo fuzz run -O "$t" -- -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    > "artifacts-$t.log" 2>&1 || { echo "$t: crash, see fuzz/artifacts/$t and artifacts-$t.log"; exit 1; }
  tail -1 "artifacts-$t.log"
  cargo fuzz cmin -O "$t" -- -max_len="$max_len" > /dev/null 2>&1
done

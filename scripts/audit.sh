#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database with cargo-audit, offline.
# This workplace reaches the package registries only, so the database cannot be fetched here:
# when no local copy exists (~/.cargo/advisory-db, or SEGBRIDGE_ADVISORY_DB), the check is
# skipped with this message instead of failing. Where a copy exists (fetched by `cargo audit`
# on a connected machine), it runs without touching the network.
set -uo pipefail
cd "$(dirname "$0")/.."
db="${SEGBRIDGE_ADVISORY_DB:-$HOME/.cargo/advisory-db}"
if [ ! -d "$db" ]; then
  echo "scripts/audit.sh: SKIPPED: no RustSec advisory database at $db (it cannot be fetched from this network); run 'cargo audit' on a connected machine" >&2
  exit 0
fi
if ! command -v cargo-audit >/dev/null 2>&1; then
  cargo install --locked cargo-audit >/dev/null 2>&1 || { echo "scripts/audit.sh: cannot install cargo-audit" >&2; exit 1; }
fi
exec cargo audit --no-fetch --db "$db" --deny warnings

#!/usr/bin/env bash
# README command 2: runs every test.
# Installs what is missing (a real Orthanc with the DICOMweb plugin and PostgreSQL, from Debian's packages;
# a Python venv; node with the corpus's npm packages), then runs `cargo test`. Tests that need Orthanc start their own instance on free loopback
# ports with a temporary storage dir and stop it when they end; they FAIL, never skip, when
# Orthanc is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "scripts/test.sh: need root (or sudo) to install: $*" >&2; return 1; fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # a stale package list is the usual reason an install fails on a fresh machine
  as_root apt-get install -y --no-install-recommends "$@" || {
    as_root apt-get update && as_root apt-get install -y --no-install-recommends "$@"; }
}

missing=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  apt_install "${missing[@]}"
fi
# The Debian package may try to start its own service; ours are started by the tests.

# Python with pydicom + highdicom: a third-party SEG writer and an independent reader for the
# quality-gate tests. A venv of the project's own, under target/, from PyPI.
venv="target/test-venv"
want="pydicom==3.0.2 highdicom==0.28.2 numpy==2.4.6 pillow==13.0.0 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-rle==2.2.0"
if ! "$venv/bin/python" -c "import highdicom, pydicom, numpy, pylibjpeg, openjpeg, rle" >/dev/null 2>&1; then
  if ! python3 -m venv --help >/dev/null 2>&1; then apt_install python3-venv; fi
  echo "scripts/test.sh: creating $venv ($want)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
fi
export SEGBRIDGE_TEST_PYTHON="$PWD/$venv/bin/python"

# Node with OHIF's SEG writer (@cornerstonejs/adapters + dcmjs at the versions OHIF 3.13 pins):
# the third-party corpus test (tests/corpus.rs) writes SEGs with it. Exact versions come from
# tests/node/package-lock.json; `npm ci` runs again whenever the lock file changes.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/test.sh: installing nodejs npm" >&2
  apt_install nodejs npm
fi
node_dir="tests/node"
lock_sum="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$node_dir/node_modules/.segbridge-lock" 2>/dev/null)" != "$lock_sum" ]; then
  echo "scripts/test.sh: npm ci in $node_dir" >&2
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$node_dir/node_modules/.segbridge-lock"
fi
export SEGBRIDGE_TEST_NODE_DIR="$PWD/$node_dir"

if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: cargo not found: install Rust stable (rustup) first" >&2
  exit 1
fi

echo "scripts/test.sh: $(Orthanc --version 2>/dev/null | head -1 || echo Orthanc), $(cargo --version)" >&2
command -v openssl >/dev/null 2>&1 || apt_install openssl   # the TLS test's server
[ -x /usr/bin/time ] || apt_install time                     # the benchmarks' peak-RSS meter
command -v chromium >/dev/null 2>&1 || apt_install chromium  # renders the status page (tests/status_page.rs)

# Known vulnerabilities in dependencies (offline; skipped with a message when no database)
bash scripts/audit.sh

# PostgreSQL for the shared-ledger tests and the bench's figure 7: a throwaway server on
# loopback, stopped at the end
# shellcheck source=scripts/pg-test-server.sh
source scripts/pg-test-server.sh
pg_test_server_start

# The benchmark harness on a tiny N: a smoke test that it still runs, not a measurement; every
# figure, the ledger in PostgreSQL (7) included. (First, so that cargo test's own summary
# closes the output.)
if [ "${SEGBRIDGE_SKIP_BENCH_SMOKE:-}" != 1 ]; then
  cargo bench --locked --bench backfill -- --quick --figures all > target/bench-smoke.log 2>&1 || {
    tail -40 target/bench-smoke.log >&2
    echo "scripts/test.sh: the benchmark smoke test failed (target/bench-smoke.log)" >&2
    exit 1
  }
  echo "scripts/test.sh: benchmark smoke test ok (target/bench-smoke.log)" >&2
fi
cargo test --locked "$@"

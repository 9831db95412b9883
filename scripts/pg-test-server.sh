# Sourced by scripts/test.sh (or by hand: `source scripts/pg-test-server.sh && pg_test_server_start`).
# Starts a throwaway PostgreSQL for the tests: Debian's server (installed when missing), a new
# cluster in a temporary directory, listening on a free loopback port only, with a random
# password (scram-sha-256). Exports SEGBRIDGE_TEST_PG (its admin DSN) and stops the server and
# removes its directory when the calling shell exits.

pg_test_server_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

pg_test_server_start() {
  local bin dir pw port
  bin="$(pg_test_server_bin)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "scripts/test.sh: installing postgresql" >&2
    apt_install postgresql
    bin="$(pg_test_server_bin)"
  fi
  dir="$(mktemp -d /tmp/segbridge-pg.XXXXXX)"
  pw="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # initdb refuses to run as root: the cluster belongs to the postgres user then
  local run=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  (umask 077 && printf '%s\n' "$pw" > "$dir/pw")
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pw"
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U segbridge --pwfile="$dir/pw" \
    --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync > "$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2; echo "scripts/test.sh: initdb failed" >&2; return 1; }
  rm -f "$dir/pw"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" \
    start > /dev/null || { cat "$dir/server.log" >&2; echo "scripts/test.sh: PostgreSQL did not start" >&2; return 1; }
  PG_TEST_DIR="$dir"
  PG_TEST_RUN="${run[*]}"
  PG_TEST_BIN="$bin"
  trap pg_test_server_stop EXIT
  export SEGBRIDGE_TEST_PG="postgres://segbridge:$pw@127.0.0.1:$port/postgres"
  # the tests that start their own cluster (a restart under running processes) use these
  export SEGBRIDGE_TEST_PG_BIN="$bin"
  echo "scripts/test.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (temporary, $dir)" >&2
}

pg_test_server_stop() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  # shellcheck disable=SC2086
  $PG_TEST_RUN "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate -w stop > /dev/null 2>&1 || true
  rm -rf "$PG_TEST_DIR"
  PG_TEST_DIR=""
}

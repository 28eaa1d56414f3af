# shellcheck shell=bash
# Shared by ops/bench/generate and ops/bench/run: the benchmark's own PostgreSQL cluster
# (durable settings, unlike the test cluster) and the real psql and pgbench of its server.
# Sourced, not run.

# shellcheck source=ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ensure_prerequisites
BENCH_DIR=${HMS2FA_BENCH_DIR:-/tmp/hms2fa-bench}
BENCH_DATA="$BENCH_DIR/data"
BENCH_SOCK="$BENCH_DIR/run"
# shellcheck disable=SC2034 # used by the scripts that source this file
TEMPLATE_DB=hms2fa_bench_template
# The server's own client binaries: Debian's /usr/bin/psql is a Perl wrapper that adds tens of
# milliseconds to every start.
PSQL_BIN="$PG_BIN/psql"
# shellcheck disable=SC2034
PGBENCH_BIN="$PG_BIN/pgbench"
export PGHOST="$BENCH_SOCK" PGPORT=5432 PGUSER=postgres
unset PGDATABASE PGSERVICE PGPASSWORD HMS2FA_DATABASE_URL

psql_q() { "$PSQL_BIN" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_val() { "$PSQL_BIN" -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }

start_bench_cluster() {
  mkdir -p "$BENCH_DIR"
  chmod 755 "$BENCH_DIR"
  start_cluster "$BENCH_DATA" "$BENCH_SOCK"
  # Every statement's duration in the server log, for the longest transaction of each method.
  if ! grep -q '^# hms2fa bench' "$BENCH_DATA/postgresql.conf"; then
    {
      echo "# hms2fa bench"
      echo "log_line_prefix = '%m [%p] %a %u '"
      echo "max_wal_size = 4GB"
      echo "maintenance_work_mem = 512MB"
    } | as_pg tee -a "$BENCH_DATA/postgresql.conf" >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$BENCH_DATA" -w restart -l "$BENCH_DATA/server.log" >/dev/null
  fi
}

# The built hms2fa-admin: release, the Swift runtime linked in as the README's install does
# (it starts faster), unless HMS2FA_ADMIN_BIN names another.
admin_bin() {
  if [ -n "${HMS2FA_ADMIN_BIN:-}" ]; then
    printf '%s\n' "$HMS2FA_ADMIN_BIN"
    return
  fi
  # As the README installs it.
  say "building hms2fa-admin (release)"
  swift build -c release 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' >&2 || true
  local bin
  bin="$(swift build -c release --show-bin-path)/hms2fa-admin"
  [ -x "$bin" ] || die "the release build failed"
  printf '%s\n' "$bin"
}

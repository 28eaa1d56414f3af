#!/usr/bin/env bash
# Times `hms2fa-admin accounts import` of a generated identity feed against `psql \copy` of the
# same file into a plain table (the same five columns, no keys, no indexes), side by side on
# one private PostgreSQL cluster, and prints each run and the ratios of the medians.
#
# Usage: ops/bench/roster-import.sh [ROWS] [RUNS]     (default 1000000 rows, 5 runs)
#
# Eight timings per run, in this order. Every import but the last keeps its copy of the roster
# in a directory of the scratch folder (--roster-copy), as a nightly job does, and each compares
# its feed with the copy the one before it kept:
#   copy     psql \copy FILE into a new plain table (CSV, HEADER)
#   initial  accounts import into an empty registry (every row an INSERT); no copy to compare
#            with (the registry was just emptied), and it writes the first
#   nightly  accounts import --disable-missing of a second export of the same people, into the
#            registry the initial import filled (1% of rows changed: the nightly case)
#   same     the second export again: nothing changes (what reading and comparing costs alone)
#   next     the first export again, after a VACUUM: the 1% changed back, on a registry whose
#            pages now have room here and there (a later night, rather than the first)
#   shuffled the second export with its rows shuffled, after a VACUUM: the first night of an
#            export in another order than the last one's, which the copy (and the registry's
#            table) holds the accounts in
#   reshuffled the first export shuffled the same way, after a VACUUM: the next night in that
#            order (the 1% changed back), whose copy is now in the feed's order
#   unkept   the second export again, after a VACUUM, without --roster-copy: 1% changed, compared
#            with the roster read from the registry (a night after the copy was lost, or after
#            someone changed an account)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=ops/lib.sh
. ops/lib.sh

rows=${1:-1000000}
runs=${2:-5}

ensure_prerequisites
say "building the release binary"
swift build -c release >/dev/null
admin="$(swift build -c release --show-bin-path)/hms2fa-admin"
psql_bin="$PG_BIN/psql"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/hms2fa-bench.XXXXXX")
chmod 755 "$scratch"
cleanup() {
  stop_cluster "$scratch/data"
  rm -rf "$scratch"
}
trap cleanup EXIT

# Default (durable) server settings: fsync and synchronous_commit on.
start_cluster "$scratch/data" "$scratch/run"
sock="$scratch/run"
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGPASSWORD HMS2FA_DATABASE_URL
export PGOPTIONS="-c client_min_messages=warning"
sql() { "$psql_bin" -h "$sock" -U postgres -d "$1" -X -q -v ON_ERROR_STOP=1 -c "$2"; }

say "generating two exports of $rows accounts"
# Every 10th name is quoted with a comma in it; 1% disabled, 0.5% high risk. The second export
# changes the name of every 100th person and leaves out none.
gen() {
  awk -v rows="$rows" -v variant="$1" 'BEGIN {
    printf "account_id,display_name,email,status,high_risk\r\n"
    for (i = 1; i <= rows; i++) {
      id = sprintf("u%07d", i)
      name = (i % 10 == 0) ? sprintf("\"Person, %d\"", i) : sprintf("Person %d", i)
      if (variant == 2 && i % 100 == 0) name = sprintf("Renamed Person %d", i)
      printf "%s,%s,%s@hms.harvard.edu,%s,%s\r\n", id, name, id, (i % 100 == 7) ? "disabled" : "active", (i % 200 == 3) ? "true" : "false"
    }
  }'
}
gen 1 >"$scratch/export1.csv"
gen 2 >"$scratch/export2.csv"
# Both exports shuffled the same way (the same source of randomness, the same number of rows).
for n in 1 2; do
  { head -n 1 "$scratch/export$n.csv"; tail -n +2 "$scratch/export$n.csv" | shuf --random-source=<(yes); } \
    >"$scratch/shuffled$n.csv"
done
chmod 644 "$scratch"/*.csv
say "$(du -h "$scratch/export1.csv" | cut -f1) per file"

sql postgres "CREATE DATABASE bench"
"$admin" db migrate --database "host=$sock dbname=bench user=postgres" >/dev/null 2>&1
sql bench "CREATE ROLE bench_batch LOGIN" 2>/dev/null || true
sql bench "GRANT hms2fa_batch TO bench_batch"
as_batch="host=$sock dbname=bench user=bench_batch"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# After a checkpoint, times one command (its output dropped) and prints the seconds it took.
timed() {
  sql bench "CHECKPOINT"
  local t0 t1
  t0=$(now)
  "$@" >/dev/null || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}
import() { "$admin" accounts import "$@" --database "$as_batch"; }
kept() { import "$@" --roster-copy "$scratch/copy"; }

copy_times=()
initial_times=()
nightly_times=()
same_times=()
next_times=()
shuffled_times=()
reshuffled_times=()
unkept_times=()
for run in $(seq 1 "$runs"); do
  sql bench "DROP TABLE IF EXISTS plain_feed; CREATE TABLE plain_feed (account_id text, display_name text, email text, status text, high_risk boolean)"
  copy_times+=("$(timed "$psql_bin" -h "$sock" -U postgres -d bench -X -q -v ON_ERROR_STOP=1 \
    -c "\\copy plain_feed FROM '$scratch/export1.csv' WITH (FORMAT csv, HEADER true)")")

  sql bench "TRUNCATE hms2fa.accounts CASCADE"
  rm -rf "$scratch/copy"
  initial_times+=("$(timed kept "$scratch/export1.csv")")

  sql bench "VACUUM ANALYZE hms2fa.accounts"
  nightly_times+=("$(timed kept "$scratch/export2.csv" --disable-missing)")

  same_times+=("$(timed kept "$scratch/export2.csv" --disable-missing)")

  sql bench "VACUUM ANALYZE hms2fa.accounts"
  next_times+=("$(timed kept "$scratch/export1.csv" --disable-missing)")

  sql bench "VACUUM ANALYZE hms2fa.accounts"
  shuffled_times+=("$(timed kept "$scratch/shuffled2.csv" --disable-missing)")

  sql bench "VACUUM ANALYZE hms2fa.accounts"
  reshuffled_times+=("$(timed kept "$scratch/shuffled1.csv" --disable-missing)")

  sql bench "VACUUM ANALYZE hms2fa.accounts"
  unkept_times+=("$(timed import "$scratch/export2.csv" --disable-missing)")

  printf 'run %d: psql \\copy %ss, initial import %ss, nightly import %ss, nothing changed %ss, next night %ss, shuffled %ss, shuffled next night %ss, without a copy %ss\n' \
    "$run" "${copy_times[-1]}" "${initial_times[-1]}" "${nightly_times[-1]}" "${same_times[-1]}" "${next_times[-1]}" \
    "${shuffled_times[-1]}" "${reshuffled_times[-1]}" "${unkept_times[-1]}"
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
copy=$(median "${copy_times[@]}")
initial=$(median "${initial_times[@]}")
nightly=$(median "${nightly_times[@]}")
same=$(median "${same_times[@]}")
next=$(median "${next_times[@]}")
shuffled=$(median "${shuffled_times[@]}")
reshuffled=$(median "${reshuffled_times[@]}")
unkept=$(median "${unkept_times[@]}")
echo
echo "rows: $rows, runs: $runs, $(nproc) cores, $(date -u +%Y-%m-%d), PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }')"
awk -v c="$copy" -v i="$initial" -v n="$nightly" -v s="$same" -v x="$next" -v r="$shuffled" -v q="$reshuffled" -v u="$unkept" 'BEGIN {
  printf "median psql \\copy into a plain table   %6.2fs\n", c
  printf "median initial import (all inserts)     %6.2fs  %.2fx\n", i, i / c
  printf "median nightly import (1%% changed)      %6.2fs  %.2fx\n", n, n / c
  printf "median import, nothing changed          %6.2fs  %.2fx\n", s, s / c
  printf "median next night (1%% changed back)     %6.2fs  %.2fx\n", x, x / c
  printf "median nightly, feed in another order   %6.2fs  %.2fx\n", r, r / c
  printf "median next night in that other order   %6.2fs  %.2fx\n", q, q / c
  printf "median nightly, no copy kept            %6.2fs  %.2fx\n", u, u / c
}'

#!/usr/bin/env bash
# Times `hms2fa-admin accounts import` against a DBA's plain SQL doing the same merge, side by
# side on one private PostgreSQL cluster, each on its own database holding the same registry,
# and prints each run and the ratios of the medians. Then, during one more nightly import, runs
# desk look-ups (`user show`) with lock_timeout = 100 ms: any look-up that waits longer on a lock
# fails, and the script says how many did.
#
# Usage: ops/bench/roster-import.sh [ROWS] [RUNS]     (default 1000000 rows, 5 runs)
#
# The DBA's plain SQL (psql, one transaction): \copy into an unlogged staging table, then
#   INSERT … ON CONFLICT (account_id) DO UPDATE … WHERE … IS DISTINCT FROM …, then
#   UPDATE … SET status = 'disabled' for the active accounts the feed doesn't list.
# It checks nothing and normalises nothing; the import does both, and writes its audit event.
#
# Each run, in alternating order (DBA first on odd runs, the import first on even ones):
#   first    the registry emptied (TRUNCATE, VACUUM), then the first export loaded whole
#   nightly  after a VACUUM ANALYZE, the other export (1% of the people renamed) with
#            --disable-missing: the nightly case; the exports alternate from run to run
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
# renames every 100th person and leaves out none.
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
chmod 644 "$scratch"/*.csv
say "$(du -h "$scratch/export1.csv" | cut -f1) per file"

for db in tool dba; do
  sql postgres "CREATE DATABASE $db"
  "$admin" db migrate --database "host=$sock dbname=$db user=postgres" >/dev/null 2>&1
done
sql tool "CREATE ROLE bench_batch LOGIN"
sql tool "CREATE ROLE bench_desk LOGIN"
"$admin" staff grant bench_batch --role batch --ticket BENCH-1 --database "host=$sock dbname=tool user=postgres" >/dev/null
"$admin" staff grant bench_desk --role tier1 --ticket BENCH-1 --database "host=$sock dbname=tool user=postgres" >/dev/null
sql dba "CREATE UNLOGGED TABLE dba_feed (account_id text, display_name text, email text, status text, high_risk boolean)"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# After a checkpoint, times one command (its output dropped) and prints the seconds it took.
timed() {
  sql postgres "CHECKPOINT"
  local t0 t1
  t0=$(now)
  "$@" >/dev/null || return 1
  t1=$(now)
  elapsed "$t0" "$t1"
}
import() { "$admin" accounts import "$@" --database "host=$sock dbname=tool user=bench_batch"; }
dba() {
  "$psql_bin" -h "$sock" -U postgres -d dba -X -q -v ON_ERROR_STOP=1 <<SQL
BEGIN;
TRUNCATE dba_feed;
\\copy dba_feed FROM '$1' WITH (FORMAT csv, HEADER true)
INSERT INTO hms2fa.accounts AS a (account_id, display_name, email, status, high_risk)
SELECT account_id, display_name, email, status, high_risk FROM dba_feed
ON CONFLICT (account_id) DO UPDATE
   SET display_name = EXCLUDED.display_name, email = EXCLUDED.email, status = EXCLUDED.status,
       high_risk = EXCLUDED.high_risk
 WHERE (a.display_name, a.email, a.status, a.high_risk)
       IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.email, EXCLUDED.status, EXCLUDED.high_risk);
UPDATE hms2fa.accounts a SET status = 'disabled'
 WHERE a.status = 'active' AND NOT EXISTS (SELECT 1 FROM dba_feed f WHERE f.account_id = a.account_id);
COMMIT;
SQL
}
# Both, in the run's order: "DBA-seconds tool-seconds".
pair() {
  local file=$1 first=$2 d t
  shift 2
  if [ "$first" = dba ]; then
    d=$(timed dba "$file")
    t=$(timed import "$file" "$@")
  else
    t=$(timed import "$file" "$@")
    d=$(timed dba "$file")
  fi
  echo "$d $t"
}

dba_first=()
tool_first=()
dba_nightly=()
tool_nightly=()
for run in $(seq 1 "$runs"); do
  order=$([ $((run % 2)) = 1 ] && echo dba || echo tool)
  for db in tool dba; do
    sql "$db" "TRUNCATE hms2fa.accounts CASCADE"
    sql "$db" "VACUUM ANALYZE hms2fa.accounts"
  done
  read -r d t < <(pair "$scratch/export1.csv" "$order")
  dba_first+=("$d")
  tool_first+=("$t")

  # The exports alternate, so that every night renames 1% (of the first night's registry, back).
  for db in tool dba; do sql "$db" "VACUUM ANALYZE hms2fa.accounts"; done
  read -r d t < <(pair "$scratch/export2.csv" "$order" --disable-missing)
  dba_nightly+=("$d")
  tool_nightly+=("$t")
  for db in tool dba; do sql "$db" "VACUUM ANALYZE hms2fa.accounts"; done
  read -r d t < <(pair "$scratch/export1.csv" "$order" --disable-missing)
  dba_nightly+=("$d")
  tool_nightly+=("$t")

  printf 'run %d (%s first): first load DBA %ss, import %ss; nightly DBA %ss %ss, import %ss %ss\n' \
    "$run" "$order" "${dba_first[-1]}" "${tool_first[-1]}" "${dba_nightly[-2]}" "${dba_nightly[-1]}" \
    "${tool_nightly[-2]}" "${tool_nightly[-1]}"
done

say "desk look-ups (lock_timeout 100 ms) during a nightly import"
desk() {
  local failed=0 n=0 slowest=0 t0 t1 ms
  while [ ! -e "$scratch/import-done" ]; do
    t0=$(now)
    if ! PGOPTIONS="-c lock_timeout=100ms" "$admin" user show "u$(printf '%07d' $((RANDOM * 30 % rows + 1)))" \
      --database "host=$sock dbname=tool user=bench_desk" >/dev/null 2>"$scratch/desk.err"; then
      failed=$((failed + 1))
      cat "$scratch/desk.err" >&2
    fi
    t1=$(now)
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')
    [ "$ms" -gt "$slowest" ] && slowest=$ms
    n=$((n + 1))
  done
  echo "$n $failed $slowest"
}
rm -f "$scratch/import-done"
desk >"$scratch/desk.out" &
desk_pid=$!
import "$scratch/export2.csv" --disable-missing >/dev/null
touch "$scratch/import-done"
wait "$desk_pid"
read -r lookups failed slowest <"$scratch/desk.out"

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
df=$(median "${dba_first[@]}")
tf=$(median "${tool_first[@]}")
dn=$(median "${dba_nightly[@]}")
tn=$(median "${tool_nightly[@]}")
echo
echo "rows: $rows, runs: $runs, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M') UTC, PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }')"
awk -v df="$df" -v tf="$tf" -v dn="$dn" -v tn="$tn" 'BEGIN {
  printf "median first load:   DBA plain SQL %6.2fs, import %6.2fs  %.2fx\n", df, tf, tf / df
  printf "median nightly (1%%): DBA plain SQL %6.2fs, import %6.2fs  %.2fx\n", dn, tn, tn / dn
}'
echo "desk look-ups during a nightly import: $lookups, $failed waited over 100 ms on a lock (failed), slowest ${slowest} ms"
[ "$failed" = 0 ]

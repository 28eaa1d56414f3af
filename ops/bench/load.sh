#!/usr/bin/env bash
# Load: AGENTS concurrent service-desk agents (processes), each running OPS mixed operations
# against one database while the nightly expiry job runs, then checks that no agent saw a
# deadlock or an internal error, that every successful change has its audit event, and that the
# audit chain verifies.
# Usage: ops/bench/load.sh [AGENTS=20] [OPS=200] [ACCOUNTS=5000]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
# shellcheck source=ops/lib.sh
. ops/lib.sh

agents=${1:-20}
ops=${2:-200}
accounts=${3:-5000}

ensure_prerequisites
say "building hms2fa-admin (release)"
swift build -c release 2>&1 | grep -E 'error|warning: unre' || true
bin="$(swift build -c release --show-bin-path)/hms2fa-admin"

work=$(mktemp -d "${TMPDIR:-/tmp}/hms2fa-load.XXXXXX")
chmod 755 "$work"
trap 'stop_cluster "$work/data"; rm -rf "$work"' EXIT
start_cluster "$work/data" "$work/run" fast
export PGHOST="$work/run" PGPORT=5432 PGUSER=postgres PGDATABASE=load
psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
"${psql[@]}" -d postgres -c "CREATE DATABASE load"
"$bin" db migrate >/dev/null

say "seeding $accounts accounts, $((accounts * 2)) devices, $((accounts * 10)) remembered browsers (half expired)"
"${psql[@]}" <<SQL
INSERT INTO hms2fa.accounts (account_id, display_name, email)
SELECT 'u' || g, 'User ' || g, 'u' || g || '@hms.harvard.edu' FROM generate_series(1, $accounts) g;
INSERT INTO hms2fa.devices (account_id, kind, platform, phone, label, activated_at, is_default, last_used_at)
SELECT 'u' || g, 'mobile', 'ios', '+1617' || lpad((5000000 + g)::text, 7, '0'), 'phone',
       now() - interval '400 days', true, now() - interval '300 days'
  FROM generate_series(1, $accounts) g;
INSERT INTO hms2fa.devices (account_id, kind, platform, phone, label)
SELECT 'u' || g, 'mobile', 'android', '+1857' || lpad((5000000 + g)::text, 7, '0'), 'new phone'
  FROM generate_series(1, $accounts) g;
INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, created_at, expires_at)
SELECT sha256(('b' || g)::bytea), 'u' || (1 + g % $accounts), 'Firefox',
       now() - interval '10 days', now() + CASE WHEN g % 2 = 0 THEN interval '-1 day' ELSE interval '20 days' END
  FROM generate_series(1, $accounts * 10) g;
ANALYZE;
SQL
for i in $(seq 1 "$agents"); do
  "${psql[@]}" -c "CREATE ROLE agent$i LOGIN"
  "$bin" staff grant "agent$i" --role tier2 --ticket LOAD-0 >/dev/null
done
"${psql[@]}" -c "CREATE ROLE nightly LOGIN" -c "CREATE ROLE sender LOGIN"
"$bin" staff grant nightly --role batch --ticket LOAD-0 >/dev/null
"$bin" staff grant sender --role delivery --ticket LOAD-0 >/dev/null
mkdir -p "$work/mail" "$work/sms" "$work/out"
# The delivery service sends the links and notices the agents queue; they wait for it, as at the desk.
HMS2FA_MAILER="maildir:$work/mail" HMS2FA_SMS="spool:$work/sms" PGUSER=sender \
  "$bin" delivery run >"$work/delivery.log" 2>&1 </dev/null &
delivery=$!

# One agent: OPS operations on random people; one line per operation: kind status milliseconds.
agent() {
  local me=$1 n=$2 i kind account status start end
  for ((i = 0; i < n; i++)); do
    account="u$((RANDOM % accounts + 1))"
    case $((RANDOM % 10)) in
      0 | 1 | 2) kind=show; set -- user show "$account" ;;
      3) kind=find; set -- user find "u$((RANDOM % 500))" --limit 5 ;;
      4) kind=owner; set -- phone owner "+1617$((5000000 + RANDOM % accounts + 1))" ;;
      5) kind=browsers; set -- remembered list "$account" ;;
      6) kind=revoke; set -- remembered revoke "$account" --ticket "LOAD-$me-$i" ;;
      7) kind=link; set -- activation send "$account" --ticket "LOAD-$me-$i" ;;
      8) kind=unlink; set -- activation revoke "$account" --ticket "LOAD-$me-$i" ;;
      9) kind=reset; set -- enrollment reset "$account" --ticket "LOAD-$me-$i" --verified-via in-person --yes ;;
    esac
    start=$(date +%s%N)
    status=0
    PGUSER=agent$me "$bin" "$@" --json >"$work/out/$me.$i.json" 2>"$work/out/$me.$i.err" </dev/null || status=$?
    end=$(date +%s%N)
    echo "$kind $status $(((end - start) / 1000000))"
  done >"$work/agent$me.log"
}

say "the nightly job runs in a loop while $agents agents each do $ops operations"
(
  while [ ! -f "$work/stop" ]; do
    if "$bin" jobs expire-remembered --help >/dev/null 2>&1; then
      PGUSER=nightly "$bin" jobs expire-remembered --batch-size 500 --max-fraction 1 >>"$work/job.log" 2>&1 || true
    fi
    sleep 1
  done
) &
job=$!
started=$(date +%s%N)
pids=()
for i in $(seq 1 "$agents"); do
  agent "$i" "$ops" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
finished=$(date +%s%N)
touch "$work/stop"
wait "$job" || true
kill -TERM "$delivery" 2>/dev/null || true
wait "$delivery" || true

cat "$work"/agent*.log >"$work/all.log"
total=$(wc -l <"$work/all.log")
seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
say "results"
echo "operations: $total in $seconds s ($(awk -v n="$total" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')/s), $agents agents, $accounts accounts, $(nproc) cores"
printf '%-9s %6s %8s %8s %8s  %s\n' kind count p50_ms p99_ms max_ms "exit statuses"
for kind in show find owner browsers revoke link unlink reset; do
  awk -v k="$kind" '$1 == k { print $3 }' "$work/all.log" | sort -n >"$work/lat"
  n=$(wc -l <"$work/lat")
  [ "$n" -gt 0 ] || continue
  p50=$(sed -n "$(((n + 1) / 2))p" "$work/lat")
  p99=$(sed -n "$(((n * 99 + 99) / 100))p" "$work/lat")
  max=$(tail -1 "$work/lat")
  statuses=$(awk -v k="$kind" '$1 == k { c[$2]++ } END { for (s in c) printf "%s:%d ", s, c[s] }' "$work/all.log")
  printf '%-9s %6d %8s %8s %8s  %s\n' "$kind" "$n" "$p50" "$p99" "$max" "$statuses"
done

deadlocks=$( (grep -l -i 'deadlock' "$work"/out/*.err 2>/dev/null || true) | wc -l)
internal=$(awk '$2 == 70 || $2 == 69' "$work/all.log" | wc -l)
expected=$(awk '($1 == "revoke" || $1 == "link" || $1 == "unlink" || $1 == "reset") && $2 == 0' "$work/all.log" | wc -l)
# Changes that succeeded but had nothing to do write no event: count those out.
nothing=$( (grep -l -E '"revoked":0|"status":"nothing_to_reset"' "$work"/out/*.json 2>/dev/null || true) | wc -l)
events=$("$PG_BIN/psql" -X -At -c "SELECT count(*) FROM hms2fa.audit_events WHERE actor LIKE 'agent%'")
jobruns=$(grep -c '"deleted"\|deleted' "$work/job.log" 2>/dev/null || true)
echo "deadlocks seen by agents: $deadlocks; internal errors or lost connections: $internal"
echo "successful changes: $expected, of which $nothing had nothing to do; audit events by agents: $events"
echo "nightly job runs during the load: ${jobruns:-0}"
verified=0
verify=$(PGUSER=postgres "$bin" audit verify 2>&1) || verified=$?
echo "audit verify (exit $verified): $verify"
[ "$deadlocks" -eq 0 ] && [ "$internal" -eq 0 ] && [ "$events" -eq $((expected - nothing)) ] &&
  [ "$verified" -eq 0 ] || { echo "FAILED"; exit 1; }
echo "PASSED"

-- The sign-in service's look-up of a remember-me cookie (its SHA-256), for pgbench. Rows
-- :lo..:hi are the ones ops/bench/generate made unexpired; token_hash = sha256(int8send(i)).
\set i random(:lo, :hi)
SELECT account_id, expires_at
  FROM hms2fa.remembered_browsers
 WHERE token_hash = sha256(int8send(:i)) AND revoked_at IS NULL AND expires_at > now();

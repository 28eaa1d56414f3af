-- The nightly expiry of remember-me rows (role hms2fa_batch). The job is a loop in the tool of
-- short transactions, each one call to a function here: a census of the table in chunks (for the
-- blast-radius guard and progress), then batches of deletes, each a range of up to N expired
-- rows along the expires_at index. A session-level advisory lock keeps to one run per database;
-- each run writes one job.expire_remembered audit event.

SET LOCAL ROLE hms2fa_owner;

-- One run at a time per database. Session level: it is held across the run's many short
-- transactions and released when the run ends, or when its connection dies.
CREATE FUNCTION hms2fa_api.expire_remembered_lock() RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- Any fixed key, different from the migrations' (0x686D7332666101).
  RETURN pg_try_advisory_lock(29391126357419522);

CREATE FUNCTION hms2fa_api.expire_remembered_unlock() RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN pg_advisory_unlock(29391126357419522);

-- Counts about p_chunk rows in expires_at order after p_after (from the start when NULL): how
-- many, how many of them expired before p_before, and the last expires_at counted, to pass as
-- p_after to the next call (NULL when the table is done). A chunk ends after all rows sharing its
-- last expires_at, so nothing is counted twice or skipped. Index-only scans of expires_at; each
-- call is short, so no run holds a snapshot for long while counting millions of rows.
CREATE FUNCTION hms2fa_api.remembered_expiry_census(
  p_before timestamptz, p_after timestamptz DEFAULT NULL, p_chunk integer DEFAULT 200000
) RETURNS TABLE (rows_counted bigint, expired bigint, last_expires_at timestamptz)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  v_before timestamptz := least(coalesce(p_before, now()), now());
  v_lo timestamptz := coalesce(p_after, '-infinity');
  v_hi timestamptz;
  v_rows bigint;
  v_expired bigint;
BEGIN
  IF p_chunk IS NULL OR p_chunk < 1 OR p_chunk > 10000000 THEN
    RAISE EXCEPTION 'a census chunk is 1 to 10000000 rows' USING ERRCODE = 'H2U05';
  END IF;
  -- One pass over the chunk's index entries; WITH TIES takes every row sharing the last value.
  SELECT count(*), count(*) FILTER (WHERE c.expires_at < v_before), max(c.expires_at)
    INTO v_rows, v_expired, v_hi
    FROM (SELECT r.expires_at FROM hms2fa.remembered_browsers r
           WHERE r.expires_at > v_lo
           ORDER BY r.expires_at
           FETCH FIRST p_chunk ROWS WITH TIES) c;
  IF v_rows < p_chunk THEN
    v_hi := NULL;  -- the end of the table
  END IF;
  IF p_after IS NULL THEN
    -- "> '-infinity'" leaves out rows expiring at '-infinity' (a bad import): count them too.
    SELECT v_rows + count(*), v_expired + count(*) INTO v_rows, v_expired
      FROM hms2fa.remembered_browsers r
     WHERE r.expires_at = '-infinity';
  END IF;
  RETURN QUERY SELECT v_rows, v_expired, v_hi;
END
$$;

-- Deletes up to p_limit rows whose expires_at is before p_before (never later than now()) and
-- at or after p_after, oldest first; returns how many, and where the next batch starts (its
-- p_after: nothing before it is left for this run), so that it doesn't walk again over the
-- index entries this one left dead. The batch is a range of expires_at, up to the
-- (p_limit + 1)-th expired row, found by an index-only probe, so the DELETE is one index range
-- scan that visits each row once. When more than p_limit rows share one expires_at (a bulk
-- import), the batch takes p_limit of them by ctid instead. A row the sign-in service holds
-- locked makes the batch wait, under the caller's lock_timeout. Custom plans: a generic one
-- could not bound the index scans by both ends. No sequential or bitmap scans: right after a
-- big run, stale statistics can make the last, small batch look like millions of rows, and a
-- sequential scan of the whole table would hold that batch open for seconds.
CREATE FUNCTION hms2fa_api.expire_remembered_batch(
  p_limit integer, p_before timestamptz DEFAULT NULL, p_after timestamptz DEFAULT NULL
) RETURNS TABLE (deleted integer, resume_at timestamptz)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
  SET enable_seqscan = off
  SET enable_bitmapscan = off
AS $$
DECLARE
  v_before timestamptz := least(coalesce(p_before, now()), now());
  v_from timestamptz := coalesce(p_after, '-infinity');
  v_next timestamptz;
  v_deleted integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'a batch is 1 to 100000 rows' USING ERRCODE = 'H2U04';
  END IF;
  SELECT x.expires_at INTO v_next
    FROM hms2fa.remembered_browsers x
   WHERE x.expires_at >= v_from AND x.expires_at < v_before
   ORDER BY x.expires_at
  OFFSET p_limit LIMIT 1;
  IF v_next IS NULL THEN
    v_next := v_before;  -- the rest fits in this batch
  END IF;
  -- At most p_limit rows lie before the (p_limit + 1)-th.
  DELETE FROM hms2fa.remembered_browsers r
   WHERE r.expires_at >= v_from AND r.expires_at < v_next;
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  IF v_deleted = 0 AND v_next < v_before THEN
    -- The first p_limit + 1 rows all expire at v_next.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.ctid = ANY (ARRAY(
             SELECT x.ctid FROM hms2fa.remembered_browsers x
              WHERE x.expires_at = v_next
              LIMIT p_limit))
       AND r.expires_at = v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
  END IF;
  RETURN QUERY SELECT v_deleted, v_next;
END
$$;

-- The run's one audit event. Outcomes: complete, stopped (at --max-runtime; the next run
-- continues), refused (the blast-radius guard), busy (lock timeouts), connection_lost (written
-- from a new connection), failed (anything else).
CREATE FUNCTION hms2fa_api.record_expire_remembered_run(
  p_outcome text, p_deleted bigint, p_batches integer, p_expired_at_start bigint, p_rows_at_start bigint,
  p_duration_seconds numeric, p_batch_size integer, p_cutoff timestamptz
) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_outcome IS NULL OR p_outcome NOT IN ('complete', 'stopped', 'refused', 'busy', 'connection_lost', 'failed') THEN
    RAISE EXCEPTION 'unknown outcome of an expiry run: %', p_outcome USING ERRCODE = 'H2U06';
  END IF;
  RETURN hms2fa.audit('job.expire_remembered', NULL, NULL, NULL, jsonb_build_object(
    'outcome', p_outcome,
    'complete', p_outcome = 'complete',
    'deleted', p_deleted,
    'batches', p_batches,
    'expired_at_start', p_expired_at_start,
    'rows_at_start', p_rows_at_start,
    'duration_seconds', p_duration_seconds,
    'batch_size', p_batch_size,
    'cutoff', hms2fa.iso(p_cutoff)));
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_lock() TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_unlock() TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.remembered_expiry_census(timestamptz, timestamptz, integer) TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_batch(integer, timestamptz, timestamptz) TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.record_expire_remembered_run(
  text, bigint, integer, bigint, bigint, numeric, integer, timestamptz) TO hms2fa_batch;

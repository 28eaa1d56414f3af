-- The nightly jobs: expiring "remember me" tokens in short batches, and clearing the secrets
-- and message bodies of messages that ended. Serves hms2fa_batch.

SET LOCAL ROLE hms2fa_owner;

-- One run at a time per database. Session level: it is held across the run's many short
-- transactions and released when the run ends, or when its connection dies.
CREATE FUNCTION hms2fa_api.expire_remembered_lock() RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- Any fixed key, different from the migrations' (0x686D7332666101).
  RETURN pg_try_advisory_lock(29391126357419522);
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_lock() TO hms2fa_batch;

-- Releases the expiry job's session lock.
CREATE FUNCTION hms2fa_api.expire_remembered_unlock() RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN pg_advisory_unlock(29391126357419522);
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_unlock() TO hms2fa_batch;

-- Deletes up to p_limit remembered browsers that expired before p_before (and after p_after,
-- where the last batch stopped), oldest first, and says where the next may resume. Rows that share one expires_at are taken by ctid, and again by key when a
-- sign-in's update moved every one of them; rows deleted meanwhile are passed over. Returns 0
-- only when no expired row is left.
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
  LOOP
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
    -- Nothing deleted up to the cutoff: no expired row is left.
    EXIT WHEN v_deleted > 0 OR v_next >= v_before;
    -- The first p_limit + 1 rows all expire at v_next.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.ctid = ANY (ARRAY(
             SELECT x.ctid FROM hms2fa.remembered_browsers x
              WHERE x.expires_at = v_next
              LIMIT p_limit))
       AND r.expires_at = v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    EXIT WHEN v_deleted > 0;
    -- An update (a sign-in's) moved every row picked to a new ctid between the pick and the
    -- delete: pick them again by key, which an update doesn't change.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.token_hash = ANY (ARRAY(
             SELECT x.token_hash FROM hms2fa.remembered_browsers x
              WHERE x.expires_at = v_next
              LIMIT p_limit))
       AND r.expires_at = v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    EXIT WHEN v_deleted > 0;
    -- None is left at v_next (deleted meanwhile): the expired rows after it are still this
    -- batch's to find.
    v_from := v_next;
  END LOOP;
  RETURN QUERY SELECT v_deleted, v_next;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_batch(integer,timestamp with time zone,timestamp with time zone) TO hms2fa_batch;

-- Runs expire_remembered_batch again and again in one call, committing after each, until none
-- is left (finished), or p_max_batches or p_max_milliseconds is reached.
CREATE PROCEDURE hms2fa_api.expire_remembered_batches(
  p_limit integer, p_before timestamptz, p_after timestamptz, p_max_batches integer,
  p_max_milliseconds integer, INOUT finished boolean DEFAULT NULL
)
  LANGUAGE plpgsql
AS $$
DECLARE
  v_after timestamptz := p_after;
  v_until timestamptz := pg_catalog.clock_timestamp()
                         + pg_catalog.make_interval(secs => p_max_milliseconds / 1000.0);
  v_batches integer := 0;
  v_deleted integer;
  v_next timestamptz;
  -- A transaction starts where the previous one committed (the first, where the call began).
  v_since timestamptz := pg_catalog.clock_timestamp();
  v_now timestamptz;
BEGIN
  IF p_max_batches IS NULL OR p_max_batches < 1 OR p_max_batches > 100000
     OR p_max_milliseconds IS NULL OR p_max_milliseconds < 1 OR p_max_milliseconds > 3600000 THEN
    RAISE EXCEPTION 'a call is 1 to 100000 batches and 1 ms to 1 h' USING ERRCODE = 'H2U08';
  END IF;
  finished := false;
  LOOP
    SELECT b.deleted, b.resume_at INTO v_deleted, v_next
      FROM hms2fa_api.expire_remembered_batch(p_limit, p_before, v_after) b;
    IF v_deleted = 0 THEN
      finished := true;
      RETURN;
    END IF;
    COMMIT;
    v_now := pg_catalog.clock_timestamp();
    RAISE NOTICE USING ERRCODE = 'H2I01', MESSAGE = 'expire_remembered: batch committed',
      DETAIL = v_deleted::text || ' '
               || pg_catalog.round((extract(epoch FROM v_now - v_since) * 1000)::numeric, 3)::text || ' '
               || coalesce(v_next::text, '');
    v_since := v_now;
    v_after := v_next;
    v_batches := v_batches + 1;
    EXIT WHEN v_batches >= p_max_batches OR pg_catalog.clock_timestamp() >= v_until;
  END LOOP;
END
$$;
GRANT EXECUTE ON PROCEDURE hms2fa_api.expire_remembered_batches(integer,timestamp with time zone,timestamp with time zone,integer,integer,boolean) TO hms2fa_batch;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.record_expire_remembered_run(text,bigint,integer,bigint,bigint,numeric,integer,timestamp with time zone) TO hms2fa_batch;

-- How many remembered browsers there are and how many expired before p_before (after p_after),
-- counted p_chunk rows at a time: what the job's blast-radius guard compares.
CREATE FUNCTION hms2fa_api.remembered_expiry_census(
  p_before timestamptz, p_after timestamptz DEFAULT NULL, p_chunk integer DEFAULT 200000
) RETURNS TABLE (rows_counted bigint, expired bigint, last_expires_at timestamptz)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
  SET enable_seqscan = off
  SET enable_bitmapscan = off
AS $$
DECLARE
  v_before timestamptz := least(coalesce(p_before, now()), now());
  v_lo timestamptz := coalesce(p_after, '-infinity');
  v_hi timestamptz;
  v_bounds timestamptz[];
  v_per_bucket double precision;
  v_rows bigint;
  v_expired bigint;
  v_last boolean := false;
BEGIN
  IF p_chunk IS NULL OR p_chunk < 1 OR p_chunk > 10000000 THEN
    RAISE EXCEPTION 'a census chunk is 1 to 10000000 rows' USING ERRCODE = 'H2U05';
  END IF;

  -- The histogram: bounds that split the rows outside the most common values into equal parts.
  SELECT s.histogram_bounds::text::timestamptz[],
         c.reltuples * (1 - s.null_frac - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) f), 0))
           / greatest(cardinality(s.histogram_bounds::text::timestamptz[]) - 1, 1)
    INTO v_bounds, v_per_bucket
    FROM pg_stats s
    JOIN pg_class c ON c.oid = 'hms2fa.remembered_browsers'::regclass
   WHERE s.schemaname = 'hms2fa' AND s.tablename = 'remembered_browsers' AND s.attname = 'expires_at';

  IF v_per_bucket > 0 THEN
    -- The bound about p_chunk rows past v_lo, if the histogram reaches that far.
    SELECT b INTO v_hi
      FROM unnest(v_bounds) b
     WHERE b > v_lo
     ORDER BY b
    OFFSET greatest(ceil(p_chunk / v_per_bucket)::integer - 1, 0) LIMIT 1;
  END IF;

  IF v_hi IS NOT NULL THEN
    SELECT count(*) INTO v_expired FROM hms2fa.remembered_browsers r
     WHERE r.expires_at > v_lo AND r.expires_at <= v_hi AND r.expires_at < v_before;
    SELECT v_expired + count(*) INTO v_rows FROM hms2fa.remembered_browsers r
     WHERE r.expires_at > v_lo AND r.expires_at <= v_hi AND r.expires_at >= v_before;
  ELSE
    -- No histogram bound ahead: read up to p_chunk rows in order, as 0007 did.
    -- WITH TIES takes every row sharing the last value.
    SELECT count(*), count(*) FILTER (WHERE c.expires_at < v_before), max(c.expires_at)
      INTO v_rows, v_expired, v_hi
      FROM (SELECT r.expires_at FROM hms2fa.remembered_browsers r
             WHERE r.expires_at > v_lo
             ORDER BY r.expires_at
             FETCH FIRST p_chunk ROWS WITH TIES) c;
    v_last := v_rows < p_chunk;
  END IF;

  IF p_after IS NULL THEN
    -- "> '-infinity'" leaves out rows expiring at '-infinity' (a bad import): count them too.
    SELECT v_rows + count(*), v_expired + count(*) INTO v_rows, v_expired
      FROM hms2fa.remembered_browsers r
     WHERE r.expires_at = '-infinity';
  END IF;
  RETURN QUERY SELECT v_rows, v_expired, CASE WHEN v_last THEN NULL ELSE v_hi END;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.remembered_expiry_census(timestamp with time zone,timestamp with time zone,integer) TO hms2fa_batch;

-- Spent secrets, cleared by the nightly job ---------------------------------------------------

-- Clears up to p_limit hashes of links and codes that can no longer be used, candidate hashes
-- of tries, and the bodies of messages that ended more than a day ago; the rows stay as
-- history. Returns how many rows it cleared: the caller repeats until 0.
CREATE FUNCTION hms2fa_api.purge_spent_secrets(p_limit integer)
  RETURNS TABLE (links integer, codes integer, tries integer, bodies integer)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_links integer;
  v_codes integer;
  v_tries integer;
  v_bodies integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'a batch is 1 to 100000 rows' USING ERRCODE = 'H2U08';
  END IF;
  UPDATE hms2fa.activation_links l SET token_hash = NULL
   WHERE l.link_id IN (SELECT x.link_id FROM hms2fa.activation_links x
                        WHERE x.token_hash IS NOT NULL
                          AND (x.used_at IS NOT NULL OR x.revoked_at IS NOT NULL OR x.expires_at <= now())
                        LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_links = ROW_COUNT;
  UPDATE hms2fa.phone_verifications v SET code_hash = NULL, salt = NULL
   WHERE v.verification_id IN (SELECT x.verification_id FROM hms2fa.phone_verifications x
                                WHERE x.code_hash IS NOT NULL
                                  AND (x.state <> 'pending' OR x.expires_at <= now())
                                LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_codes = ROW_COUNT;
  UPDATE hms2fa.code_tries t SET candidate_hash = NULL
   WHERE t.try_id IN (SELECT x.try_id FROM hms2fa.code_tries x
                       WHERE x.candidate_hash IS NOT NULL AND x.tried_at <= now() - interval '1 day'
                       LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_tries = ROW_COUNT;
  UPDATE hms2fa.outbox o SET body = NULL
   WHERE o.message_id IN (SELECT x.message_id FROM hms2fa.outbox x
                           WHERE x.body IS NOT NULL AND x.ended_at <= now() - interval '1 day'
                           LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_bodies = ROW_COUNT;
  RETURN QUERY SELECT v_links, v_codes, v_tries, v_bodies;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.purge_spent_secrets(integer) TO hms2fa_batch;

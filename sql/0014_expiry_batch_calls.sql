-- Several of the nightly job's batches per call. The job called expire_remembered_batch once per
-- batch: a round trip, and the tool waking, between every two batches of 5 000 rows, about a
-- tenth of the job's time, and what cost the sign-in service's look-ups most while it ran
-- (README, Benchmarks). This procedure runs batch after batch in the server, each its own
-- transaction (it commits after each one), until none is left, p_max_batches have run or
-- p_max_milliseconds have passed; the tool calls it again, checking its time budget in between.
--
-- After each commit it sends a notice (SQLSTATE H2I01) whose detail is the batch's row count,
-- how long its transaction lasted (milliseconds, from the previous commit, or the call's start,
-- to this one) and where the next batch starts: the tool counts from these, so that its counts
-- stay exact when a call ends in an error (a lock timeout, a lost connection) after some of its
-- batches committed, and reports the longest transaction (the server's log times only the
-- whole CALL). The notice is sent after the commit, so it never counts a batch that didn't.
--
-- PostgreSQL lets a procedure commit only when it has neither SECURITY DEFINER nor SET
-- clauses: this one runs with the caller's rights (EXECUTE for hms2fa_batch only) and does
-- nothing but call expire_remembered_batch, which keeps its own; every name in it is qualified.

SET LOCAL ROLE hms2fa_owner;

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

REVOKE EXECUTE ON PROCEDURE hms2fa_api.expire_remembered_batches(integer, timestamptz, timestamptz, integer, integer, boolean)
  FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE hms2fa_api.expire_remembered_batches(integer, timestamptz, timestamptz, integer, integer, boolean)
  TO hms2fa_batch;

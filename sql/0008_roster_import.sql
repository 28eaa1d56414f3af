-- Roster sync: the identity system's nightly export, loaded by a batch login. The client opens
-- a staging table for its transaction, COPYs the feed into it, and calls apply_roster, which
-- checks every row again, refuses the whole feed at the first problem, and applies inserts,
-- updates and (when asked) disables, with one audit event; commit or rollback is the client's.

-- The staging table is made by hms2fa_owner in the caller's session; whoever migrates gives it
-- the TEMPORARY privilege in case PUBLIC's default was revoked (a warning, not an error, when
-- this login can't grant it).
DO $$
BEGIN
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO hms2fa_owner', current_database());
END
$$;

SET LOCAL ROLE hms2fa_owner;

--   H2U8x usage: no staging table, a bad option     H2D8x the feed is refused
--   H2R81 another import holds the lock

-- Opens this transaction's staging table, pg_temp.roster_feed. It belongs to hms2fa_owner and
-- the caller may only INSERT (COPY) into it: a table the caller owned could carry rules, row
-- security policies or other objects of the caller's that apply_roster would run with the
-- owner's rights. Dropped at commit or rollback, so it must be called inside a transaction.
CREATE FUNCTION hms2fa_api.open_roster_feed() RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF to_regclass('pg_temp.roster_feed') IS NOT NULL THEN
    RAISE EXCEPTION 'this session already has a table pg_temp.roster_feed'
      USING ERRCODE = 'H2U81', HINT = 'run the import in a new transaction';
  END IF;
  CREATE TEMPORARY TABLE roster_feed (
    line         bigint NOT NULL,
    account_id   text,
    display_name text,
    email        text,
    status       text,
    high_risk    boolean
  ) ON COMMIT DROP;
  EXECUTE format('GRANT INSERT ON TABLE pg_temp.roster_feed TO %I', session_user);
END
$$;

-- Raises unless pg_temp.roster_feed is the table open_roster_feed made.
CREATE FUNCTION hms2fa.check_roster_feed() RETURNS void
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_class c
        WHERE c.oid = to_regclass('pg_temp.roster_feed') AND c.relkind = 'r'
          AND c.relpersistence = 't' AND c.relowner = 'hms2fa_owner'::regrole) THEN
    RAISE EXCEPTION 'no roster feed in this transaction'
      USING ERRCODE = 'H2U82',
            HINT = 'call hms2fa_api.open_roster_feed(), then COPY pg_temp.roster_feed FROM STDIN, in one transaction';
  END IF;
END
$$;

-- The rules the tool applies at the edge (Sources/HelpDesk/Values.swift), again here so that a
-- feed loaded with psql meets them too. NULL when the row is fine, else what is wrong.
CREATE FUNCTION hms2fa.roster_row_problem(
  p_account_id text, p_display_name text, p_email text, p_status text, p_high_risk boolean
) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN CASE
    WHEN p_account_id IS NULL OR p_account_id !~ '^[a-z0-9][a-z0-9._-]{0,63}$' THEN
      format('account_id %s is not a normalised HMS Account ID', coalesce(quote_literal(left(p_account_id, 70)), 'NULL'))
    WHEN p_display_name IS NULL OR btrim(p_display_name) = '' THEN
      'display_name is empty'
    WHEN p_display_name ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]' THEN
      'display_name contains control characters'
    WHEN p_email IS NULL OR length(p_email) > 254
         OR p_email !~ '^[^@[:space:][:cntrl:]]+@([^@.[:space:][:cntrl:]]+\.)+[^@.[:space:][:cntrl:]]+$' THEN
      format('email %s is not an email address', coalesce(quote_literal(left(p_email, 70)), 'NULL'))
    WHEN split_part(p_email, '@', 2) ~ '[A-Z]' THEN
      format('email %s: the domain must be lowercase', quote_literal(left(p_email, 70)))
    WHEN p_status IS NULL OR p_status NOT IN ('active', 'disabled') THEN
      format('status %s is neither active nor disabled', coalesce(quote_literal(left(p_status, 70)), 'NULL'))
    WHEN p_high_risk IS NULL THEN
      'high_risk is empty'
  END;

-- Applies the feed in pg_temp.roster_feed to hms2fa.accounts: inserts accounts that are new,
-- updates those whose name, email, status or high-risk flag differ (the feed's status is
-- authoritative, so a disabled account that comes back active is enabled again) and, with
-- p_disable_missing, disables active accounts the feed doesn't list. login_action and
-- created_at are never touched.
--
-- The whole feed is refused (nothing changes) at the first malformed row or repeated account
-- id, and when it would disable more than p_max_disable_fraction of the active accounts
-- (a truncated export must not lock out the school), unless p_force, which needs a ticket.
-- p_dry_run counts and checks but changes nothing and writes no event; roster_diff shows what
-- would change. Otherwise writes one accounts.imported event with the counts.
CREATE FUNCTION hms2fa_api.apply_roster(
  p_disable_missing boolean, p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean,
  p_source text, p_ticket text DEFAULT NULL,
  OUT feed_rows bigint, OUT added bigint, OUT changed bigint, OUT disabled bigint,
  OUT unchanged bigint, OUT active_before bigint, OUT would_disable bigint,
  OUT over_limit boolean, OUT event_id bigint
)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- A million-row feed is grouped and joined in memory rather than in temporary files.
  SET work_mem = '256MB'
AS $$
DECLARE
  v_bad record;
  v_feed_disables bigint;
  v_missing bigint := 0;
BEGIN
  IF p_ticket IS NOT NULL THEN
    PERFORM hms2fa.check_ticket(p_ticket);
  END IF;
  IF p_max_disable_fraction IS NULL OR p_max_disable_fraction < 0 OR p_max_disable_fraction > 1 THEN
    RAISE EXCEPTION 'the largest fraction of active accounts a feed may disable is between 0 and 1'
      USING ERRCODE = 'H2U83';
  END IF;
  IF coalesce(p_force, false) AND p_ticket IS NULL AND NOT coalesce(p_dry_run, false) THEN
    RAISE EXCEPTION 'overriding the disable limit needs a ticket' USING ERRCODE = 'H2U84';
  END IF;
  PERFORM hms2fa.check_roster_feed();
  IF NOT pg_try_advisory_xact_lock(29393739112145160) THEN
    RAISE EXCEPTION 'another roster import is running' USING ERRCODE = 'H2R81',
      HINT = 'try again when it has finished';
  END IF;

  SELECT f.line, hms2fa.roster_row_problem(f.account_id, f.display_name, f.email, f.status, f.high_risk) AS problem
    INTO v_bad
    FROM ONLY pg_temp.roster_feed f
   WHERE hms2fa.roster_row_problem(f.account_id, f.display_name, f.email, f.status, f.high_risk) IS NOT NULL
   ORDER BY f.line
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'line %: %; nothing was imported', v_bad.line, v_bad.problem USING ERRCODE = 'H2D81';
  END IF;

  SELECT f.account_id, count(*) AS n, min(f.line) AS first_line, max(f.line) AS last_line
    INTO v_bad
    FROM ONLY pg_temp.roster_feed f
   GROUP BY f.account_id
  HAVING count(*) > 1
   ORDER BY min(f.line)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'line %: account id % appears % times (lines % to %); nothing was imported',
      v_bad.last_line, v_bad.account_id, v_bad.n, v_bad.first_line, v_bad.last_line
      USING ERRCODE = 'H2D82', HINT = 'ids are compared after trimming and lowercasing';
  END IF;

  ANALYZE pg_temp.roster_feed;

  SELECT count(*) INTO feed_rows FROM ONLY pg_temp.roster_feed;
  SELECT count(*) INTO active_before FROM hms2fa.accounts a WHERE a.status = 'active';
  SELECT count(*) FILTER (WHERE a.account_id IS NULL),
         count(*) FILTER (WHERE a.account_id IS NOT NULL
                            AND (a.display_name, a.email, a.status, a.high_risk)
                                IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk)),
         count(*) FILTER (WHERE a.status = 'active' AND f.status = 'disabled')
    INTO added, changed, v_feed_disables
    FROM ONLY pg_temp.roster_feed f
    LEFT JOIN hms2fa.accounts a ON a.account_id = f.account_id;
  IF p_disable_missing THEN
    SELECT count(*) INTO v_missing
      FROM hms2fa.accounts a
     WHERE a.status = 'active'
       AND NOT EXISTS (SELECT 1 FROM ONLY pg_temp.roster_feed f WHERE f.account_id = a.account_id);
  END IF;
  disabled := v_missing;
  unchanged := feed_rows - added - changed;
  would_disable := v_missing + v_feed_disables;
  over_limit := would_disable > 0 AND would_disable > p_max_disable_fraction * active_before;

  IF p_dry_run THEN
    RETURN;
  END IF;
  IF over_limit AND NOT coalesce(p_force, false) THEN
    RAISE EXCEPTION 'the feed would disable % of % active accounts (%), more than the limit of %; nothing was imported',
      would_disable, active_before, round(100.0 * would_disable / active_before, 1) || '%',
      round(100 * p_max_disable_fraction, 1) || '%'
      USING ERRCODE = 'H2D83',
            HINT = 'a truncated export? check the file; to disable them all the same, run again with --force and a --ticket';
  END IF;

  UPDATE hms2fa.accounts a
     SET display_name = f.display_name, email = f.email, status = f.status, high_risk = f.high_risk
    FROM ONLY pg_temp.roster_feed f
   WHERE a.account_id = f.account_id
     AND (a.display_name, a.email, a.status, a.high_risk)
         IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk);
  GET DIAGNOSTICS changed = ROW_COUNT;

  INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk)
  SELECT f.account_id, f.display_name, f.email, f.status, f.high_risk
    FROM ONLY pg_temp.roster_feed f
   WHERE NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = f.account_id);
  GET DIAGNOSTICS added = ROW_COUNT;

  IF p_disable_missing THEN
    UPDATE hms2fa.accounts a
       SET status = 'disabled'
     WHERE a.status = 'active'
       AND NOT EXISTS (SELECT 1 FROM ONLY pg_temp.roster_feed f WHERE f.account_id = a.account_id);
    GET DIAGNOSTICS disabled = ROW_COUNT;
  END IF;
  unchanged := feed_rows - added - changed;

  event_id := hms2fa.audit('accounts.imported', NULL, p_ticket, NULL, jsonb_build_object(
    'source', p_source, 'rows', feed_rows, 'added', added, 'changed', changed,
    'disabled', disabled, 'unchanged', unchanged, 'disable_missing', p_disable_missing,
    'max_disable_fraction', p_max_disable_fraction, 'forced', over_limit));
END
$$;

-- What apply_roster would change, one row per account, in feed order (accounts to disable
-- last), at most p_limit rows. 'added' has the new values; 'changed' the fields that differ,
-- before (old_*) and after (NULL where a field stays as it is); 'disabled' the status.
CREATE FUNCTION hms2fa_api.roster_diff(p_disable_missing boolean, p_limit integer DEFAULT 1000)
RETURNS TABLE (change text, account_id text, line bigint,
               old_display_name text, display_name text, old_email text, email text,
               old_status text, status text, old_high_risk boolean, high_risk boolean)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET work_mem = '256MB'
AS $$
BEGIN
  PERFORM hms2fa.check_roster_feed();
  RETURN QUERY
    SELECT d.*
      FROM (
        SELECT CASE WHEN a.account_id IS NULL THEN 'added' ELSE 'changed' END,
               f.account_id, f.line,
               CASE WHEN a.display_name IS DISTINCT FROM f.display_name THEN a.display_name END,
               CASE WHEN a.display_name IS DISTINCT FROM f.display_name THEN f.display_name END,
               CASE WHEN a.email IS DISTINCT FROM f.email THEN a.email END,
               CASE WHEN a.email IS DISTINCT FROM f.email THEN f.email END,
               CASE WHEN a.status IS DISTINCT FROM f.status THEN a.status END,
               CASE WHEN a.status IS DISTINCT FROM f.status THEN f.status END,
               CASE WHEN a.high_risk IS DISTINCT FROM f.high_risk THEN a.high_risk END,
               CASE WHEN a.high_risk IS DISTINCT FROM f.high_risk THEN f.high_risk END
          FROM ONLY pg_temp.roster_feed f
          LEFT JOIN hms2fa.accounts a ON a.account_id = f.account_id
         WHERE a.account_id IS NULL
            OR (a.display_name, a.email, a.status, a.high_risk)
               IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk)
        UNION ALL
        SELECT 'disabled', a.account_id, NULL::bigint, NULL, NULL, NULL, NULL, a.status, 'disabled',
               NULL::boolean, NULL::boolean
          FROM hms2fa.accounts a
         WHERE p_disable_missing AND a.status = 'active'
           AND NOT EXISTS (SELECT 1 FROM ONLY pg_temp.roster_feed f WHERE f.account_id = a.account_id)
      ) d (change, account_id, line, old_display_name, display_name, old_email, email,
           old_status, status, old_high_risk, high_risk)
     ORDER BY d.line NULLS LAST, d.account_id
     LIMIT greatest(coalesce(p_limit, 1000), 0);
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.open_roster_feed() TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.apply_roster(boolean, numeric, boolean, boolean, text, text) TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.roster_diff(boolean, integer) TO hms2fa_batch;

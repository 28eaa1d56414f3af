-- Roster sync: the identity system's nightly export, loaded by a batch login. The client opens
-- a staging table for its transaction (whose constraints check every row again), COPYs the
-- feed into it, and calls apply_roster, which finds the changes in one pass, refuses a feed
-- that would disable too many accounts, and applies inserts, updates and (when asked)
-- disables, with one audit event; commit or rollback is the client's.

-- The staging table is made by hms2fa_owner in the caller's session; whoever migrates gives it
-- the TEMPORARY privilege in case PUBLIC's default was revoked (a warning, not an error, when
-- this login can't grant it).
DO $$
BEGIN
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO hms2fa_owner', current_database());
END
$$;

SET LOCAL ROLE hms2fa_owner;

--   H2U8x usage: no staging table, a bad option     H2D83 the feed would disable too many
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
  -- The tool checks every row before sending it; these constraints hold the same rules for
  -- a feed loaded with psql, and are checked while COPY streams (the server has time to spare
  -- while the client parses). Duplicate ids are caught by the key.
  CREATE TEMPORARY TABLE roster_feed (
    line         bigint NOT NULL,
    account_id   text PRIMARY KEY
                 CONSTRAINT account_id_normalised
                 CHECK (account_id ~ '^[a-z0-9][a-z0-9._-]*$' AND octet_length(account_id) <= 64),
    display_name text NOT NULL
                 CONSTRAINT display_name_printable
                 CHECK (btrim(display_name) <> '' AND display_name !~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]'),
    email        text NOT NULL
                 CONSTRAINT email_of_record
                 CHECK (octet_length(email) <= 254
                        AND email ~ '^[^@[:space:][:cntrl:]]+@([^@.A-Z[:space:][:cntrl:]]+\.)+[^@.A-Z[:space:][:cntrl:]]+$'),
    status       text NOT NULL CONSTRAINT status_known CHECK (status IN ('active', 'disabled')),
    high_risk    boolean NOT NULL
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

-- Applies the feed in pg_temp.roster_feed to hms2fa.accounts: inserts accounts that are new,
-- updates those whose name, email, status or high-risk flag differ (the feed's status is
-- authoritative, so a disabled account that comes back active is enabled again) and, with
-- p_disable_missing, disables active accounts the feed doesn't list. login_action and
-- created_at are never touched.
--
-- The rows were checked as they arrived (the staging table's constraints and key). The whole
-- feed is refused (nothing changes) when it would disable more than p_max_disable_fraction of
-- the active accounts (a truncated export must not lock out the school), unless p_force, which
-- needs a ticket. p_dry_run counts but changes nothing and writes no event; roster_diff then
-- lists what would change. Otherwise writes one accounts.imported event with the counts.
CREATE FUNCTION hms2fa_api.apply_roster(
  p_disable_missing boolean, p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean,
  p_source text, p_ticket text DEFAULT NULL,
  OUT feed_rows bigint, OUT added bigint, OUT changed bigint, OUT disabled bigint,
  OUT unchanged bigint, OUT active_before bigint, OUT would_disable bigint,
  OUT over_limit boolean, OUT event_id bigint
)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- A million-row feed is joined in memory rather than in temporary files.
  SET work_mem = '256MB'
AS $$
DECLARE
  v_feed_disables bigint;
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

  -- One pass over feed and registry: every account that would be added, changed or disabled,
  -- with its old and new values. Unchanged accounts (most, on a normal night) are not kept.
  IF to_regclass('pg_temp.roster_changes') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_changes;
  END IF;
  CREATE TEMPORARY TABLE roster_changes ON COMMIT DROP AS
    SELECT CASE WHEN a.account_id IS NULL THEN 'added'
                WHEN f.account_id IS NULL THEN 'disabled'
                ELSE 'changed' END AS change,
           coalesce(f.account_id, a.account_id) AS account_id, f.line,
           a.display_name AS old_display_name, f.display_name,
           a.email AS old_email, f.email,
           a.status AS old_status, coalesce(f.status, 'disabled') AS status,
           a.high_risk AS old_high_risk, f.high_risk
      FROM ONLY pg_temp.roster_feed f
      FULL JOIN hms2fa.accounts a ON a.account_id = f.account_id
     WHERE a.account_id IS NULL
        OR (f.account_id IS NULL AND p_disable_missing AND a.status = 'active')
        OR (f.account_id IS NOT NULL
            AND (a.display_name, a.email, a.status, a.high_risk)
                IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk));
  ANALYZE pg_temp.roster_changes;

  SELECT count(*) INTO feed_rows FROM ONLY pg_temp.roster_feed;
  SELECT count(*) INTO active_before FROM hms2fa.accounts a WHERE a.status = 'active';
  SELECT count(*) FILTER (WHERE c.change = 'added'),
         count(*) FILTER (WHERE c.change = 'changed'),
         count(*) FILTER (WHERE c.change = 'disabled'),
         count(*) FILTER (WHERE c.change = 'changed' AND c.old_status = 'active' AND c.status = 'disabled')
    INTO added, changed, disabled, v_feed_disables
    FROM pg_temp.roster_changes c;
  unchanged := feed_rows - added - changed;
  would_disable := disabled + v_feed_disables;
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

  -- Each statement runs only when there is something to do, and the inserts come last: a
  -- registry's statistics can say it is empty while it holds a million rows (truncated and
  -- analyzed, then refilled by the insert below), and a join planned on that would crawl.
  IF changed > 0 THEN
    UPDATE hms2fa.accounts a
       SET display_name = c.display_name, email = c.email, status = c.status, high_risk = c.high_risk
      FROM pg_temp.roster_changes c
     WHERE c.change = 'changed' AND a.account_id = c.account_id;
    GET DIAGNOSTICS changed = ROW_COUNT;
  END IF;

  IF disabled > 0 THEN
    UPDATE hms2fa.accounts a
       SET status = 'disabled'
      FROM pg_temp.roster_changes c
     WHERE c.change = 'disabled' AND a.account_id = c.account_id AND a.status = 'active';
    GET DIAGNOSTICS disabled = ROW_COUNT;
  END IF;

  IF added > 0 THEN
    INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk)
    SELECT c.account_id, c.display_name, c.email, c.status, c.high_risk
      FROM pg_temp.roster_changes c
     WHERE c.change = 'added'
    ON CONFLICT (account_id) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
  END IF;
  unchanged := feed_rows - added - changed;

  event_id := hms2fa.audit('accounts.imported', NULL, p_ticket, NULL, jsonb_build_object(
    'source', p_source, 'rows', feed_rows, 'added', added, 'changed', changed,
    'disabled', disabled, 'unchanged', unchanged, 'disable_missing', p_disable_missing,
    'max_disable_fraction', p_max_disable_fraction, 'forced', over_limit));
END
$$;

-- What apply_roster found to change (call it first, with p_dry_run), one row per account in
-- feed order (accounts to disable last), at most p_limit rows. 'added' has the new values;
-- 'changed' the fields that differ, before (old_*) and after (NULL where a field stays as it
-- is); 'disabled' the status.
CREATE FUNCTION hms2fa_api.roster_diff(p_limit integer DEFAULT 1000)
RETURNS TABLE (change text, account_id text, line bigint,
               old_display_name text, display_name text, old_email text, email text,
               old_status text, status text, old_high_risk boolean, high_risk boolean)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_class t
        WHERE t.oid = to_regclass('pg_temp.roster_changes') AND t.relkind = 'r'
          AND t.relowner = 'hms2fa_owner'::regrole) THEN
    RAISE EXCEPTION 'no roster changes in this transaction'
      USING ERRCODE = 'H2U85', HINT = 'call hms2fa_api.apply_roster first (with p_dry_run => true)';
  END IF;
  RETURN QUERY
    SELECT c.change, c.account_id, c.line,
           CASE WHEN c.change = 'changed' AND c.old_display_name IS DISTINCT FROM c.display_name
                THEN c.old_display_name END,
           CASE WHEN c.change = 'added' OR (c.change = 'changed' AND c.old_display_name IS DISTINCT FROM c.display_name)
                THEN c.display_name END,
           CASE WHEN c.change = 'changed' AND c.old_email IS DISTINCT FROM c.email THEN c.old_email END,
           CASE WHEN c.change = 'added' OR (c.change = 'changed' AND c.old_email IS DISTINCT FROM c.email)
                THEN c.email END,
           CASE WHEN c.change <> 'added' AND c.old_status IS DISTINCT FROM c.status THEN c.old_status END,
           CASE WHEN c.change = 'added' OR c.old_status IS DISTINCT FROM c.status THEN c.status END,
           CASE WHEN c.change = 'changed' AND c.old_high_risk IS DISTINCT FROM c.high_risk
                THEN c.old_high_risk END,
           CASE WHEN c.change = 'added' OR (c.change = 'changed' AND c.old_high_risk IS DISTINCT FROM c.high_risk)
                THEN c.high_risk END
      FROM pg_temp.roster_changes c
     ORDER BY c.line NULLS LAST, c.account_id
     LIMIT greatest(coalesce(p_limit, 1000), 0);
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.open_roster_feed() TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.apply_roster(boolean, numeric, boolean, boolean, text, text) TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.roster_diff(integer) TO hms2fa_batch;

-- Roster sync by difference. A nightly export lists every account, and nearly all of them as the
-- registry already holds them; 0008 had the client send all of them and the server compare them
-- all, so a million-row import took about seven times as long as loading the file with psql.
-- Now the client reads the registry's roster first (hms2fa_api.roster_accounts), recognises the
-- rows that match an account exactly, and sends only the others (new, changed, or written
-- differently) to pg_temp.roster_feed, with the accounts the feed doesn't list in
-- pg_temp.roster_absent. apply_roster_delta checks that the three parts (unchanged, sent, absent)
-- cover every account exactly once, then changes what apply_roster would have changed, refuses
-- what it would have refused, and writes the same audit event.
--
-- apply_roster (a whole feed, loaded with psql) keeps its behaviour; both now share the checks of
-- their options and everything after "what changes" is known. The two bodies are restated here
-- whole: CREATE OR REPLACE needs them so.

SET LOCAL ROLE hms2fa_owner;

--   H2U86 the parts of a delta don't add up     H2U87 a delta outside REPEATABLE READ

-- The fields a feed sets, of every account: what an import compares its feed with. The batch
-- login, which supplies the roster, may read it; nothing else of the registry.
CREATE VIEW hms2fa_api.roster_accounts AS
  SELECT account_id, display_name, email, status, high_risk FROM hms2fa.accounts;
GRANT SELECT ON hms2fa_api.roster_accounts TO hms2fa_batch;

-- Refuses bad options of an import; shared by apply_roster and apply_roster_delta.
CREATE FUNCTION hms2fa.check_roster_options(
  p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean, p_ticket text
) RETURNS void
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
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
END
$$;

-- Takes the import's lock for the transaction, or raises: one import at a time.
CREATE FUNCTION hms2fa.lock_roster() RETURNS void
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(29393739112145160) THEN
    RAISE EXCEPTION 'another roster import is running' USING ERRCODE = 'H2R81',
      HINT = 'try again when it has finished';
  END IF;
END
$$;

-- Counts, checks against the disable limit and applies pg_temp.roster_changes (one row per
-- account added, changed or disabled, with old and new values), then writes the accounts.imported
-- event: 0016's apply_roster from the moment it knew what changes. p_feed_rows is the number of
-- rows in the feed, p_active_before the number of active accounts before the import.
CREATE FUNCTION hms2fa.apply_roster_changes(
  p_feed_rows bigint, p_active_before bigint,
  p_disable_missing boolean, p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean,
  p_source text, p_ticket text,
  OUT feed_rows bigint, OUT added bigint, OUT changed bigint, OUT disabled bigint,
  OUT unchanged bigint, OUT active_before bigint, OUT would_disable bigint,
  OUT over_limit boolean, OUT event_id bigint
)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_feed_disables bigint;
  v_emails_changed bigint;
  v_email_changes jsonb;
  v_risk_lowered bigint;
  v_risk_lowered_ids jsonb;
  v_enabled bigint;
  v_enabled_ids jsonb;
BEGIN
  feed_rows := p_feed_rows;
  active_before := p_active_before;
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

  -- The changes that decide where a link goes and what a reset needs, account by account
  -- (at most 1 000 of each listed, all counted): emails of record changed, high-risk flags
  -- taken away, disabled accounts enabled again.
  SELECT count(*) FILTER (WHERE c.old_email IS DISTINCT FROM c.email),
         coalesce(jsonb_agg(jsonb_build_object('account_id', c.account_id, 'from', c.old_email, 'to', c.email)
                            ORDER BY c.account_id) FILTER (WHERE c.old_email IS DISTINCT FROM c.email AND c.n_email <= 1000),
                  '[]'),
         count(*) FILTER (WHERE c.old_high_risk AND NOT c.high_risk),
         coalesce(jsonb_agg(c.account_id ORDER BY c.account_id) FILTER (WHERE c.old_high_risk AND NOT c.high_risk AND c.n_risk <= 1000),
                  '[]'),
         count(*) FILTER (WHERE c.old_status = 'disabled' AND c.status = 'active'),
         coalesce(jsonb_agg(c.account_id ORDER BY c.account_id) FILTER (WHERE c.old_status = 'disabled' AND c.status = 'active' AND c.n_enabled <= 1000),
                  '[]')
    INTO v_emails_changed, v_email_changes, v_risk_lowered, v_risk_lowered_ids, v_enabled, v_enabled_ids
    FROM (SELECT r.*,
                 count(*) FILTER (WHERE r.old_email IS DISTINCT FROM r.email) OVER w AS n_email,
                 count(*) FILTER (WHERE r.old_high_risk AND NOT r.high_risk) OVER w AS n_risk,
                 count(*) FILTER (WHERE r.old_status = 'disabled' AND r.status = 'active') OVER w AS n_enabled
            FROM pg_temp.roster_changes r
           WHERE r.change = 'changed'
          WINDOW w AS (ORDER BY r.account_id)) c;

  event_id := hms2fa.audit('accounts.imported', NULL, p_ticket, NULL, jsonb_build_object(
    'source', p_source, 'rows', feed_rows, 'added', added, 'changed', changed,
    'disabled', disabled, 'unchanged', unchanged, 'disable_missing', p_disable_missing,
    'max_disable_fraction', p_max_disable_fraction, 'forced', over_limit,
    'emails_changed', v_emails_changed, 'email_changes', v_email_changes,
    'high_risk_lowered', v_risk_lowered, 'high_risk_lowered_accounts', v_risk_lowered_ids,
    'enabled_again', v_enabled, 'enabled_again_accounts', v_enabled_ids));
END
$$;

-- 0016's apply_roster: the whole feed in pg_temp.roster_feed, compared with the registry here.
CREATE OR REPLACE FUNCTION hms2fa_api.apply_roster(
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
  v_rows bigint;
  v_active bigint;
BEGIN
  PERFORM hms2fa.check_roster_options(p_max_disable_fraction, p_force, p_dry_run, p_ticket);
  PERFORM hms2fa.check_roster_feed();
  PERFORM hms2fa.lock_roster();

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

  SELECT count(*) INTO v_rows FROM ONLY pg_temp.roster_feed;
  SELECT count(*) INTO v_active FROM hms2fa.accounts a WHERE a.status = 'active';
  SELECT * INTO feed_rows, added, changed, disabled, unchanged, active_before, would_disable, over_limit, event_id
    FROM hms2fa.apply_roster_changes(v_rows, v_active, p_disable_missing, p_max_disable_fraction, p_force,
                                     p_dry_run, p_source, p_ticket);
END
$$;

-- Opens the staging tables of an import by difference, for this transaction: pg_temp.roster_feed
-- (open_roster_feed's) for the feed's rows that don't match an account exactly, and
-- pg_temp.roster_absent for the accounts the feed doesn't list; and pg_temp.roster_registry, for
-- count_roster, which the caller can't write. Takes the import's lock now, so that a second
-- import stops before it reads the roster.
CREATE FUNCTION hms2fa_api.open_roster_delta() RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM hms2fa.lock_roster();
  PERFORM hms2fa_api.open_roster_feed();
  IF to_regclass('pg_temp.roster_absent') IS NOT NULL OR to_regclass('pg_temp.roster_registry') IS NOT NULL THEN
    RAISE EXCEPTION 'this session already has a table pg_temp.roster_absent or pg_temp.roster_registry'
      USING ERRCODE = 'H2U81', HINT = 'run the import in a new transaction';
  END IF;
  CREATE TEMPORARY TABLE roster_absent (
    account_id text PRIMARY KEY
  ) ON COMMIT DROP;
  EXECUTE format('GRANT INSERT ON TABLE pg_temp.roster_absent TO %I', session_user);
  CREATE TEMPORARY TABLE roster_registry (
    accounts bigint NOT NULL,
    active   bigint NOT NULL
  ) ON COMMIT DROP;
END
$$;

-- Raises unless pg_temp.roster_absent and pg_temp.roster_registry are the tables
-- open_roster_delta made.
CREATE FUNCTION hms2fa.check_roster_delta() RETURNS void
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF (SELECT count(*) FROM pg_catalog.pg_class c
       WHERE c.oid IN (to_regclass('pg_temp.roster_absent'), to_regclass('pg_temp.roster_registry'))
         AND c.relkind = 'r' AND c.relpersistence = 't' AND c.relowner = 'hms2fa_owner'::regrole) <> 2 THEN
    RAISE EXCEPTION 'no import by difference open in this transaction'
      USING ERRCODE = 'H2U82', HINT = 'call hms2fa_api.open_roster_delta() first, in the same transaction';
  END IF;
END
$$;

-- Counts the accounts, and the active ones, into pg_temp.roster_registry, where
-- apply_roster_delta finds them (it counts them itself otherwise). In the import's REPEATABLE
-- READ snapshot these are the counts of the roster the client read and of the registry the
-- import changes, whenever they are taken; the tool has them taken while it is still
-- recognising records, so that the full scan costs the import nothing.
CREATE FUNCTION hms2fa_api.count_roster() RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM hms2fa.check_roster_delta();
  DELETE FROM pg_temp.roster_registry;
  INSERT INTO pg_temp.roster_registry (accounts, active)
    SELECT count(*), count(*) FILTER (WHERE a.status = 'active') FROM hms2fa.accounts a;
END
$$;

-- Applies a feed given by difference: p_unchanged rows that match an account exactly (not sent),
-- the others in pg_temp.roster_feed, the accounts the feed doesn't list in pg_temp.roster_absent.
-- Every account must be in exactly one of the three, as this transaction's snapshot sees it (so
-- the roster must have been read in the same REPEATABLE READ transaction); otherwise nothing is
-- applied. Options, counts, refusals and the audit event are apply_roster's.
CREATE FUNCTION hms2fa_api.apply_roster_delta(
  p_unchanged bigint,
  p_disable_missing boolean, p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean,
  p_source text, p_ticket text DEFAULT NULL,
  OUT feed_rows bigint, OUT added bigint, OUT changed bigint, OUT disabled bigint,
  OUT unchanged bigint, OUT active_before bigint, OUT would_disable bigint,
  OUT over_limit boolean, OUT event_id bigint
)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET work_mem = '256MB'
  -- A nightly delta is a few thousand rows, best joined with the registry through its key, row
  -- by row; at the default cost of a random page the planner scans all the accounts instead, at
  -- ten times the time. The registry's pages are in memory, where a random read costs little
  -- more than a sequential one. (A delta of most of the registry is still hashed.)
  SET random_page_cost = 1.1
AS $$
DECLARE
  v_accounts bigint;
  v_active bigint;
  v_sent bigint;
  v_listed bigint;
  v_absent bigint;
  v_absent_known bigint;
BEGIN
  PERFORM hms2fa.check_roster_options(p_max_disable_fraction, p_force, p_dry_run, p_ticket);
  PERFORM hms2fa.check_roster_feed();
  PERFORM hms2fa.check_roster_delta();
  IF current_setting('transaction_isolation') NOT IN ('repeatable read', 'serializable') THEN
    RAISE EXCEPTION 'an import by difference must read the roster and apply the feed in one snapshot'
      USING ERRCODE = 'H2U87', HINT = 'BEGIN ISOLATION LEVEL REPEATABLE READ';
  END IF;
  PERFORM hms2fa.lock_roster();

  IF NOT EXISTS (SELECT 1 FROM pg_temp.roster_registry) THEN
    PERFORM hms2fa_api.count_roster();
  END IF;
  SELECT r.accounts, r.active INTO STRICT v_accounts, v_active FROM pg_temp.roster_registry r;
  -- The rows sent, each beside its account as it stands (none for a new one): looked up once,
  -- by key, for the check below and for the changes.
  IF to_regclass('pg_temp.roster_compared') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_compared;
  END IF;
  CREATE TEMPORARY TABLE roster_compared ON COMMIT DROP AS
    SELECT f.account_id, f.line, f.display_name, f.email, f.status, f.high_risk,
           a.account_id IS NOT NULL AS known,
           a.display_name AS old_display_name, a.email AS old_email, a.status AS old_status,
           a.high_risk AS old_high_risk
      FROM ONLY pg_temp.roster_feed f
      LEFT JOIN hms2fa.accounts a ON a.account_id = f.account_id;
  SELECT count(*), count(*) FILTER (WHERE c.known) INTO v_sent, v_listed FROM pg_temp.roster_compared c;
  SELECT count(*), count(a.account_id) INTO v_absent, v_absent_known
    FROM ONLY pg_temp.roster_absent x LEFT JOIN hms2fa.accounts a ON a.account_id = x.account_id;
  IF p_unchanged IS NULL OR p_unchanged < 0 OR v_absent_known <> v_absent
     OR p_unchanged + v_listed + v_absent <> v_accounts
     OR EXISTS (SELECT 1 FROM ONLY pg_temp.roster_absent x JOIN ONLY pg_temp.roster_feed f USING (account_id)) THEN
    RAISE EXCEPTION 'the delta does not cover every account exactly once: % unchanged, % sent that exist, % absent (% of them unknown), % accounts',
      p_unchanged, v_listed, v_absent, v_absent - v_absent_known, v_accounts
      USING ERRCODE = 'H2U86', HINT = 'read hms2fa_api.roster_accounts again, in this transaction';
  END IF;

  IF to_regclass('pg_temp.roster_changes') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_changes;
  END IF;
  CREATE TEMPORARY TABLE roster_changes ON COMMIT DROP AS
    SELECT CASE WHEN c.known THEN 'changed' ELSE 'added' END AS change,
           c.account_id, c.line, c.old_display_name, c.display_name, c.old_email, c.email,
           c.old_status, c.status, c.old_high_risk, c.high_risk
      FROM pg_temp.roster_compared c
     WHERE NOT c.known
        OR (c.old_display_name, c.old_email, c.old_status, c.old_high_risk)
           IS DISTINCT FROM (c.display_name, c.email, c.status, c.high_risk)
    UNION ALL
    SELECT 'disabled', a.account_id, NULL::bigint,
           a.display_name, NULL::text, a.email, NULL::text, a.status, 'disabled', a.high_risk, NULL::boolean
      FROM ONLY pg_temp.roster_absent x
      JOIN hms2fa.accounts a ON a.account_id = x.account_id
     WHERE p_disable_missing AND a.status = 'active';
  ANALYZE pg_temp.roster_changes;

  SELECT * INTO feed_rows, added, changed, disabled, unchanged, active_before, would_disable, over_limit, event_id
    FROM hms2fa.apply_roster_changes(p_unchanged + v_sent, v_active, p_disable_missing, p_max_disable_fraction,
                                     p_force, p_dry_run, p_source, p_ticket);
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.open_roster_delta(), hms2fa_api.count_roster() TO hms2fa_batch;
GRANT EXECUTE ON FUNCTION hms2fa_api.apply_roster_delta(bigint, boolean, numeric, boolean, boolean, text, text)
  TO hms2fa_batch;

-- Faster first loads. A roster import's new accounts went in with ON CONFLICT (account_id) DO
-- NOTHING, and apply_roster_delta wrote every row sent twice (beside its account, then again
-- if it changed). On a first load of a million accounts the speculative insertion, which a
-- transaction snapshot can't use anyway, took 3.3 s of the insert's 9.4 s, and the second copy
-- about 0.6 s. And accounts are now updated in the key's order, not the feed's. Behaviour is
-- unchanged, but for one message: an account another session adds while an import by
-- difference runs now stops the import with "added by another session" (a serialization
-- failure, as before: "try again").

SET LOCAL ROLE hms2fa_owner;

CREATE OR REPLACE FUNCTION hms2fa.apply_roster_changes(
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
    -- In the key's order: the feed's may be any, and the registry's pages and indexes are then
    -- visited back and forth (10 000 renames of a million: 0.40 s unsorted, 0.35 s sorted).
    UPDATE hms2fa.accounts a
       SET display_name = c.display_name, email = c.email, status = c.status, high_risk = c.high_risk
      FROM (SELECT * FROM pg_temp.roster_changes r WHERE r.change = 'changed' ORDER BY r.account_id) c
     WHERE a.account_id = c.account_id;
    GET DIAGNOSTICS changed = ROW_COUNT;
  END IF;

  IF disabled > 0 THEN
    UPDATE hms2fa.accounts a
       SET status = 'disabled'
      FROM (SELECT * FROM pg_temp.roster_changes r WHERE r.change = 'disabled' ORDER BY r.account_id) c
     WHERE a.account_id = c.account_id AND a.status = 'active';
    GET DIAGNOSTICS disabled = ROW_COUNT;
  END IF;

  -- In a transaction snapshot (an import by difference, always) an account another session
  -- added after the snapshot can't be passed over: ON CONFLICT DO NOTHING raises a serialization
  -- failure for it all the same, after a speculative insertion of every row (a third of the
  -- time of a million-row first load). So a plain insert, and the clash, should it come, said in
  -- words. In READ COMMITTED (apply_roster, a feed loaded with psql) such an account is left as
  -- the other session added it.
  -- New accounts go in in the feed's order, not sorted by account id: the registry then holds
  -- them in the order the identity system exports them, and the next import reads its roster in
  -- that order and recognises the export's records one after the other. (Sorted, a first load
  -- of a feed in another order is faster, 13 s against 18 s for a million, but every nightly
  -- import after it looks each record up at random: 1.6 s against 1.0 s.)
  IF added > 0 THEN
    IF current_setting('transaction_isolation') = 'read committed' THEN
      INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk)
      SELECT c.account_id, c.display_name, c.email, c.status, c.high_risk
        FROM pg_temp.roster_changes c
       WHERE c.change = 'added'
      ON CONFLICT (account_id) DO NOTHING;
      GET DIAGNOSTICS added = ROW_COUNT;
    ELSE
      BEGIN
        INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk)
        SELECT c.account_id, c.display_name, c.email, c.status, c.high_risk
          FROM pg_temp.roster_changes c
         WHERE c.change = 'added';
        GET DIAGNOSTICS added = ROW_COUNT;
      EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'an account the feed adds was added by another session during the import; nothing was imported'
          USING ERRCODE = '40001', HINT = 'run the import again';
      END;
    END IF;
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

CREATE OR REPLACE FUNCTION hms2fa_api.apply_roster_delta(
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
  -- What changes, in one pass: the rows sent that are new or differ from their account (looked
  -- up by key), and with --disable-missing the absent accounts still active. The rows sent that
  -- differ only in how the feed wrote them are not kept. (0021 first kept every row sent beside
  -- its account, then filtered that: a million rows written twice on a first load.)
  IF to_regclass('pg_temp.roster_changes') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_changes;
  END IF;
  CREATE TEMPORARY TABLE roster_changes ON COMMIT DROP AS
    SELECT CASE WHEN a.account_id IS NULL THEN 'added' ELSE 'changed' END AS change,
           f.account_id, f.line, a.display_name AS old_display_name, f.display_name,
           a.email AS old_email, f.email, a.status AS old_status, f.status,
           a.high_risk AS old_high_risk, f.high_risk
      FROM ONLY pg_temp.roster_feed f
      LEFT JOIN hms2fa.accounts a ON a.account_id = f.account_id
     WHERE a.account_id IS NULL
        OR (a.display_name, a.email, a.status, a.high_risk)
           IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk)
    UNION ALL
    SELECT 'disabled', a.account_id, NULL::bigint,
           a.display_name, NULL::text, a.email, NULL::text, a.status, 'disabled', a.high_risk, NULL::boolean
      FROM ONLY pg_temp.roster_absent x
      JOIN hms2fa.accounts a ON a.account_id = x.account_id
     WHERE p_disable_missing AND a.status = 'active';
  ANALYZE pg_temp.roster_changes;

  -- Every row sent is an account's (listed) or a new one (added, above).
  SELECT count(*) INTO v_sent FROM ONLY pg_temp.roster_feed;
  SELECT v_sent - count(*) INTO v_listed FROM pg_temp.roster_changes c WHERE c.change = 'added';
  SELECT count(*), count(a.account_id) INTO v_absent, v_absent_known
    FROM ONLY pg_temp.roster_absent x LEFT JOIN hms2fa.accounts a ON a.account_id = x.account_id;
  IF p_unchanged IS NULL OR p_unchanged < 0 OR v_absent_known <> v_absent
     OR p_unchanged + v_listed + v_absent <> v_accounts
     OR EXISTS (SELECT 1 FROM ONLY pg_temp.roster_absent x JOIN ONLY pg_temp.roster_feed f USING (account_id)) THEN
    RAISE EXCEPTION 'the delta does not cover every account exactly once: % unchanged, % sent that exist, % absent (% of them unknown), % accounts',
      p_unchanged, v_listed, v_absent, v_absent - v_absent_known, v_accounts
      USING ERRCODE = 'H2U86', HINT = 'read hms2fa_api.roster_accounts again, in this transaction';
  END IF;

  SELECT * INTO feed_rows, added, changed, disabled, unchanged, active_before, would_disable, over_limit, event_id
    FROM hms2fa.apply_roster_changes(p_unchanged + v_sent, v_active, p_disable_missing, p_max_disable_fraction,
                                     p_force, p_dry_run, p_source, p_ticket);
END
$$;

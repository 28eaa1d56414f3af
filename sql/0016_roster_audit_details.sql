-- The roster import's audit event says who, not just how many. 0008's accounts.imported event
-- held counts only, so a feed that moved someone's email of record to another address (where
-- activation links and reset notices then go), took away a high-risk flag (so a reset of that
-- person no longer needs a second agent) or enabled a disabled account left no trace of which
-- account it was. The event (still one per run) now lists, account by account, every email of
-- record changed (from, to), every high-risk flag taken away and every account enabled again: at
-- most 1 000 of each, with the full counts beside them, so a feed that changes everyone can't
-- make the event unbounded. apply_roster is otherwise 0008's, restated whole.

SET LOCAL ROLE hms2fa_owner;

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
  v_feed_disables bigint;
  v_emails_changed bigint;
  v_email_changes jsonb;
  v_risk_lowered bigint;
  v_risk_lowered_ids jsonb;
  v_enabled bigint;
  v_enabled_ids jsonb;
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.apply_roster(boolean, numeric, boolean, boolean, text, text) TO hms2fa_batch;

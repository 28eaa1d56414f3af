-- The roster import: the identity system's nightly export, parsed by the server's CSV parser
-- (COPY … FORMAT csv) into a staging table and checked and applied in SQL, in one transaction.
-- Serves hms2fa_batch.
--
--   H2U81 a staging table already exists    H2U82 no import open    H2U83, H2U84 bad options
--   H2U85 no changes to list                 H2R81 another import holds the lock
--   H2D80 the feed is malformed or invalid   H2D83 the feed would disable too many

SET LOCAL ROLE hms2fa_owner;

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
-- account added, changed or disabled, with old and new values), then writes the
-- accounts.imported event with the changes that decide where a link goes and what a reset
-- needs. p_feed_rows is the number of rows in the feed, p_active_before the number of active
-- accounts before the import.
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

  -- A plain insert: ON CONFLICT DO NOTHING would first insert every row speculatively (a
  -- third of a million-row first load's time) to pass over accounts another session added
  -- during the import, which hardly ever happens. Should it happen, the import is stopped with
  -- a serialization failure and the tool sends the file again, when the join sees that account.
  IF added > 0 THEN
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

-- Opens this transaction's staging table, pg_temp.roster_raw, and takes the import's lock (a
-- second import stops here, before it sends its file). The file goes in whole, header first,
-- as five text fields a record:
--   COPY pg_temp.roster_raw (f1, f2, f3, f4, f5) FROM STDIN (FORMAT csv)
-- record numbers each record in the order COPY read it (1 is the header). The table belongs to
-- hms2fa_owner and the caller may only INSERT into it: a table the caller owned could carry
-- rules, triggers or row security that import_roster would run with the owner's rights. Dropped
-- at commit or rollback.
CREATE FUNCTION hms2fa_api.open_roster_import() RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM hms2fa.lock_roster();
  IF to_regclass('pg_temp.roster_raw') IS NOT NULL THEN
    RAISE EXCEPTION 'this session already has a table pg_temp.roster_raw'
      USING ERRCODE = 'H2U81', HINT = 'run the import in a new transaction';
  END IF;
  CREATE TEMPORARY TABLE roster_raw (
    record bigint GENERATED ALWAYS AS IDENTITY,
    f1 text, f2 text, f3 text, f4 text, f5 text
  ) ON COMMIT DROP;
  EXECUTE format('GRANT INSERT ON TABLE pg_temp.roster_raw TO %I', session_user);
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.open_roster_import() TO hms2fa_batch;

-- The line of the file that record p_record starts on: its record number, plus the line breaks
-- inside the quoted display names before it (the only field of a valid row that may hold one),
-- which import_roster notes in pg_temp.roster_breaks.
CREATE FUNCTION hms2fa.roster_line(p_record bigint) RETURNS bigint
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN p_record + coalesce((SELECT sum(b.breaks) FROM pg_temp.roster_breaks b WHERE b.record < p_record), 0);
END
$$;

-- Applies the file COPYed into pg_temp.roster_raw to hms2fa.accounts, or with p_dry_run only
-- counts (roster_diff then lists the changes). The feed:
--   * a header naming account_id, display_name, email, status and high_risk, each once, in any
--     order (spaces around a name and a UTF-8 byte order mark are ignored);
--   * account ids trimmed, lowercased and checked (letters, digits, '.', '_', '-', starting with
--     a letter or digit, at most 64 bytes), each listed once;
--   * names trimmed and not empty, without control characters but tab and line breaks;
--   * emails trimmed, one address under hms2fa.is_email_address, the domain lowercased;
--   * status active or disabled, high_risk true/t/yes/y/1 or false/f/no/n/0 (any case, trimmed);
--     an empty flag is refused, since a missing flag must not lower anyone's protection.
-- The first problem, by line, refuses the whole feed (H2D80: line, column, what is wrong) and
-- nothing changes. Otherwise new accounts are added, those whose name, email, status or flag
-- differ are updated (the feed's status is authoritative: a disabled account listed as active
-- is enabled again), and with p_disable_missing active accounts the feed doesn't list are
-- disabled; login_action and created_at are never touched. A feed that would disable more than
-- p_max_disable_fraction of the active accounts is refused unless p_force, which needs a ticket.
-- One accounts.imported event records the counts (apply_roster_changes).
CREATE FUNCTION hms2fa_api.import_roster(
  p_disable_missing boolean, p_max_disable_fraction numeric, p_force boolean, p_dry_run boolean,
  p_source text, p_ticket text DEFAULT NULL,
  OUT feed_rows bigint, OUT added bigint, OUT changed bigint, OUT disabled bigint,
  OUT unchanged bigint, OUT active_before bigint, OUT would_disable bigint,
  OUT over_limit boolean, OUT event_id bigint
)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- A million-row feed is hashed and joined in memory rather than in temporary files.
  SET work_mem = '256MB'
AS $$
DECLARE
  c_columns CONSTANT text[] := ARRAY['account_id', 'display_name', 'email', 'status', 'high_risk'];
  c_header CONSTANT text := 'account_id,display_name,email,status,high_risk';
  v_header text[];
  v_name text;
  v_field integer[] := ARRAY[NULL, NULL, NULL, NULL, NULL]::integer[];
  v_column integer;
  v_record bigint;
  v_repeat bigint;
  v_problem text;
  v_value text;
  v_shown text;
  v_id text;
  v_first bigint;
  v_active bigint;
BEGIN
  PERFORM hms2fa.check_roster_options(p_max_disable_fraction, p_force, p_dry_run, p_ticket);
  IF NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_class c
        WHERE c.oid = to_regclass('pg_temp.roster_raw') AND c.relkind = 'r'
          AND c.relpersistence = 't' AND c.relowner = 'hms2fa_owner'::regrole) THEN
    RAISE EXCEPTION 'no roster import open in this transaction'
      USING ERRCODE = 'H2U82',
            HINT = 'call hms2fa_api.open_roster_import(), then COPY pg_temp.roster_raw (f1, f2, f3, f4, f5) FROM STDIN (FORMAT csv), in one transaction';
  END IF;
  PERFORM hms2fa.lock_roster();

  -- The header: which field holds which column.
  SELECT ARRAY[r.f1, r.f2, r.f3, r.f4, r.f5] INTO v_header FROM ONLY pg_temp.roster_raw r WHERE r.record = 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the file is empty: its first line must be the header %', c_header USING ERRCODE = 'H2D80',
      HINT = 'nothing was imported';
  END IF;
  FOR i IN 1..5 LOOP
    v_name := lower(btrim(coalesce(v_header[i], ''), E' \t'));
    IF i = 1 THEN
      v_name := ltrim(v_name, U&'\FEFF');
    END IF;
    v_column := array_position(c_columns, v_name);
    IF v_column IS NULL THEN
      RAISE EXCEPTION 'line 1, column %: % is not a column of the feed; the header is % (in any order)',
        i, quote_literal(left(regexp_replace(coalesce(v_header[i], ''), '[[:cntrl:]]', '?', 'g'), 40)), c_header
        USING ERRCODE = 'H2D80', HINT = 'nothing was imported';
    ELSIF v_field[v_column] IS NOT NULL THEN
      RAISE EXCEPTION 'line 1, column %: % appears twice in the header', i, v_name
        USING ERRCODE = 'H2D80', HINT = 'nothing was imported';
    END IF;
    v_field[v_column] := i;
  END LOOP;

  -- Every row, normalised. Only the five field names f1..f5 are put into the statement's text.
  -- A domain is lowercased only in a text with one '@' (the rule refuses any other, and
  -- lowercasing never makes an address of a text that isn't one).
  IF to_regclass('pg_temp.roster_feed') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_feed;
  END IF;
  EXECUTE format($q$
    CREATE TEMPORARY TABLE roster_feed ON COMMIT DROP AS
    SELECT r.record,
           lower(btrim(coalesce(r.f%1$s, ''), E' \t\r\n')) AS account_id,
           btrim(coalesce(r.f%2$s, ''), E' \t\r\n') AS display_name,
           CASE WHEN btrim(coalesce(r.f%3$s, ''), E' \t\r\n') ~ '^[^@]*@[^@]*[A-Z][^@]*$'
                THEN split_part(btrim(r.f%3$s, E' \t\r\n'), '@', 1) || '@'
                     || lower(split_part(btrim(r.f%3$s, E' \t\r\n'), '@', 2))
                ELSE btrim(coalesce(r.f%3$s, ''), E' \t\r\n') END AS email,
           lower(btrim(coalesce(r.f%4$s, ''), E' \t\r\n')) AS status,
           CASE lower(btrim(coalesce(r.f%5$s, ''), E' \t\r\n'))
             WHEN 'true' THEN true WHEN 't' THEN true WHEN 'yes' THEN true WHEN 'y' THEN true WHEN '1' THEN true
             WHEN 'false' THEN false WHEN 'f' THEN false WHEN 'no' THEN false WHEN 'n' THEN false WHEN '0' THEN false
           END AS high_risk,
           CASE WHEN strpos(r.f%2$s, E'\n') > 0
                THEN length(r.f%2$s) - length(replace(r.f%2$s, E'\n', '')) ELSE 0 END AS breaks
      FROM ONLY pg_temp.roster_raw r
     WHERE r.record > 1
    $q$, v_field[1], v_field[2], v_field[3], v_field[4], v_field[5]);

  -- Line breaks inside names, to tell lines from records (nearly always none).
  IF to_regclass('pg_temp.roster_breaks') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_breaks;
  END IF;
  CREATE TEMPORARY TABLE roster_breaks ON COMMIT DROP AS
    SELECT f.record, f.breaks FROM pg_temp.roster_feed f WHERE f.breaks > 0;

  -- One pass over feed and registry: every account that would be added, changed or disabled,
  -- with its old and new values, and for a row of the feed the first of its columns that breaks
  -- the feed's rules. Unchanged accounts (most, on a normal night) are not kept. Only these rows
  -- need checking: a row exactly like an account the registry holds passes every rule (the
  -- registry's own constraints), and a row that breaks one is never like any account.
  IF to_regclass('pg_temp.roster_changes') IS NOT NULL THEN
    DROP TABLE pg_temp.roster_changes;
  END IF;
  CREATE TEMPORARY TABLE roster_changes ON COMMIT DROP AS
    SELECT CASE WHEN a.account_id IS NULL THEN 'added'
                WHEN f.account_id IS NULL THEN 'disabled'
                ELSE 'changed' END AS change,
           coalesce(f.account_id, a.account_id) AS account_id, f.record AS line,
           a.display_name AS old_display_name, f.display_name,
           a.email AS old_email, f.email,
           a.status AS old_status, coalesce(f.status, 'disabled') AS status,
           a.high_risk AS old_high_risk, f.high_risk,
           CASE WHEN f.record IS NULL THEN NULL
                WHEN octet_length(f.account_id) > 64 OR f.account_id !~ '^[a-z0-9][a-z0-9._-]*$' THEN 1
                WHEN f.display_name = '' OR f.display_name ~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]' THEN 2
                WHEN NOT hms2fa.is_email_address(f.email) THEN 3
                WHEN f.status NOT IN ('active', 'disabled') THEN 4
                WHEN f.high_risk IS NULL THEN 5
           END AS problem
      FROM pg_temp.roster_feed f
      FULL JOIN hms2fa.accounts a ON a.account_id = f.account_id
     WHERE a.account_id IS NULL
        OR (f.account_id IS NULL AND p_disable_missing AND a.status = 'active')
        OR (f.account_id IS NOT NULL
            AND (a.display_name, a.email, a.status, a.high_risk)
                IS DISTINCT FROM (f.display_name, f.email, f.status, f.high_risk));

  -- The first problem by line, a bad value or an id listed again, refuses the whole feed. The
  -- ids repeated are few (none, in a good feed): found by hashing, then the first repetition.
  SELECT c.line, c.problem INTO v_record, v_column
    FROM pg_temp.roster_changes c WHERE c.problem IS NOT NULL ORDER BY c.line LIMIT 1;
  SELECT d.account_id, d.record, d.first INTO v_id, v_repeat, v_first
    FROM (SELECT f.account_id, f.record, min(f.record) OVER (PARTITION BY f.account_id) AS first
            FROM pg_temp.roster_feed f
           WHERE f.account_id IN (SELECT g.account_id FROM pg_temp.roster_feed g
                                   GROUP BY g.account_id HAVING count(*) > 1)) d
   WHERE d.record > d.first
   ORDER BY d.record LIMIT 1;
  IF v_repeat < v_record OR (v_repeat IS NOT NULL AND v_record IS NULL) THEN
    RAISE EXCEPTION 'line %, column % (account_id): account id % appears again (first on line %); ids are compared trimmed and lowercased',
      hms2fa.roster_line(v_repeat), v_field[1], v_id, hms2fa.roster_line(v_first) USING ERRCODE = 'H2D80',
      HINT = 'nothing was imported; correct the export and run the import again';
  ELSIF v_record IS NOT NULL THEN
    -- The values as the file has them, for the message.
    EXECUTE format('SELECT r.f%s FROM ONLY pg_temp.roster_raw r WHERE r.record = $1', v_field[v_column])
      INTO v_value USING v_record;
    v_value := btrim(coalesce(v_value, ''), E' \t\r\n');
    v_shown := quote_literal(left(regexp_replace(v_value, '[[:cntrl:]]', '?', 'g'), 60)
                             || CASE WHEN length(v_value) > 60 THEN '…' ELSE '' END);
    v_problem := CASE v_column
      WHEN 1 THEN CASE WHEN v_value = '' THEN 'the account id is empty'
                       WHEN octet_length(v_value) > 64
                         THEN v_shown || ' is too long for an HMS Account ID (at most 64 characters)'
                       ELSE v_shown || ' is not an HMS Account ID (letters, digits, ''.'', ''_'' or ''-'', e.g. jd123)' END
      WHEN 2 THEN CASE WHEN v_value = '' THEN 'the name is empty'
                       ELSE v_shown || ' contains control characters' END
      WHEN 3 THEN v_shown || ' is not a single email address (e.g. jd123@hms.harvard.edu: no name, comma, angle bracket, quote or space)'
      WHEN 4 THEN v_shown || ' is not a status (active or disabled)'
      ELSE CASE WHEN v_value = '' THEN 'empty; say true or false (a missing flag must not lower anyone''s protection)'
                ELSE v_shown || ' is not true or false' END
    END;
    RAISE EXCEPTION 'line %, column % (%): %', hms2fa.roster_line(v_record), v_field[v_column], c_columns[v_column],
      v_problem USING ERRCODE = 'H2D80', HINT = 'nothing was imported; correct the export and run the import again';
  END IF;

  -- Records to lines, where names hold line breaks.
  IF EXISTS (SELECT 1 FROM pg_temp.roster_breaks) THEN
    UPDATE pg_temp.roster_changes c SET line = hms2fa.roster_line(c.line) WHERE c.line IS NOT NULL;
  END IF;
  ANALYZE pg_temp.roster_changes;

  SELECT count(*) INTO v_active FROM hms2fa.accounts a WHERE a.status = 'active';
  SELECT * INTO feed_rows, added, changed, disabled, unchanged, active_before, would_disable, over_limit, event_id
    FROM hms2fa.apply_roster_changes((SELECT count(*) FROM pg_temp.roster_feed), v_active, p_disable_missing,
                                     p_max_disable_fraction, p_force, p_dry_run, p_source, p_ticket);
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.import_roster(boolean,numeric,boolean,boolean,text,text) TO hms2fa_batch;

-- What import_roster found to change (call it first, with p_dry_run), one row per account in
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
      USING ERRCODE = 'H2U85', HINT = 'call hms2fa_api.import_roster first (with p_dry_run => true)';
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
GRANT EXECUTE ON FUNCTION hms2fa_api.roster_diff(integer) TO hms2fa_batch;

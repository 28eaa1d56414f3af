-- The security model: group roles for each tier, the only ways staff read (SECURITY DEFINER
-- read functions, views) and change data (functions in hms2fa_api), and the hash-chained,
-- append-only audit log.

DO $$
DECLARE
  v_role text;
BEGIN
  FOREACH v_role IN ARRAY ARRAY['hms2fa_tier1', 'hms2fa_tier2', 'hms2fa_batch',
                                'hms2fa_auditor', 'hms2fa_signin'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
      -- tier2 may do everything tier1 may; granted only by whoever created the role.
      IF v_role = 'hms2fa_tier2' THEN
        GRANT hms2fa_tier1 TO hms2fa_tier2;
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END LOOP;
END
$$;

CREATE SCHEMA hms2fa_api AUTHORIZATION hms2fa_owner;
REVOKE ALL ON SCHEMA hms2fa_api FROM PUBLIC;

SET LOCAL ROLE hms2fa_owner;

GRANT USAGE ON SCHEMA hms2fa_api
  TO hms2fa_tier1, hms2fa_tier2, hms2fa_batch, hms2fa_auditor, hms2fa_signin;

-- The sign-in service writes devices and remember-me tokens itself (CONTRACT §1, §2).
GRANT USAGE ON SCHEMA hms2fa TO hms2fa_signin;
GRANT SELECT ON hms2fa.accounts TO hms2fa_signin;
GRANT SELECT, INSERT ON hms2fa.devices, hms2fa.remembered_browsers TO hms2fa_signin;
GRANT UPDATE (last_used_at) ON hms2fa.devices TO hms2fa_signin;
GRANT UPDATE (revoked_at) ON hms2fa.remembered_browsers TO hms2fa_signin;

-- Errors raised by this schema use SQLSTATE class H2, read by the tool:
--   H2U.. usage (a malformed ticket, …)     H2D.. bad data (disabled account, wrong code, …)
--   H2N.. no such account                   H2R.. try again later (rate limit)
--   H2P.. not permitted for this login

CREATE FUNCTION hms2fa.check_ticket(p_ticket text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_ticket IS NULL OR p_ticket !~ '^[!-~]([ -~]{0,62}[!-~])?$' THEN
    RAISE EXCEPTION 'a ticket is 1 to 64 printable ASCII characters, without leading or trailing spaces'
      USING ERRCODE = 'H2U01';
  END IF;
  RETURN p_ticket;
END
$$;

-- Audit log ------------------------------------------------------------------------------

CREATE TABLE hms2fa.audit_events (
  event_id   bigint PRIMARY KEY,
  at         timestamptz NOT NULL,
  actor      text NOT NULL,
  action     text NOT NULL CONSTRAINT action_format CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
  account_id text,
  ticket     text,
  reason     text,
  details    jsonb NOT NULL DEFAULT '{}',
  prev_hash  bytea NOT NULL,
  hash       bytea NOT NULL
);

CREATE INDEX audit_events_account_idx ON hms2fa.audit_events (account_id, event_id);
CREATE INDEX audit_events_actor_idx ON hms2fa.audit_events (actor, event_id);
CREATE INDEX audit_events_at_idx ON hms2fa.audit_events (at);

-- The chain's head: the last event's id and hash. Appending locks this row until commit, which
-- orders concurrent writers and keeps ids gapless (a missing id means a deleted event).
CREATE TABLE hms2fa.audit_chain_head (
  only_row      boolean PRIMARY KEY DEFAULT true CONSTRAINT single_row CHECK (only_row),
  last_event_id bigint NOT NULL,
  last_hash     bytea NOT NULL
);
INSERT INTO hms2fa.audit_chain_head (last_event_id, last_hash) VALUES (0, decode(repeat('00', 32), 'hex'));

-- hash = sha256(prev_hash || canonical JSON array of the event's fields). jsonb's text form is
-- canonical (keys sorted, no insignificant space); the time is fixed to UTC microseconds so the
-- session's TimeZone can't change it.
CREATE FUNCTION hms2fa.audit_digest(
  p_prev_hash bytea, p_event_id bigint, p_at timestamptz, p_actor text, p_action text,
  p_account_id text, p_ticket text, p_reason text, p_details jsonb
) RETURNS bytea
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN sha256(p_prev_hash || convert_to(jsonb_build_array(
           p_event_id,
           to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           p_actor, p_action, p_account_id, p_ticket, p_reason, p_details)::text, 'UTF8'));

CREATE FUNCTION hms2fa.audit_chain_append() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_head hms2fa.audit_chain_head;
BEGIN
  SELECT * INTO STRICT v_head FROM hms2fa.audit_chain_head FOR UPDATE;
  NEW.event_id := v_head.last_event_id + 1;
  NEW.at := clock_timestamp();
  -- The login that made the change, never a name a client supplied.
  NEW.actor := session_user;
  NEW.details := coalesce(NEW.details, '{}');
  NEW.prev_hash := v_head.last_hash;
  NEW.hash := hms2fa.audit_digest(NEW.prev_hash, NEW.event_id, NEW.at, NEW.actor, NEW.action,
                                  NEW.account_id, NEW.ticket, NEW.reason, NEW.details);
  UPDATE hms2fa.audit_chain_head SET last_event_id = NEW.event_id, last_hash = NEW.hash;
  RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_chain BEFORE INSERT ON hms2fa.audit_events
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_chain_append();

CREATE FUNCTION hms2fa.audit_events_append_only() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON hms2fa.audit_events
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON hms2fa.audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_chain_head_kept BEFORE DELETE ON hms2fa.audit_chain_head
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON hms2fa.audit_chain_head
  FOR EACH STATEMENT EXECUTE FUNCTION hms2fa.audit_events_append_only();

-- What every change-making function calls last, in its own transaction.
CREATE FUNCTION hms2fa.audit(
  p_action text, p_account_id text, p_ticket text, p_reason text, p_details jsonb
) RETURNS bigint
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  INSERT INTO hms2fa.audit_events (action, account_id, ticket, reason, details)
  VALUES (p_action, p_account_id, p_ticket, p_reason, coalesce(p_details, '{}'))
  RETURNING event_id;
END;

CREATE VIEW hms2fa_api.audit_events AS
  SELECT event_id, at, actor, action, account_id, ticket, reason, details
    FROM hms2fa.audit_events;
GRANT SELECT ON hms2fa_api.audit_events TO hms2fa_tier1, hms2fa_auditor;

-- Walks the chain in order; stops at the first event that doesn't match.
CREATE FUNCTION hms2fa_api.audit_verify(
  OUT events bigint, OUT ok boolean, OUT first_bad_event bigint, OUT problem text,
  OUT head_hash text
)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_event hms2fa.audit_events;
  v_expected_id bigint := 1;
  v_prev bytea := decode(repeat('00', 32), 'hex');
  v_head hms2fa.audit_chain_head;
BEGIN
  events := 0;
  ok := true;
  FOR v_event IN SELECT * FROM hms2fa.audit_events ORDER BY event_id LOOP
    IF v_event.event_id <> v_expected_id THEN
      ok := false;
      first_bad_event := v_expected_id;
      problem := format('event %s is missing (the next one is %s)', v_expected_id, v_event.event_id);
      RETURN;
    END IF;
    IF v_event.prev_hash <> v_prev THEN
      ok := false;
      first_bad_event := v_event.event_id;
      problem := format('event %s does not follow event %s', v_event.event_id, v_expected_id - 1);
      RETURN;
    END IF;
    IF v_event.hash <> hms2fa.audit_digest(v_event.prev_hash, v_event.event_id, v_event.at,
         v_event.actor, v_event.action, v_event.account_id, v_event.ticket, v_event.reason,
         v_event.details) THEN
      ok := false;
      first_bad_event := v_event.event_id;
      problem := format('event %s was altered after it was written', v_event.event_id);
      RETURN;
    END IF;
    events := events + 1;
    v_prev := v_event.hash;
    v_expected_id := v_expected_id + 1;
  END LOOP;
  SELECT * INTO STRICT v_head FROM hms2fa.audit_chain_head;
  IF v_head.last_event_id <> v_expected_id - 1 OR v_head.last_hash <> v_prev THEN
    ok := false;
    first_bad_event := v_expected_id;
    problem := format('the log ends at event %s but %s were written', v_expected_id - 1,
                      v_head.last_event_id);
    RETURN;
  END IF;
  head_hash := encode(v_prev, 'hex');
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_verify() TO hms2fa_auditor;

-- Staff memberships are granted by the operator's own login (GRANT needs its admin rights);
-- this records the change, after checking that it really happened.
CREATE FUNCTION hms2fa_api.record_staff_change(
  p_login text, p_group text, p_granted boolean, p_ticket text
) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_group NOT IN ('hms2fa_tier1', 'hms2fa_tier2', 'hms2fa_batch', 'hms2fa_auditor', 'hms2fa_signin') THEN
    RAISE EXCEPTION 'unknown staff role %', p_group USING ERRCODE = 'H2U02';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user
                  AND (rolsuper OR rolcreaterole)) THEN
    RAISE EXCEPTION 'only an operator may change staff roles' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_granted IS DISTINCT FROM EXISTS (
       SELECT 1 FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
        WHERE g.rolname = p_group AND u.rolname = p_login) THEN
    RAISE EXCEPTION 'the membership of % in % is not what is being recorded', p_login, p_group
      USING ERRCODE = 'H2D01';
  END IF;
  RETURN hms2fa.audit(CASE WHEN p_granted THEN 'staff.granted' ELSE 'staff.revoked' END,
                      NULL, p_ticket, NULL,
                      jsonb_build_object('login', p_login, 'role', p_group));
END
$$;

-- Look-ups -------------------------------------------------------------------------------

-- One person, everything the desk needs on one screen, in one round trip. Later migrations
-- add sections in hms2fa_api.account_card.
CREATE FUNCTION hms2fa.account_card_base(p_key text) RETURNS jsonb
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_ids text[];
  v_card jsonb;
BEGIN
  IF position('@' IN p_key) > 0 THEN
    SELECT array_agg(a.account_id ORDER BY a.account_id) INTO v_ids
      FROM hms2fa.accounts a WHERE lower(a.email) = lower(p_key);
    IF cardinality(v_ids) > 1 THEN
      RAISE EXCEPTION 'that email of record belongs to % accounts: %', cardinality(v_ids),
        array_to_string(v_ids, ', ')
        USING ERRCODE = 'H2D02', HINT = 'show one of them by its account id';
    END IF;
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE lower(a.email) = lower(p_key);
  ELSE
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE a.account_id = lower(p_key);
  END IF;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;

  v_card := jsonb_build_object(
    'account_id', v_account.account_id,
    'display_name', v_account.display_name,
    'email', v_account.email,
    'status', v_account.status,
    'high_risk', v_account.high_risk,
    'login_action', v_account.login_action,
    'created_at', hms2fa.iso(v_account.created_at),
    'enrollment', hms2fa.enrollment_of(v_account.account_id));
  v_card := v_card || jsonb_build_object(
    'start_setup_visible', v_card->>'enrollment' = 'not_enrolled',
    'devices', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'device_id', d.device_id,
               'kind', d.kind,
               'platform', d.platform,
               'phone', d.phone,
               'label', d.label,
               'state', CASE WHEN d.retired_at IS NOT NULL THEN 'retired'
                             WHEN hms2fa.device_counts(d.kind, d.activated_at) THEN 'active'
                             ELSE 'pending' END,
               'is_default', d.is_default,
               'activated_at', hms2fa.iso(d.activated_at),
               'created_at', hms2fa.iso(d.created_at),
               'last_used_at', hms2fa.iso(d.last_used_at),
               'retired_at', hms2fa.iso(d.retired_at),
               'retired_reason', d.retired_reason)
             ORDER BY d.retired_at IS NOT NULL, d.device_id)
        FROM hms2fa.devices d WHERE d.account_id = v_account.account_id), '[]'),
    'remembered_browsers', (
      SELECT jsonb_build_object(
               'active', count(*) FILTER (WHERE r.revoked_at IS NULL AND r.expires_at > now()),
               'expired', count(*) FILTER (WHERE r.revoked_at IS NULL AND r.expires_at <= now()),
               'revoked', count(*) FILTER (WHERE r.revoked_at IS NOT NULL))
        FROM hms2fa.remembered_browsers r WHERE r.account_id = v_account.account_id),
    'recent_audit', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'event_id', e.event_id, 'at', hms2fa.iso(e.at), 'actor', e.actor,
               'action', e.action, 'ticket', e.ticket, 'reason', e.reason)
             ORDER BY e.event_id DESC)
        FROM (SELECT * FROM hms2fa.audit_events ae
               WHERE ae.account_id = v_account.account_id
               ORDER BY ae.event_id DESC LIMIT 10) e), '[]'));
  RETURN v_card;
END
$$;

CREATE FUNCTION hms2fa_api.account_card(p_key text) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN hms2fa.account_card_base(p_key);
GRANT EXECUTE ON FUNCTION hms2fa_api.account_card(text) TO hms2fa_tier1;

-- People whose id, email or name starts with the text (case-insensitive).
CREATE FUNCTION hms2fa_api.find_accounts(p_text text, p_limit integer DEFAULT 50)
RETURNS TABLE (account_id text, display_name text, email text, status text, enrollment text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pattern text := replace(replace(replace(lower(btrim(p_text)), '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
  IF btrim(coalesce(p_text, '')) = '' THEN
    RAISE EXCEPTION 'search text is empty' USING ERRCODE = 'H2U03';
  END IF;
  RETURN QUERY
    SELECT a.account_id, a.display_name, a.email, a.status, hms2fa.enrollment_of(a.account_id)
      FROM hms2fa.accounts a
     WHERE a.account_id LIKE v_pattern
        OR lower(a.email) LIKE v_pattern
        OR lower(a.display_name) LIKE v_pattern
     ORDER BY a.account_id
     LIMIT greatest(1, least(coalesce(p_limit, 50), 1000));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.find_accounts(text, integer) TO hms2fa_tier1;

-- Belt and braces: nothing here is executable by PUBLIC, whatever the defaults were.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.account_card(text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.find_accounts(text, integer) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_verify() TO hms2fa_auditor;

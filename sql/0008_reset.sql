-- Enrollment resets: clearing a stale enrollment so "Start setup" shows again, with the plan
-- shown first, a second tier-2 agent for the risky ones, and a notice to the person queued in
-- the same transaction. Serves hms2fa_tier2 (reset, approve) and hms2fa_tier1 (list requests,
-- withdraw one's own).

SET LOCAL ROLE hms2fa_owner;

CREATE TABLE hms2fa.reset_requests (
  request_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id      text NOT NULL REFERENCES hms2fa.accounts,
  requested_by    text NOT NULL DEFAULT session_user,
  ticket          text NOT NULL,
  verified_via    text NOT NULL,
  reason          text,
  approval_needed text[] NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
  state           text NOT NULL DEFAULT 'pending'
                  CONSTRAINT state_known CHECK (state IN ('pending', 'approved', 'withdrawn')),
  approved_by     text,
  approved_at     timestamptz,
  approval_ticket text,
  -- The plan the request was made on (reset_plan_fingerprint), set by the trigger below.
  plan_fingerprint text,
  withdrawn_by    text,
  withdrawn_at    timestamptz,
  withdrawal_ticket text,
  -- The identity proof the request relied on, spent by it.
  identity_verification_id bigint REFERENCES hms2fa.phone_verifications,
  CONSTRAINT approver_is_another_login CHECK (approved_by IS DISTINCT FROM requested_by)
);

CREATE INDEX reset_requests_pending_idx ON hms2fa.reset_requests (account_id) WHERE state = 'pending';

-- What a reset of the (locked) account would touch, as the plan shown to the agent.
CREATE FUNCTION hms2fa.reset_plan(p_account hms2fa.accounts) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT jsonb_build_object(
    'account_id', p_account.account_id,
    'display_name', p_account.display_name,
    'email', p_account.email,
    'high_risk', p_account.high_risk,
    'login_action', p_account.login_action,
    'devices', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'device_id', d.device_id, 'kind', d.kind, 'platform', d.platform, 'phone', d.phone,
               'label', d.label, 'is_default', d.is_default,
               'state', CASE WHEN hms2fa.device_counts(d.kind, d.activated_at) THEN 'active' ELSE 'pending' END,
               'last_used_at', hms2fa.iso(d.last_used_at)) ORDER BY d.device_id)
        FROM hms2fa.devices d
       WHERE d.account_id = p_account.account_id AND d.retired_at IS NULL), '[]'),
    'links', (SELECT count(*) FROM hms2fa.activation_links l
               WHERE l.account_id = p_account.account_id AND l.used_at IS NULL AND l.revoked_at IS NULL
                 AND l.expires_at > now()),
    'browsers', (SELECT count(*) FROM hms2fa.remembered_browsers b
                  WHERE b.account_id = p_account.account_id AND b.revoked_at IS NULL AND b.expires_at > now()),
    'codes', (SELECT count(*) FROM hms2fa.phone_verifications v
               WHERE v.account_id = p_account.account_id AND v.state = 'pending'));
END;

-- Why a reset of the account needs a second agent, if it does (empty array: it doesn't).
CREATE FUNCTION hms2fa.reset_approval_needed(p_account hms2fa.accounts, p_verified_via text) RETURNS text[]
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT array_remove(ARRAY[
    CASE WHEN p_account.high_risk THEN 'high_risk' END,
    CASE WHEN EXISTS (SELECT 1 FROM hms2fa.audit_events e
                       WHERE e.account_id = p_account.account_id AND e.action = 'enrollment.reset'
                         AND e.at > now() - interval '30 days')
         THEN 'reset_within_30_days' END,
    CASE WHEN p_verified_via IN ('callback', 'video', 'manager')
              AND EXISTS (SELECT 1 FROM hms2fa.devices d
                           WHERE d.account_id = p_account.account_id AND d.retired_at IS NULL
                             AND d.last_used_at > now() - interval '24 hours')
         THEN 'device_used_in_last_24_hours' END
  ], NULL);
END;

-- A digest of a plan (reset_plan): what a request and its approval must agree on.
CREATE FUNCTION hms2fa.reset_plan_fingerprint(p_plan jsonb) RETURNS text
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
  RETURN encode(sha256(convert_to(jsonb_build_object(
      'devices', coalesce((SELECT jsonb_agg(d.value - 'last_used_at' ORDER BY d.ordinality)
                             FROM jsonb_array_elements(p_plan->'devices') WITH ORDINALITY d), '[]'),
      'email', p_plan->'email',
      'high_risk', p_plan->'high_risk')::text, 'UTF8')), 'hex');

-- Notes a new request's plan fingerprint, and refuses an approval when the account's
-- enrollment changed since the request was made (H2R12).
CREATE FUNCTION hms2fa.reset_request_plan() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_fingerprint text;
BEGIN
  SELECT * INTO STRICT v_account FROM hms2fa.accounts a WHERE a.account_id = NEW.account_id;
  v_fingerprint := hms2fa.reset_plan_fingerprint(hms2fa.reset_plan(v_account));
  IF TG_OP = 'INSERT' THEN
    NEW.plan_fingerprint := v_fingerprint;
  ELSIF OLD.state = 'pending' AND NEW.state = 'approved' AND OLD.plan_fingerprint IS NOT NULL
        AND OLD.plan_fingerprint <> v_fingerprint THEN
    RAISE EXCEPTION 'the enrollment of % changed since reset request % was made; nothing was changed',
      NEW.account_id, NEW.request_id
      USING ERRCODE = 'H2R12',
            HINT = 'the requesting agent verifies the caller again and makes a new request';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER reset_requests_plan BEFORE INSERT OR UPDATE OF state ON hms2fa.reset_requests
  FOR EACH ROW EXECUTE FUNCTION hms2fa.reset_request_plan();

-- The open request of an account, if any (an expired one is no longer open).
CREATE FUNCTION hms2fa.open_request(p_account_id text) RETURNS hms2fa.reset_requests
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT r.* FROM hms2fa.reset_requests r
   WHERE r.account_id = p_account_id AND r.state = 'pending' AND r.expires_at > now()
   ORDER BY r.request_id DESC LIMIT 1;
END;

-- The writes of a reset, without its event: retires the devices, revokes outstanding links,
-- remembered browsers and waiting codes, and sets login_action to 'ask'. Returns what it did.
CREATE FUNCTION hms2fa.reset_changes(p_account hms2fa.accounts) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_devices bigint[];
  v_links integer;
  v_browsers integer;
  v_codes integer;
BEGIN
  WITH retired AS (
    UPDATE hms2fa.devices d SET retired_at = now(), retired_reason = 'reset', is_default = false
     WHERE d.account_id = p_account.account_id AND d.retired_at IS NULL
    RETURNING d.device_id)
  SELECT coalesce(array_agg(device_id ORDER BY device_id), '{}') INTO v_devices FROM retired;

  UPDATE hms2fa.activation_links l SET revoked_at = now(), revoked_reason = 'enrollment reset'
   WHERE l.account_id = p_account.account_id AND l.used_at IS NULL AND l.revoked_at IS NULL;
  GET DIAGNOSTICS v_links = ROW_COUNT;

  UPDATE hms2fa.remembered_browsers b SET revoked_at = now()
   WHERE b.account_id = p_account.account_id AND b.revoked_at IS NULL AND b.expires_at > now();
  GET DIAGNOSTICS v_browsers = ROW_COUNT;

  UPDATE hms2fa.phone_verifications v SET state = 'cancelled', ended_at = now()
   WHERE v.account_id = p_account.account_id AND v.state = 'pending';
  GET DIAGNOSTICS v_codes = ROW_COUNT;

  -- The identity proofs the account had are used up: the one this reset rests on, and any
  -- other, since they came from phones the reset has just retired.
  UPDATE hms2fa.phone_verifications v SET used_at = clock_timestamp()
   WHERE v.account_id = p_account.account_id AND v.purpose = 'identity' AND v.state = 'verified'
     AND v.used_at IS NULL;

  UPDATE hms2fa.accounts a SET login_action = 'ask' WHERE a.account_id = p_account.account_id;

  RETURN jsonb_build_object('device_ids', to_jsonb(v_devices), 'links', v_links, 'browsers', v_browsers,
                            'codes', v_codes);
END
$$;

-- A reset's notice, queued in the reset's own transaction (a direct reset and an approved one
-- both end here).
CREATE FUNCTION hms2fa.record_reset(
  p_account hms2fa.accounts, p_changes jsonb, p_ticket text, p_verified_via text, p_reason text, p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_retired integer := jsonb_array_length(p_changes->'device_ids');
  v_event bigint;
  v_message bigint;
BEGIN
  v_message := hms2fa.queue_message('reset_notice', 'email', p_account.account_id, p_account.email, p_ticket,
    jsonb_build_object(
      'name', p_account.display_name, 'at', hms2fa.iso(now()),
      'devices', (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', d.kind, 'label', d.label, 'phone', d.phone)
                                            ORDER BY d.device_id), '[]')
                    FROM hms2fa.devices d
                   WHERE d.device_id IN (SELECT x::bigint FROM jsonb_array_elements_text(p_changes->'device_ids') x)),
      'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers'));

  v_event := hms2fa.audit('enrollment.reset', p_account.account_id, p_ticket, p_reason,
    jsonb_build_object('devices_retired', v_retired, 'device_ids', p_changes->'device_ids',
                       'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
                       'codes_cancelled', p_changes->'codes', 'login_action_was', p_account.login_action,
                       'verified_via', p_verified_via, 'message_id', v_message)
    || coalesce(p_details, '{}'));

  RETURN jsonb_build_object(
    'status', 'reset', 'account_id', p_account.account_id, 'event_id', v_event,
    'devices_retired', v_retired, 'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
    'codes_cancelled', p_changes->'codes', 'enrollment', hms2fa.enrollment_of(p_account.account_id),
    'start_setup_visible', hms2fa.enrollment_of(p_account.account_id) = 'not_enrolled',
    'email', p_account.email, 'display_name', p_account.display_name, 'verified_via', p_verified_via,
    'at', hms2fa.iso(now()), 'message_id', v_message);
END
$$;

-- A reset and its event, the two steps above in a row.
CREATE FUNCTION hms2fa.do_reset(
  p_account hms2fa.accounts, p_ticket text, p_verified_via text, p_reason text, p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN hms2fa.record_reset(p_account, hms2fa.reset_changes(p_account), p_ticket, p_verified_via, p_reason,
                             p_details);
END
$$;

-- enrollment reset: the one way in for tier 2. With the plan the agent was shown
-- (p_expected_plan, its fingerprint) the reset is refused (H2R11) when the plan changed since;
-- a NULL dry-run flag is refused (H2U09).
CREATE FUNCTION hms2fa_api.reset_enrollment(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_dry_run boolean,
  p_expected_plan text
) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_result jsonb;
BEGIN
  IF p_dry_run IS NULL THEN
    RAISE EXCEPTION 'say whether this is a dry run (p_dry_run true or false); nothing was changed'
      USING ERRCODE = 'H2U09';
  END IF;
  IF NOT p_dry_run AND p_expected_plan IS NOT NULL THEN
    v_account := hms2fa.account_for_update(p_account_id);
    IF hms2fa.reset_plan_fingerprint(hms2fa.reset_plan(v_account)) IS DISTINCT FROM p_expected_plan THEN
      RAISE EXCEPTION 'the enrollment of % changed since its plan was shown; nothing was changed',
        v_account.account_id
        USING ERRCODE = 'H2R11', HINT = 'run the command again to see the new plan';
    END IF;
  END IF;
  v_result := hms2fa_api.reset_enrollment(p_account_id, p_ticket, p_verified_via, p_reason, p_dry_run);
  -- Every outcome carries the plan it acted on (its devices, email and risk).
  RETURN v_result || jsonb_build_object('plan_fingerprint', hms2fa.reset_plan_fingerprint(v_result));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_enrollment(text,text,text,text,boolean,text) TO hms2fa_tier2;

-- The reset itself, the building block of the six-argument entry point before it (no staff role may
-- call it): a dry run returns the plan and its fingerprint; otherwise it resets at once, or
-- records a pending request when a second tier-2 agent must approve.
CREATE FUNCTION hms2fa_api.reset_enrollment(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_dry_run boolean
) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_plan jsonb;
  v_needed text[];
  v_proof hms2fa.phone_verifications;
  v_request hms2fa.reset_requests;
  v_open hms2fa.reset_requests;
  v_details jsonb := '{}';
  v_event bigint;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_verified_via IS NULL
     OR p_verified_via NOT IN ('code-on-file', 'callback', 'in-person', 'video', 'manager') THEN
    RAISE EXCEPTION 'the identity check must be code-on-file, callback, in-person, video or manager'
      USING ERRCODE = 'H2U07';
  END IF;
  -- A dry run takes no lock: it only reads.
  IF p_dry_run THEN
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id);
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
  ELSE
    v_account := hms2fa.account_for_update(p_account_id);
  END IF;
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; its enrollment is not reset', v_account.account_id
      USING ERRCODE = 'H2D03', HINT = 'a disabled account signs in nowhere; nothing to fix at the desk';
  END IF;

  -- A pending request is the way this account is reset, whatever verified the caller now: it is
  -- approved by a second agent, or withdrawn first.
  v_open := hms2fa.open_request(v_account.account_id);
  IF v_open.request_id IS NOT NULL AND NOT p_dry_run THEN
    RAISE EXCEPTION 'reset request % for % is pending (made by % at % UTC); nothing was changed',
      v_open.request_id, v_account.account_id, v_open.requested_by,
      to_char(v_open.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
      USING ERRCODE = 'H2R13',
            HINT = format('a different tier-2 agent approves it (enrollment approve %s), or it is withdrawn '
                          '(enrollment withdraw %s)', v_open.request_id, v_open.request_id);
  END IF;

  v_plan := hms2fa.reset_plan(v_account);
  IF v_open.request_id IS NOT NULL THEN
    v_plan := v_plan || jsonb_build_object('pending_request_id', v_open.request_id);
  END IF;
  IF jsonb_array_length(v_plan->'devices') = 0 AND (v_plan->>'links')::int = 0
     AND (v_plan->>'browsers')::int = 0 AND (v_plan->>'codes')::int = 0 THEN
    RETURN v_plan || jsonb_build_object('status', 'nothing_to_reset', 'enrollment', 'not_enrolled',
                                        'start_setup_visible', true);
  END IF;

  IF p_verified_via = 'code-on-file' THEN
    v_proof := hms2fa.identity_proof(v_account.account_id, interval '15 minutes');
    IF v_proof.verification_id IS NULL THEN
      RAISE EXCEPTION 'no identity check of % was confirmed in the last 15 minutes', v_account.account_id
        USING ERRCODE = 'H2D08',
              HINT = 'run hms2fa-admin identity check, then identity confirm, or verify the caller another way';
    END IF;
    v_details := jsonb_build_object('identity_verification_id', v_proof.verification_id,
                                    'identity_phone', v_proof.phone);
  END IF;

  v_needed := hms2fa.reset_approval_needed(v_account, p_verified_via);
  IF p_dry_run THEN
    RETURN v_plan || jsonb_build_object('status', 'dry_run', 'approval_needed', to_jsonb(v_needed));
  END IF;

  IF cardinality(v_needed) > 0 THEN
    INSERT INTO hms2fa.reset_requests (account_id, ticket, verified_via, reason, approval_needed,
                                       identity_verification_id)
    VALUES (v_account.account_id, p_ticket, p_verified_via, p_reason, v_needed, v_proof.verification_id)
    RETURNING * INTO v_request;
    -- The proof is spent on this request: it opens no other.
    IF v_proof.verification_id IS NOT NULL THEN
      UPDATE hms2fa.phone_verifications v SET used_at = clock_timestamp()
       WHERE v.verification_id = v_proof.verification_id;
    END IF;
    v_event := hms2fa.audit('enrollment.reset_requested', v_account.account_id, p_ticket, p_reason,
      jsonb_build_object('request_id', v_request.request_id, 'verified_via', p_verified_via,
                         'approval_needed', to_jsonb(v_needed), 'expires_at', hms2fa.iso(v_request.expires_at))
      || v_details);
    RETURN v_plan || jsonb_build_object(
      'status', 'pending_approval', 'request_id', v_request.request_id, 'approval_needed', to_jsonb(v_needed),
      'expires_at', hms2fa.iso(v_request.expires_at), 'event_id', v_event);
  END IF;

  RETURN v_plan || hms2fa.do_reset(v_account, p_ticket, p_verified_via, p_reason, v_details);
END
$$;

-- enrollment approve: a second tier-2 agent (never the requester) carries out a pending
-- request, on the plan it was made on.
CREATE FUNCTION hms2fa_api.approve_reset(p_request_id bigint, p_ticket text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
  v_account hms2fa.accounts;
  v_plan jsonb;
  v_changes jsonb;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no reset request %', p_request_id USING ERRCODE = 'H2D09',
      HINT = 'hms2fa-admin enrollment requests lists the open ones';
  END IF;
  -- The account first, then the request: the same order as reset_enrollment.
  v_account := hms2fa.account_for_update(v_request.account_id);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id FOR UPDATE;
  IF v_request.state = 'approved' THEN
    RAISE EXCEPTION 'reset request % was already approved by % at % UTC', p_request_id, v_request.approved_by,
      to_char(v_request.approved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
  ELSIF v_request.state = 'withdrawn' THEN
    RAISE EXCEPTION 'reset request % was withdrawn by % at % UTC', p_request_id, v_request.withdrawn_by,
      to_char(v_request.withdrawn_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
  END IF;
  IF v_request.expires_at <= now() THEN
    RAISE EXCEPTION 'reset request % expired at % UTC', p_request_id,
      to_char(v_request.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09',
      HINT = 'verify the caller again and make a new request';
  END IF;
  IF v_request.requested_by = session_user THEN
    RAISE EXCEPTION 'you made reset request % yourself; a different tier-2 agent must approve it', p_request_id
      USING ERRCODE = 'H2P02';
  END IF;
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; its enrollment is not reset', v_account.account_id
      USING ERRCODE = 'H2D03';
  END IF;

  -- The request's trigger (0012) compares the plan before anything of the reset is changed.
  UPDATE hms2fa.reset_requests r
     SET state = 'approved', approved_by = session_user, approved_at = now(), approval_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  v_plan := hms2fa.reset_plan(v_account);
  v_changes := hms2fa.reset_changes(v_account);
  -- The events last: the chain's head stays locked from here to the commit.
  PERFORM hms2fa.audit('enrollment.reset_approved', v_account.account_id, p_ticket, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket, 'verified_via', v_request.verified_via));
  RETURN v_plan || hms2fa.record_reset(v_account, v_changes, p_ticket, v_request.verified_via, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'approved_by', session_user::text));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.approve_reset(bigint,text) TO hms2fa_tier2;

-- Withdraws a pending request: its requester, or any tier-2 agent.
CREATE FUNCTION hms2fa_api.withdraw_reset(p_request_id bigint, p_ticket text, p_reason text DEFAULT NULL)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no reset request %', p_request_id USING ERRCODE = 'H2D09',
      HINT = 'hms2fa-admin enrollment requests lists the open ones';
  END IF;
  PERFORM hms2fa.account_for_update(v_request.account_id);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id FOR UPDATE;
  IF v_request.requested_by <> session_user AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'reset request % was made by %; only they or a tier-2 agent may withdraw it', p_request_id,
      v_request.requested_by USING ERRCODE = 'H2P05';
  END IF;
  IF v_request.state <> 'pending' OR v_request.expires_at <= now() THEN
    RAISE EXCEPTION 'reset request % is no longer pending (%)', p_request_id,
      CASE WHEN v_request.state = 'pending' THEN 'expired' ELSE v_request.state END USING ERRCODE = 'H2D09';
  END IF;
  UPDATE hms2fa.reset_requests r
     SET state = 'withdrawn', withdrawn_by = session_user, withdrawn_at = now(), withdrawal_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  RETURN hms2fa.audit('enrollment.reset_withdrawn', v_request.account_id, p_ticket, p_reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.withdraw_reset(bigint,text,text) TO hms2fa_tier1;

-- Reset requests: the pending ones, or with p_all those of the last 30 days.
CREATE FUNCTION hms2fa_api.reset_requests(p_all boolean)
  RETURNS TABLE (request_id bigint, account_id text, requested_by text, ticket text, verified_via text,
                 reason text, approval_needed text[], created_at timestamptz, expires_at timestamptz, state text,
                 approved_by text, approved_at timestamptz, withdrawn_by text, withdrawn_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT r.request_id, r.account_id, r.requested_by, r.ticket, r.verified_via, r.reason, r.approval_needed,
         r.created_at, r.expires_at,
         CASE WHEN r.state = 'pending' AND r.expires_at <= now() THEN 'expired' ELSE r.state END,
         r.approved_by, r.approved_at, r.withdrawn_by, r.withdrawn_at
    FROM hms2fa.reset_requests r
   WHERE (p_all AND r.created_at > now() - interval '30 days') OR (r.state = 'pending' AND r.expires_at > now())
   ORDER BY r.request_id;
END;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_requests(boolean) TO hms2fa_tier1;

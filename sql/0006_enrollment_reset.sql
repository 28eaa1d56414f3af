-- Enrollment reset: retire every device so that "Start setup" shows again. The desk's riskiest
-- action, so: one transaction under the account's row lock, an identity proof or an attestation
-- on record, and a second tier-2 agent's approval where a takeover would be most likely.

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
                  CONSTRAINT state_known CHECK (state IN ('pending', 'approved')),
  approved_by     text,
  approved_at     timestamptz,
  approval_ticket text,
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

-- Carries out the reset of the locked account and writes enrollment.reset; returns the result.
CREATE FUNCTION hms2fa.do_reset(
  p_account hms2fa.accounts, p_ticket text, p_verified_via text, p_reason text, p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_devices bigint[];
  v_links integer;
  v_browsers integer;
  v_codes integer;
  v_event bigint;
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

  UPDATE hms2fa.accounts a SET login_action = 'ask' WHERE a.account_id = p_account.account_id;

  v_event := hms2fa.audit('enrollment.reset', p_account.account_id, p_ticket, p_reason,
    jsonb_build_object('devices_retired', cardinality(v_devices), 'device_ids', to_jsonb(v_devices),
                       'links_revoked', v_links, 'browsers_revoked', v_browsers, 'codes_cancelled', v_codes,
                       'login_action_was', p_account.login_action, 'verified_via', p_verified_via)
    || coalesce(p_details, '{}'));

  RETURN jsonb_build_object(
    'status', 'reset', 'account_id', p_account.account_id, 'event_id', v_event,
    'devices_retired', cardinality(v_devices), 'links_revoked', v_links, 'browsers_revoked', v_browsers,
    'codes_cancelled', v_codes, 'enrollment', hms2fa.enrollment_of(p_account.account_id),
    'start_setup_visible', hms2fa.enrollment_of(p_account.account_id) = 'not_enrolled',
    'email', p_account.email, 'display_name', p_account.display_name, 'verified_via', p_verified_via,
    'at', hms2fa.iso(now()));
END
$$;

-- enrollment reset: the plan (p_dry_run), nothing to do, a request for a second agent, or the
-- reset itself, decided under the account's row lock so two agents at once reset it once.
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

  v_plan := hms2fa.reset_plan(v_account);
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
    INSERT INTO hms2fa.reset_requests (account_id, ticket, verified_via, reason, approval_needed)
    VALUES (v_account.account_id, p_ticket, p_verified_via, p_reason, v_needed)
    RETURNING * INTO v_request;
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

-- enrollment approve: a different tier-2 login carries out a pending request.
CREATE FUNCTION hms2fa_api.approve_reset(p_request_id bigint, p_ticket text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
  v_account hms2fa.accounts;
  v_plan jsonb;
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
  IF v_request.state <> 'pending' THEN
    RAISE EXCEPTION 'reset request % was already approved by % at % UTC', p_request_id, v_request.approved_by,
      to_char(v_request.approved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
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

  UPDATE hms2fa.reset_requests r
     SET state = 'approved', approved_by = session_user, approved_at = now(), approval_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  PERFORM hms2fa.audit('enrollment.reset_approved', v_account.account_id, p_ticket, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket, 'verified_via', v_request.verified_via));
  v_plan := hms2fa.reset_plan(v_account);
  RETURN v_plan || hms2fa.do_reset(v_account, p_ticket, v_request.verified_via, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'approved_by', session_user::text));
END
$$;

-- enrollment requests: open requests (or every request of the last 30 days).
CREATE FUNCTION hms2fa_api.reset_requests(p_all boolean)
RETURNS TABLE (request_id bigint, account_id text, requested_by text, ticket text, verified_via text,
               reason text, approval_needed text[], created_at timestamptz, expires_at timestamptz,
               state text, approved_by text, approved_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT r.request_id, r.account_id, r.requested_by, r.ticket, r.verified_via, r.reason, r.approval_needed,
         r.created_at, r.expires_at,
         CASE WHEN r.state = 'pending' AND r.expires_at <= now() THEN 'expired' ELSE r.state END,
         r.approved_by, r.approved_at
    FROM hms2fa.reset_requests r
   WHERE (p_all AND r.created_at > now() - interval '30 days')
      OR (r.state = 'pending' AND r.expires_at > now())
   ORDER BY r.request_id;
END;

-- A reset's notice that could not be delivered: recorded next to the reset (events are
-- append-only, so it is an event of its own pointing at the reset's).
CREATE FUNCTION hms2fa_api.record_reset_notice_failure(
  p_account_id text, p_ticket text, p_reset_event_id bigint, p_error text
) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF NOT EXISTS (SELECT 1 FROM hms2fa.audit_events e
                  WHERE e.event_id = p_reset_event_id AND e.action = 'enrollment.reset'
                    AND e.account_id = lower(p_account_id)) THEN
    RAISE EXCEPTION 'event % is not a reset of %', p_reset_event_id, p_account_id USING ERRCODE = 'H2D10';
  END IF;
  RETURN hms2fa.audit('enrollment.notice_failed', lower(p_account_id), p_ticket, 'notice not delivered',
    jsonb_build_object('reset_event_id', p_reset_event_id, 'error', left(p_error, 300)));
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_enrollment(text, text, text, text, boolean) TO hms2fa_tier2;
GRANT EXECUTE ON FUNCTION hms2fa_api.approve_reset(bigint, text) TO hms2fa_tier2;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_requests(boolean) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.record_reset_notice_failure(text, text, bigint, text) TO hms2fa_tier2;

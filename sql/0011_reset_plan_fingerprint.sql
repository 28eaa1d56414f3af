-- The plan an agent confirms is the plan carried out. `enrollment reset` shows the plan (a dry
-- run), waits for the typed account id, then resets; in between, someone else may enrol or
-- retire a device, or the account's email or risk may change, and the agent would have
-- confirmed a reset they never saw. The plan now carries a fingerprint of what the decision
-- rests on (the devices to retire, without their last use, the email the notice goes to, the
-- high-risk flag); the reset takes the fingerprint the agent confirmed and, under the account's
-- row lock, refuses with H2R11 (exit 75: run again to see the new plan) when the plan differs.
-- Remembered browsers, links and codes are left out: a reset revokes them whatever their number.
-- The five-argument form stays, for callers that confirm nothing (it checks no fingerprint).

SET LOCAL ROLE hms2fa_owner;

CREATE FUNCTION hms2fa.reset_plan_fingerprint(p_plan jsonb) RETURNS text
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
  RETURN encode(sha256(convert_to(jsonb_build_object(
      'devices', coalesce((SELECT jsonb_agg(d.value - 'last_used_at' ORDER BY d.ordinality)
                             FROM jsonb_array_elements(p_plan->'devices') WITH ORDINALITY d), '[]'),
      'email', p_plan->'email',
      'high_risk', p_plan->'high_risk')::text, 'UTF8')), 'hex');

-- As in 0006, with the plan's fingerprint checked before anything is written.
CREATE FUNCTION hms2fa_api.reset_enrollment(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_dry_run boolean,
  p_expected_plan text
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
  v_plan := v_plan || jsonb_build_object('plan_fingerprint', hms2fa.reset_plan_fingerprint(v_plan));
  -- The agent confirmed a plan: under the lock, it must still be the plan.
  IF NOT p_dry_run AND p_expected_plan IS DISTINCT FROM v_plan->>'plan_fingerprint'
     AND p_expected_plan IS NOT NULL THEN
    RAISE EXCEPTION 'the enrollment of % changed since its plan was shown; nothing was changed',
      v_account.account_id
      USING ERRCODE = 'H2R11', HINT = 'run the command again to see the new plan';
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

CREATE OR REPLACE FUNCTION hms2fa_api.reset_enrollment(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_dry_run boolean
) RETURNS jsonb
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN hms2fa_api.reset_enrollment(p_account_id, p_ticket, p_verified_via, p_reason, p_dry_run, NULL);

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_enrollment(text, text, text, text, boolean, text) TO hms2fa_tier2;

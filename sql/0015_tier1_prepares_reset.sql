-- Tier 1 prepares what tier 2 carries out: a tier-1 agent on the call shows a reset's plan and
-- files it as a request (the plan, the reason, the identity proof), which any tier-2 agent then
-- approves (approve_reset). Serves hms2fa_tier1 (and tier2, its member).

SET LOCAL ROLE hms2fa_owner;

-- enrollment reset --dry-run: the plan (devices, links, browsers, codes, the approvals a reset
-- would need) and its fingerprint. Reads only; writes nothing.
CREATE FUNCTION hms2fa_api.plan_reset(p_account_id text, p_ticket text, p_verified_via text, p_reason text)
  RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT hms2fa_api.reset_enrollment(p_account_id, p_ticket, p_verified_via, p_reason, true, NULL::text);
END;
GRANT EXECUTE ON FUNCTION hms2fa_api.plan_reset(text, text, text, text) TO hms2fa_tier1;

-- enrollment reset --request: files the reset of the plan the agent was shown (p_expected_plan,
-- H2R11 when it changed since) as a pending request that a tier-2 agent other than the requester
-- approves; why it waits ('requested', and what a tier-2 reset would need anyway) is its
-- approval_needed. The same refusals as a reset (disabled account, a request already pending,
-- no identity proof for code-on-file, which the request spends). Writes
-- enrollment.reset_requested.
CREATE FUNCTION hms2fa_api.request_reset(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_expected_plan text
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
  IF p_expected_plan IS NULL THEN
    RAISE EXCEPTION 'a request is made on the plan the agent was shown (its fingerprint); nothing was changed'
      USING ERRCODE = 'H2U09', HINT = 'run the command without --yes to see the plan';
  END IF;
  v_account := hms2fa.account_for_update(p_account_id);
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; its enrollment is not reset', v_account.account_id
      USING ERRCODE = 'H2D03', HINT = 'a disabled account signs in nowhere; nothing to fix at the desk';
  END IF;
  v_plan := hms2fa.reset_plan(v_account);
  IF hms2fa.reset_plan_fingerprint(v_plan) IS DISTINCT FROM p_expected_plan THEN
    RAISE EXCEPTION 'the enrollment of % changed since its plan was shown; nothing was changed', v_account.account_id
      USING ERRCODE = 'H2R11', HINT = 'run the command again to see the new plan';
  END IF;
  v_open := hms2fa.open_request(v_account.account_id);
  IF v_open.request_id IS NOT NULL THEN
    RAISE EXCEPTION 'reset request % for % is pending already (made by %); nothing was changed',
      v_open.request_id, v_account.account_id, v_open.requested_by
      USING ERRCODE = 'H2R13',
            HINT = format('a tier-2 agent approves it (enrollment approve %s), or it is withdrawn (enrollment withdraw %s)',
                          v_open.request_id, v_open.request_id);
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

  v_needed := ARRAY['requested'] || hms2fa.reset_approval_needed(v_account, p_verified_via);
  INSERT INTO hms2fa.reset_requests (account_id, ticket, verified_via, reason, approval_needed,
                                     identity_verification_id)
  VALUES (v_account.account_id, p_ticket, p_verified_via, p_reason, v_needed, v_proof.verification_id)
  RETURNING * INTO v_request;
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
    'expires_at', hms2fa.iso(v_request.expires_at), 'event_id', v_event,
    'plan_fingerprint', hms2fa.reset_plan_fingerprint(v_plan));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.request_reset(text, text, text, text, text) TO hms2fa_tier1;

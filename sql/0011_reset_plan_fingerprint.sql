-- The plan an agent confirms is the plan carried out. `enrollment reset` shows the plan (a dry
-- run), waits for the typed account id, then resets; in between, someone else may enrol or
-- retire a device, or the account's email or risk may change, and the agent would have
-- confirmed a reset they never saw. The plan now carries a fingerprint of what the decision
-- rests on (the devices to retire, without their last use, the email the notice goes to, the
-- high-risk flag); the reset takes the fingerprint the agent confirmed and, under the account's
-- row lock, refuses with H2R11 (exit 75: run again to see the new plan) when the plan differs.
-- Remembered browsers, links and codes are left out: a reset revokes them whatever their number.
-- The five-argument form of 0006 stays as it is, for callers that confirm nothing.

SET LOCAL ROLE hms2fa_owner;

CREATE FUNCTION hms2fa.reset_plan_fingerprint(p_plan jsonb) RETURNS text
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
  RETURN encode(sha256(convert_to(jsonb_build_object(
      'devices', coalesce((SELECT jsonb_agg(d.value - 'last_used_at' ORDER BY d.ordinality)
                             FROM jsonb_array_elements(p_plan->'devices') WITH ORDINALITY d), '[]'),
      'email', p_plan->'email',
      'high_risk', p_plan->'high_risk')::text, 'UTF8')), 'hex');

-- 0006's reset_enrollment, with the plan's fingerprint in what it returns and, for a reset with
-- p_expected_plan, checked first under the lock the reset then takes again (a no-op in the
-- same transaction), so nothing is written when the plan changed.
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_enrollment(text, text, text, text, boolean, text) TO hms2fa_tier2;

-- One way in for a reset: the six-argument reset_enrollment (0011), which can check the plan's
-- fingerprint. The five-argument function of 0006 stays as the definer's building block, but
-- tier2 may no longer call it directly, so psql offers no reset that skips what the tool uses.
-- And a reset says what it is: p_dry_run NULL was taken for "not a dry run" (0006 tested
-- `IF p_dry_run`, 0011 `IF NOT p_dry_run AND …`, both false for NULL), so a raw call with NULL
-- reset the account; it is now refused (H2U09, exit 64). Otherwise 0011's function.

SET LOCAL ROLE hms2fa_owner;

CREATE OR REPLACE FUNCTION hms2fa_api.reset_enrollment(
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

REVOKE EXECUTE ON FUNCTION hms2fa_api.reset_enrollment(text, text, text, text, boolean) FROM hms2fa_tier2;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;

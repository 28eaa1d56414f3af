-- An identity proof is used once. A confirmed identity check (a code sent to a phone on file,
-- read back by the caller) let `enrollment reset --verified-via code-on-file` go ahead for 15
-- minutes, as often as it was asked. A reset now uses up every identity proof of the account
-- (the one it rests on, and any other: they came from phones it has just retired), and only an
-- unused proof counts. phone_verifications.used_at records when.

SET LOCAL ROLE hms2fa_owner;

ALTER TABLE hms2fa.phone_verifications ADD COLUMN used_at timestamptz,
  ADD CONSTRAINT used_only_when_verified CHECK (used_at IS NULL OR state = 'verified');

CREATE OR REPLACE FUNCTION hms2fa.identity_proof(p_account_id text, p_within interval)
RETURNS hms2fa.phone_verifications
  LANGUAGE sql VOLATILE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.phone_verifications v
   WHERE v.account_id = p_account_id AND v.purpose = 'identity' AND v.state = 'verified'
     AND v.used_at IS NULL AND v.ended_at > clock_timestamp() - p_within
   ORDER BY v.ended_at DESC LIMIT 1;
END;

CREATE OR REPLACE FUNCTION hms2fa.reset_changes(p_account hms2fa.accounts) RETURNS jsonb
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;

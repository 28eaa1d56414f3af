-- A release no longer takes a high-risk account's devices. confirm_verification with --release
-- (tier2) retired every other account's devices on the verified number, with none of a reset's
-- rules: a high-risk person's phone (and the Duo Mobile app on it, which doesn't need the SIM)
-- could be taken away by one agent on the word of whoever now holds the number, where a reset of
-- that person needs a second agent's approval. When any account holding the number is high risk,
-- the release is now refused (H2P04, exit 77) before the code is compared, and nothing changes:
-- the code can still be confirmed without --release, and the high-risk account is reset the
-- usual way, which a second tier-2 agent approves. Otherwise 0015's function, restated whole.

SET LOCAL ROLE hms2fa_owner;

CREATE OR REPLACE FUNCTION hms2fa.confirm_verification(
  p_verification_id bigint, p_candidate bytea, p_ticket text, p_release boolean
) RETURNS TABLE (outcome text, tries_left integer, account_id text, phone text, purpose text,
                 other_holders jsonb, released jsonb)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
  v_diff integer := 0;
  v_holders jsonb;
  v_released jsonb := '[]';
  r jsonb;
  v_high_risk text;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_release AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'releasing a phone number from another account needs hms2fa_tier2'
      USING ERRCODE = 'H2P01', HINT = 'confirm without --release, and ask a tier-2 agent to release the number';
  END IF;
  SELECT * INTO v FROM hms2fa.phone_verifications x WHERE x.verification_id = p_verification_id FOR UPDATE;
  IF NOT FOUND OR v.state <> 'pending' THEN
    RETURN QUERY SELECT 'not_pending', 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;
  IF p_release AND v.purpose <> 'ownership' THEN
    RAISE EXCEPTION 'only a phone ownership check can release a number' USING ERRCODE = 'H2U06';
  END IF;

  -- A high-risk account's devices are taken away only by a reset a second agent approves, so a
  -- release that would retire one is refused before the code is even compared (a proof of the
  -- number says nothing about who holds the high-risk person's phone or app).
  IF p_release THEN
    SELECT string_agg(DISTINCT a.account_id, ', ' ORDER BY a.account_id) INTO v_high_risk
      FROM hms2fa.devices d JOIN hms2fa.accounts a ON a.account_id = d.account_id
     WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id AND a.high_risk;
    IF v_high_risk IS NOT NULL THEN
      RAISE EXCEPTION 'the number is on the high-risk account %: releasing it needs a second agent''s approval; nothing was changed',
        v_high_risk
        USING ERRCODE = 'H2P04',
              HINT = 'confirm without --release, then reset that account''s enrollment, which a second tier-2 agent approves';
    END IF;
  END IF;

  -- Every try costs a second under the row lock, before anything is known of its outcome: tries
  -- at this code, from every session, come at most one a second, whether they are committed,
  -- rolled back or cancelled.
  PERFORM pg_sleep(1);

  IF v.expires_at <= clock_timestamp() THEN
    UPDATE hms2fa.phone_verifications x SET state = 'expired', ended_at = clock_timestamp()
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'code expired',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 0));
    RETURN QUERY SELECT 'expired', 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;

  IF p_candidate IS NULL OR length(p_candidate) <> 32 THEN
    v_diff := 1;
  ELSE
    FOR i IN 0..31 LOOP
      v_diff := v_diff | (get_byte(v.code_hash, i) # get_byte(p_candidate, i));
    END LOOP;
  END IF;

  IF v_diff <> 0 THEN
    UPDATE hms2fa.phone_verifications x
       SET attempts = x.attempts + 1,
           state = CASE WHEN x.attempts + 1 >= 5 THEN 'failed' ELSE 'pending' END,
           ended_at = CASE WHEN x.attempts + 1 >= 5 THEN clock_timestamp() END
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'wrong code',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 5 - (v.attempts + 1)));
    RETURN QUERY SELECT CASE WHEN v.attempts + 1 >= 5 THEN 'locked' ELSE 'wrong_code' END,
                        5 - (v.attempts + 1), v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;

  UPDATE hms2fa.phone_verifications x
     SET state = 'verified', ended_at = clock_timestamp(), verified_by = session_user
   WHERE x.verification_id = v.verification_id;

  SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', d.account_id, 'device_id', d.device_id)
                            ORDER BY d.account_id, d.device_id), '[]')
    INTO v_holders
    FROM hms2fa.devices d
   WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id;

  IF p_release AND jsonb_array_length(v_holders) > 0 THEN
    WITH retired AS (
      UPDATE hms2fa.devices d
         SET retired_at = now(), retired_reason = 'number reassigned', is_default = false
       WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id
      RETURNING d.account_id, d.device_id)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
             'account_id', g.account_id, 'device_ids', to_jsonb(g.devices), 'email', g.email,
             'display_name', g.display_name) ORDER BY g.account_id), '[]')
      INTO v_released
      FROM (SELECT t.account_id, array_agg(t.device_id ORDER BY t.device_id) AS devices, a.email, a.display_name
              FROM retired t JOIN hms2fa.accounts a USING (account_id)
             GROUP BY t.account_id, a.email, a.display_name) g;
  END IF;

  -- The events last: the chain's head stays locked from here to the commit.
  PERFORM hms2fa.audit('phone.verified', v.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                       'channel', v.channel));
  FOR r IN SELECT e.value FROM jsonb_array_elements(v_released) WITH ORDINALITY e ORDER BY e.ordinality LOOP
    PERFORM hms2fa.audit('phone.released', r->>'account_id', p_ticket, 'number reassigned',
      jsonb_build_object('phone', v.phone, 'device_ids', r->'device_ids',
                         'verified_by_account', v.account_id, 'verification_id', v.verification_id));
  END LOOP;

  RETURN QUERY SELECT 'verified', 5 - v.attempts, v.account_id, v.phone, v.purpose, v_holders, v_released;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;

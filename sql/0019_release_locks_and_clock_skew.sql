-- Two corrections to 0015 and 0017.
--
-- 1. 0017 refused a release when a holder of the number was high risk, but checked before the
--    second's wait and without a lock, and the retire itself didn't look: a holder made high risk
--    during that second (a roster import, an operator), or a device of a high-risk account added
--    on the number meanwhile, was released all the same. Now, after the wait, the holders'
--    accounts are locked FOR SHARE (in id order; a reset locks an account before its devices,
--    so the order is the same and can't deadlock), high risk is checked on what the locks
--    return, and only the locked accounts' devices are retired. The early check stays, so the
--    usual refusal comes before the code is compared.
-- 2. 0015 refused (H2D11) a revoked_at or last_used_at more than 5 minutes ahead of the
--    database's clock. A revocation that fails because a sign-in host's clock is wrong leaves the
--    browser remembered, a security failure out of a clock problem. Such times are now taken as
--    the database's clock instead: the revocation or the use holds, as of now.
-- Otherwise the functions of 0017 and 0015, restated whole.

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
  v_holder_ids text[];
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
    -- The holders' accounts, locked (in id order, as a reset locks an account before its
    -- devices) so that none turns high risk between this check and the retire; the check above,
    -- before the second's wait, is only the early answer.
    SELECT array_agg(x.account_id ORDER BY x.account_id),
           string_agg(x.account_id, ', ' ORDER BY x.account_id) FILTER (WHERE x.high_risk)
      INTO v_holder_ids, v_high_risk
      FROM (SELECT a.account_id, a.high_risk
              FROM hms2fa.accounts a
             WHERE a.account_id IN (SELECT d.account_id FROM hms2fa.devices d
                                     WHERE d.phone = v.phone AND d.retired_at IS NULL
                                       AND d.account_id <> v.account_id)
             ORDER BY a.account_id
               FOR SHARE) x;
    IF v_high_risk IS NOT NULL THEN
      RAISE EXCEPTION 'the number is on the high-risk account %: releasing it needs a second agent''s approval; nothing was changed',
        v_high_risk
        USING ERRCODE = 'H2P04',
              HINT = 'confirm without --release, then reset that account''s enrollment, which a second tier-2 agent approves';
    END IF;
    WITH retired AS (
      UPDATE hms2fa.devices d
         SET retired_at = now(), retired_reason = 'number reassigned', is_default = false
       WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id = ANY (v_holder_ids)
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

CREATE OR REPLACE FUNCTION hms2fa.remembered_browser_revocation_kept() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF OLD.revoked_at IS NOT NULL THEN
    IF NEW.revoked_at IS NULL THEN
      RAISE EXCEPTION 'a revoked remembered browser stays revoked'
        USING ERRCODE = 'H2P03',
              HINT = 'the person signs in with two factors again and ticks "Remember me" on that browser';
    END IF;
    -- Revoked again: it was revoked when it was first revoked.
    NEW.revoked_at := OLD.revoked_at;
  ELSIF NEW.revoked_at > clock_timestamp() + interval '5 minutes' THEN
    -- A sign-in host's clock far ahead: the revocation holds, as of now.
    NEW.revoked_at := clock_timestamp();
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION hms2fa.device_last_use_forward() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.last_used_at > clock_timestamp() + interval '5 minutes' THEN
    -- A sign-in host's clock far ahead: the use counts, as of now.
    NEW.last_used_at := clock_timestamp();
  END IF;
  -- An earlier use (or none) doesn't undo a later one.
  IF OLD.last_used_at IS NOT NULL AND (NEW.last_used_at IS NULL OR NEW.last_used_at < OLD.last_used_at) THEN
    NEW.last_used_at := OLD.last_used_at;
  END IF;
  RETURN NEW;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;

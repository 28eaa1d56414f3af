-- A release on a tier-1 agent's proof: the agent who verified the caller owns the number need
-- not be the one who releases it from its former holders. A tier-2 agent relies on an
-- ownership proof confirmed in the last 15 minutes (phone release) instead of sending a second
-- code; the proof is spent by the release. The release itself (lock the holders, refuse a
-- high-risk one, retire their devices on the number, then notice and event each) is one copy,
-- used by confirm_verification --release too. Serves hms2fa_tier2.

SET LOCAL ROLE hms2fa_owner;

--   H2D12 no ownership proof to release on   H2D13 nobody else has the number

-- Retires the devices on v's number of every other account that has one in use, after locking
-- those accounts in id order (as a reset locks an account before its devices) and refusing
-- (H2P04) when one is high risk. Returns the released accounts: account_id, device_ids, email,
-- display_name. Writes no event: record_release does, last.
CREATE FUNCTION hms2fa.retire_holders(v hms2fa.phone_verifications) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_holder_ids text[];
  v_high_risk text;
  v_released jsonb;
BEGIN
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
  RETURN v_released;
END
$$;

-- Queues a release notice to each account in p_released (retire_holders') and writes its
-- phone.released event, in this transaction: every change's last writes. Returns p_released
-- with each notice's message_id.
CREATE FUNCTION hms2fa.record_release(v hms2fa.phone_verifications, p_ticket text, p_released jsonb) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb;
  v_message bigint;
  v_released jsonb := p_released;
BEGIN
  FOR r IN SELECT e.value FROM jsonb_array_elements(p_released) WITH ORDINALITY e ORDER BY e.ordinality LOOP
    v_message := hms2fa.queue_message('release_notice', 'email', r->>'account_id', r->>'email', p_ticket,
      jsonb_build_object('name', r->>'display_name', 'phone', v.phone, 'at', hms2fa.iso(now())));
    PERFORM hms2fa.audit('phone.released', r->>'account_id', p_ticket, 'number reassigned',
      jsonb_build_object('phone', v.phone, 'device_ids', r->'device_ids',
                         'verified_by_account', v.account_id, 'verification_id', v.verification_id,
                         'verified_by', v.verified_by, 'message_id', v_message));
    v_released := jsonb_set(v_released, ARRAY[(
      SELECT (e.ordinality - 1)::text FROM jsonb_array_elements(v_released) WITH ORDINALITY e
       WHERE e.value->>'account_id' = r->>'account_id')], r || jsonb_build_object('message_id', v_message));
  END LOOP;
  RETURN v_released;
END
$$;

-- A code confirmed, and with p_release the number released from its other holders: as before,
-- the release now through retire_holders and record_release.
CREATE OR REPLACE FUNCTION hms2fa_api.confirm_verification(p_try_id bigint, p_ticket text, p_release boolean DEFAULT false)
  RETURNS TABLE (outcome text, tries_left integer, account_id text, phone text, purpose text,
                 other_holders jsonb, released jsonb)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_try hms2fa.code_tries;
  v hms2fa.phone_verifications;
  v_diff integer := 0;
  v_outcome text;
  v_holders jsonb;
  v_released jsonb := '[]';
  v_high_risk text;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_release AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'releasing a phone number from another account needs hms2fa_tier2'
      USING ERRCODE = 'H2P01', HINT = 'confirm without --release, and ask a tier-2 agent to release the number';
  END IF;
  SELECT * INTO v_try FROM hms2fa.code_tries x WHERE x.try_id = p_try_id AND x.tried_by = session_user FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no try % of this login''s', p_try_id USING ERRCODE = 'H2D05';
  END IF;
  -- The try must have been committed first: a try made in this transaction (or one still open)
  -- could be rolled back after its verdict is known.
  IF pg_xact_status(v_try.made_in) IS DISTINCT FROM 'committed' THEN
    RAISE EXCEPTION 'a try is judged only after it is committed' USING ERRCODE = 'H2U07',
      HINT = 'commit hms2fa_api.try_code first, then ask for the verdict in a new transaction';
  END IF;
  IF v_try.judged_at IS NOT NULL THEN
    RAISE EXCEPTION 'try % was judged already (%)', p_try_id, v_try.outcome USING ERRCODE = 'H2D05';
  END IF;
  SELECT * INTO v FROM hms2fa.phone_verifications x WHERE x.verification_id = v_try.verification_id FOR UPDATE;

  IF p_release AND v.purpose <> 'ownership' THEN
    RAISE EXCEPTION 'only a phone ownership check can release a number' USING ERRCODE = 'H2U06';
  END IF;

  -- A high-risk account's devices are taken away only by a reset a second agent approves, so a
  -- release that would retire one is refused before the code is even compared.
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

  IF v.state <> 'pending' THEN
    v_outcome := 'not_pending';
  ELSIF v.expires_at <= clock_timestamp() THEN
    v_outcome := 'expired';
  ELSE
    FOR i IN 0..31 LOOP
      v_diff := v_diff | (get_byte(v.code_hash, i) # get_byte(v_try.candidate_hash, i));
    END LOOP;
    v_outcome := CASE WHEN v_diff = 0 THEN 'verified' WHEN v.attempts >= 5 THEN 'locked' ELSE 'wrong_code' END;
  END IF;

  UPDATE hms2fa.code_tries x SET outcome = v_outcome, judged_at = clock_timestamp(), candidate_hash = NULL
   WHERE x.try_id = v_try.try_id;

  IF v_outcome = 'not_pending' THEN
    RETURN QUERY SELECT v_outcome, 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  ELSIF v_outcome = 'expired' THEN
    UPDATE hms2fa.phone_verifications x SET state = 'expired', ended_at = clock_timestamp()
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'code expired',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 0));
    RETURN QUERY SELECT v_outcome, 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  ELSIF v_outcome <> 'verified' THEN
    IF v_outcome = 'locked' THEN
      UPDATE hms2fa.phone_verifications x SET state = 'failed', ended_at = clock_timestamp()
       WHERE x.verification_id = v.verification_id;
    END IF;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'wrong code',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 5 - v.attempts));
    RETURN QUERY SELECT v_outcome, 5 - v.attempts, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
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
    v_released := hms2fa.retire_holders(v);
  END IF;

  -- The events last: the chain's head stays locked from here to the commit.
  PERFORM hms2fa.audit('phone.verified', v.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                       'channel', v.channel));
  v_released := hms2fa.record_release(v, p_ticket, v_released);

  RETURN QUERY SELECT 'verified'::text, 5 - v.attempts, v.account_id, v.phone, v.purpose, v_holders, v_released;
END
$$;

-- phone release: a tier-2 agent releases p_phone from every other account that has it on a
-- device in use, relying on the ownership proof of p_account_id for that number that a tier-1
-- (or any) agent confirmed in the last 15 minutes and nobody has released on yet (H2D12
-- otherwise; H2D13 when nobody else has the number). The proof is spent. Returns the released
-- accounts, each with its notice's message_id.
CREATE FUNCTION hms2fa_api.release_number(p_account_id text, p_phone text, p_ticket text)
  RETURNS TABLE (verification_id bigint, verified_by text, released jsonb)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
  v_released jsonb;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v FROM hms2fa.phone_verifications x
   WHERE x.account_id = lower(p_account_id) AND x.phone = p_phone AND x.purpose = 'ownership'
     AND x.state = 'verified' AND x.used_at IS NULL AND x.ended_at > clock_timestamp() - interval '15 minutes'
   ORDER BY x.ended_at DESC LIMIT 1
     FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no proof that % owns % in the last 15 minutes; nothing was changed', p_account_id, p_phone
      USING ERRCODE = 'H2D12',
            HINT = 'send a code (phone verify) and have it confirmed (phone confirm), then release within 15 minutes';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM hms2fa.devices d
                  WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id) THEN
    RAISE EXCEPTION 'no other account has % on a device in use; nothing to release', v.phone USING ERRCODE = 'H2D13';
  END IF;
  v_released := hms2fa.retire_holders(v);
  UPDATE hms2fa.phone_verifications x SET used_at = clock_timestamp() WHERE x.verification_id = v.verification_id;
  v_released := hms2fa.record_release(v, p_ticket, v_released);
  RETURN QUERY SELECT v.verification_id, v.verified_by, v_released;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.release_number(text, text, text) TO hms2fa_tier2;

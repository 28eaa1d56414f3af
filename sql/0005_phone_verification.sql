-- Proving who owns a phone number: 6-digit codes sent by text or voice call. Two purposes share
-- the machinery: 'ownership' (a number typed by the agent, before it is enrolled again) and
-- 'identity' (a number already on file for the account, before a reset). Only a salted SHA-256
-- of each code is stored; the code itself never reaches the database.

SET LOCAL ROLE hms2fa_owner;

CREATE TABLE hms2fa.phone_verifications (
  verification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  purpose         text NOT NULL CONSTRAINT purpose_known CHECK (purpose IN ('ownership', 'identity')),
  account_id      text NOT NULL REFERENCES hms2fa.accounts,
  phone           text NOT NULL CONSTRAINT phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
  device_id       bigint REFERENCES hms2fa.devices,
  channel         text NOT NULL CONSTRAINT channel_known CHECK (channel IN ('sms', 'voice')),
  code_hash       bytea NOT NULL CONSTRAINT code_hash_is_sha256 CHECK (length(code_hash) = 32),
  salt            bytea NOT NULL CONSTRAINT salt_16_bytes CHECK (length(salt) = 16),
  ticket          text NOT NULL,
  created_by      text NOT NULL DEFAULT session_user,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL,
  attempts        integer NOT NULL DEFAULT 0 CONSTRAINT attempts_0_to_5 CHECK (attempts BETWEEN 0 AND 5),
  state           text NOT NULL DEFAULT 'pending'
                  CONSTRAINT state_known CHECK (state IN ('pending', 'verified', 'failed', 'expired',
                                                          'replaced', 'cancelled')),
  ended_at        timestamptz,
  verified_by     text,
  CONSTRAINT identity_names_device CHECK (purpose <> 'identity' OR device_id IS NOT NULL),
  CONSTRAINT ended_unless_pending CHECK ((state = 'pending') = (ended_at IS NULL))
);

CREATE INDEX phone_verifications_phone_idx ON hms2fa.phone_verifications (phone, created_at);
CREATE INDEX phone_verifications_account_idx ON hms2fa.phone_verifications (account_id, created_at);
-- At most one code waiting per person, purpose and number: a new one replaces it.
CREATE UNIQUE INDEX phone_verifications_one_pending_idx
  ON hms2fa.phone_verifications (account_id, purpose, phone) WHERE state = 'pending';

-- Records a new code (its salted hash) after the checks; replaces the person's waiting code for
-- the same number and purpose. At most 3 codes per number per hour, whoever asks.
CREATE FUNCTION hms2fa.start_verification(
  p_purpose text, p_account_id text, p_phone text, p_device_id bigint, p_channel text,
  p_code_hash bytea, p_salt bytea, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_recent integer;
  v_oldest timestamptz;
  v_replaced integer;
  v_row hms2fa.phone_verifications;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_channel IS NULL OR p_channel NOT IN ('sms', 'voice') THEN
    RAISE EXCEPTION 'a code is sent by sms or voice' USING ERRCODE = 'H2U05';
  END IF;
  IF p_phone IS NULL OR p_phone !~ '^\+[1-9][0-9]{6,14}$' THEN
    RAISE EXCEPTION 'not a phone number in E.164 form' USING ERRCODE = 'H2D06';
  END IF;
  v_account := hms2fa.account_for_update(p_account_id);
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; no code can be sent for it', v_account.account_id
      USING ERRCODE = 'H2D03';
  END IF;

  -- Serialise senders of one number, so that the hourly limit holds under concurrency.
  PERFORM pg_advisory_xact_lock(hashtextextended('hms2fa.phone:' || p_phone, 0));
  SELECT count(*), min(v.created_at) INTO v_recent, v_oldest
    FROM hms2fa.phone_verifications v
   WHERE v.phone = p_phone AND v.created_at > now() - interval '1 hour';
  IF v_recent >= 3 THEN
    RAISE EXCEPTION 'three codes were sent to % in the last hour; try again after % UTC', p_phone,
      to_char((v_oldest + interval '1 hour') AT TIME ZONE 'UTC', 'HH24:MI')
      USING ERRCODE = 'H2R02';
  END IF;

  UPDATE hms2fa.phone_verifications v
     SET state = 'replaced', ended_at = now()
   WHERE v.account_id = v_account.account_id AND v.purpose = p_purpose AND v.phone = p_phone
     AND v.state = 'pending';
  GET DIAGNOSTICS v_replaced = ROW_COUNT;

  INSERT INTO hms2fa.phone_verifications
         (purpose, account_id, phone, device_id, channel, code_hash, salt, ticket, expires_at)
  VALUES (p_purpose, v_account.account_id, p_phone, p_device_id, p_channel, p_code_hash, p_salt, p_ticket,
          now() + interval '10 minutes')
  RETURNING * INTO v_row;

  PERFORM hms2fa.audit('phone.verification_sent', v_account.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v_row.verification_id, 'purpose', p_purpose, 'phone', p_phone,
                       'channel', p_channel, 'device_id', p_device_id, 'replaced', v_replaced));
  RETURN QUERY SELECT v_row.verification_id, v_row.phone, v_row.expires_at, v_replaced;
END
$$;

-- phone verify: a number the caller says is theirs.
CREATE FUNCTION hms2fa_api.start_phone_verification(
  p_account_id text, p_phone text, p_channel text, p_code_hash bytea, p_salt bytea, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer)
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.start_verification('ownership', p_account_id, p_phone, NULL, p_channel, p_code_hash,
                                          p_salt, p_ticket);
END;

-- identity check: a number already on file (the default device's, or the device named); the
-- agent never types the number.
CREATE FUNCTION hms2fa_api.start_identity_check(
  p_account_id text, p_device_id bigint, p_channel text, p_code_hash bytea, p_salt bytea, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer,
                 device_id bigint)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_device hms2fa.devices;
BEGIN
  SELECT * INTO v_device FROM hms2fa.devices d
   WHERE d.account_id = lower(p_account_id) AND d.retired_at IS NULL AND d.phone IS NOT NULL
     AND (CASE WHEN p_device_id IS NULL THEN d.is_default ELSE d.device_id = p_device_id END);
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
    IF p_device_id IS NULL THEN
      RAISE EXCEPTION '% has no default device with a phone number on file', lower(p_account_id)
        USING ERRCODE = 'H2D07', HINT = 'name a phone of theirs with --device (see user show), or verify identity another way';
    END IF;
    RAISE EXCEPTION 'device % is not a phone of % in use', p_device_id, lower(p_account_id)
      USING ERRCODE = 'H2D07', HINT = 'see user show for the devices on file';
  END IF;
  RETURN QUERY
    SELECT s.verification_id, s.phone, s.expires_at, s.replaced, v_device.device_id
      FROM hms2fa.start_verification('identity', p_account_id, v_device.phone, v_device.device_id,
                                     p_channel, p_code_hash, p_salt, p_ticket) s;
END
$$;

-- The waiting code's id and salt (not secret), so the tool can hash what the caller reads out.
-- p_phone NULL: the identity check's code.
CREATE FUNCTION hms2fa_api.pending_verification(p_account_id text, p_purpose text, p_phone text)
RETURNS TABLE (verification_id bigint, salt bytea)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY
    SELECT v.verification_id, v.salt FROM hms2fa.phone_verifications v
     WHERE v.account_id = lower(p_account_id) AND v.purpose = p_purpose AND v.state = 'pending'
       AND (p_phone IS NULL OR v.phone = p_phone)
     ORDER BY v.verification_id DESC LIMIT 1;
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
    RAISE EXCEPTION 'no code is waiting for % %', lower(p_account_id),
      CASE WHEN p_phone IS NULL THEN '(identity check)' ELSE 'on ' || p_phone END
      USING ERRCODE = 'H2D05',
            HINT = 'it was used, replaced, cancelled or never sent: send a new one';
  END IF;
END
$$;

-- Checks the hash of what the caller read out. Never raises for a wrong or expired code, so
-- the attempt counter and the end of the verification are committed: the outcome says what
-- happened. Comparison is constant-time over the 32 bytes.
--
-- Outcomes: verified, wrong_code (tries_left > 0), locked (fifth wrong try), expired,
-- not_pending (already used, replaced or ended: e.g. a concurrent confirm won).
CREATE FUNCTION hms2fa.confirm_verification(
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
  r record;
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

  IF v.expires_at <= now() THEN
    UPDATE hms2fa.phone_verifications x SET state = 'expired', ended_at = now()
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
           ended_at = CASE WHEN x.attempts + 1 >= 5 THEN now() END
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'wrong code',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 5 - (v.attempts + 1)));
    RETURN QUERY SELECT CASE WHEN v.attempts + 1 >= 5 THEN 'locked' ELSE 'wrong_code' END,
                        5 - (v.attempts + 1), v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;

  UPDATE hms2fa.phone_verifications x SET state = 'verified', ended_at = now(), verified_by = session_user
   WHERE x.verification_id = v.verification_id;
  PERFORM hms2fa.audit('phone.verified', v.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                       'channel', v.channel));

  SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', d.account_id, 'device_id', d.device_id)
                            ORDER BY d.account_id, d.device_id), '[]')
    INTO v_holders
    FROM hms2fa.devices d
   WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id;

  IF p_release AND jsonb_array_length(v_holders) > 0 THEN
    FOR r IN
      WITH retired AS (
        UPDATE hms2fa.devices d
           SET retired_at = now(), retired_reason = 'number reassigned', is_default = false
         WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id
        RETURNING d.account_id, d.device_id)
      SELECT t.account_id, array_agg(t.device_id ORDER BY t.device_id) AS devices, a.email, a.display_name
        FROM retired t JOIN hms2fa.accounts a USING (account_id)
       GROUP BY t.account_id, a.email, a.display_name
       ORDER BY t.account_id
    LOOP
      PERFORM hms2fa.audit('phone.released', r.account_id, p_ticket, 'number reassigned',
        jsonb_build_object('phone', v.phone, 'device_ids', to_jsonb(r.devices),
                           'verified_by_account', v.account_id, 'verification_id', v.verification_id));
      v_released := v_released || jsonb_build_array(jsonb_build_object(
        'account_id', r.account_id, 'device_ids', to_jsonb(r.devices), 'email', r.email,
        'display_name', r.display_name));
    END LOOP;
  END IF;

  RETURN QUERY SELECT 'verified', 5 - v.attempts, v.account_id, v.phone, v.purpose, v_holders, v_released;
END
$$;

CREATE FUNCTION hms2fa_api.confirm_verification(
  p_verification_id bigint, p_candidate bytea, p_ticket text, p_release boolean DEFAULT false
) RETURNS TABLE (outcome text, tries_left integer, account_id text, phone text, purpose text,
                 other_holders jsonb, released jsonb)
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.confirm_verification(p_verification_id, p_candidate, p_ticket, p_release);
END;

-- A code that could not be delivered is ended at once, so it can't be guessed either.
CREATE FUNCTION hms2fa_api.cancel_verification(p_verification_id bigint, p_ticket text, p_reason text)
RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  UPDATE hms2fa.phone_verifications x SET state = 'cancelled', ended_at = now()
   WHERE x.verification_id = p_verification_id AND x.state = 'pending'
  RETURNING * INTO v;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM hms2fa.audit('phone.verification_cancelled', v.account_id, p_ticket, p_reason,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone));
  RETURN true;
END
$$;

-- An identity proof for the account: a code on a phone on file, confirmed within p_within.
CREATE FUNCTION hms2fa.identity_proof(p_account_id text, p_within interval)
RETURNS hms2fa.phone_verifications
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.phone_verifications v
   WHERE v.account_id = p_account_id AND v.purpose = 'identity' AND v.state = 'verified'
     AND v.ended_at > now() - p_within
   ORDER BY v.ended_at DESC LIMIT 1;
END;

-- phone owner: who has this number now, who had it, who proved it.
CREATE FUNCTION hms2fa_api.phone_owner(p_phone text) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT jsonb_build_object(
    'phone', p_phone,
    'accounts', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'account_id', d.account_id, 'display_name', a.display_name, 'status', a.status,
               'device_id', d.device_id, 'kind', d.kind, 'label', d.label,
               'state', CASE WHEN d.activated_at IS NULL AND d.kind IN ('mobile', 'tablet') THEN 'pending'
                             ELSE 'active' END,
               'since', hms2fa.iso(d.created_at), 'last_used_at', hms2fa.iso(d.last_used_at))
             ORDER BY d.created_at, d.device_id)
        FROM hms2fa.devices d JOIN hms2fa.accounts a USING (account_id)
       WHERE d.phone = p_phone AND d.retired_at IS NULL), '[]'),
    'history', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'account_id', d.account_id, 'device_id', d.device_id, 'kind', d.kind,
               'since', hms2fa.iso(d.created_at), 'retired_at', hms2fa.iso(d.retired_at),
               'retired_reason', d.retired_reason)
             ORDER BY d.retired_at DESC, d.device_id)
        FROM hms2fa.devices d
       WHERE d.phone = p_phone AND d.retired_at IS NOT NULL), '[]'),
    'verifications', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'verification_id', v.verification_id, 'account_id', v.account_id, 'purpose', v.purpose,
               'at', hms2fa.iso(coalesce(v.ended_at, v.created_at)), 'channel', v.channel,
               'actor', coalesce(v.verified_by, v.created_by), 'state', v.state)
             ORDER BY v.verification_id DESC)
        FROM (SELECT * FROM hms2fa.phone_verifications x WHERE x.phone = p_phone
               ORDER BY x.verification_id DESC LIMIT 50) v), '[]'));
END;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_phone_verification(text, text, text, bytea, bytea, text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_identity_check(text, bigint, text, bytea, bytea, text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.pending_verification(text, text, text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.confirm_verification(bigint, bytea, text, boolean) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.cancel_verification(bigint, text, text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.phone_owner(text) TO hms2fa_tier1;

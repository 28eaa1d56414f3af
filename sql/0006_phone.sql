-- Codes by text or call: proving who owns a number, and proving who is calling (an identity
-- check to a device already enrolled). Every try is committed before it is judged. Serves
-- hms2fa_tier1 (start, try, confirm, cancel, who has this number) and hms2fa_tier2 (a release).

SET LOCAL ROLE hms2fa_owner;

CREATE TABLE hms2fa.phone_verifications (
  verification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  purpose         text NOT NULL CONSTRAINT purpose_known CHECK (purpose IN ('ownership', 'identity')),
  account_id      text NOT NULL REFERENCES hms2fa.accounts,
  phone           text NOT NULL CONSTRAINT phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
  device_id       bigint REFERENCES hms2fa.devices,
  channel         text NOT NULL CONSTRAINT channel_known CHECK (channel IN ('sms', 'voice')),
  -- Salted SHA-256 of the code, stored by the delivery service when it sends it: empty until then.
  code_hash       bytea CONSTRAINT code_hash_is_sha256 CHECK (length(code_hash) = 32),
  salt            bytea CONSTRAINT salt_16_bytes CHECK (length(salt) = 16),
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
  -- When an identity proof was spent (by a reset or a reset request): once only.
  used_at         timestamptz,
  CONSTRAINT identity_names_device CHECK (purpose <> 'identity' OR device_id IS NOT NULL),
  CONSTRAINT ended_unless_pending CHECK ((state = 'pending') = (ended_at IS NULL)),
  CONSTRAINT used_only_when_verified CHECK (used_at IS NULL OR state = 'verified'),
  CONSTRAINT code_and_salt_together CHECK ((code_hash IS NULL) = (salt IS NULL))
);

CREATE INDEX phone_verifications_phone_idx ON hms2fa.phone_verifications (phone, created_at);
CREATE INDEX phone_verifications_account_idx ON hms2fa.phone_verifications (account_id, created_at);
-- At most one code waiting per person, purpose and number: a new one replaces it.
CREATE UNIQUE INDEX phone_verifications_one_pending_idx
  ON hms2fa.phone_verifications (account_id, purpose, phone) WHERE state = 'pending';

-- ... and a proof only from such a device, should one be recorded another way.
CREATE FUNCTION hms2fa.identity_device_counts() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.purpose = 'identity' AND NOT EXISTS (
       SELECT 1 FROM hms2fa.devices d
        WHERE d.device_id = NEW.device_id AND d.account_id = NEW.account_id AND d.retired_at IS NULL
          AND d.phone = NEW.phone
          AND (d.kind = 'landline' OR (d.kind IN ('mobile', 'tablet') AND d.activated_at IS NOT NULL))) THEN
    RAISE EXCEPTION 'an identity code goes only to a phone of the account in use' USING ERRCODE = 'H2D07';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER phone_verifications_identity_device
  BEFORE INSERT ON hms2fa.phone_verifications
  FOR EACH ROW EXECUTE FUNCTION hms2fa.identity_device_counts();

-- Tries at a code, counted so that no rollback takes one back.
CREATE TABLE hms2fa.code_tries (
  try_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  verification_id bigint NOT NULL REFERENCES hms2fa.phone_verifications,
  -- sha256(salt || the digits tried); cleared once judged.
  candidate_hash  bytea CONSTRAINT candidate_is_sha256 CHECK (length(candidate_hash) = 32),
  -- The transaction that made the try: the try is judged only once it has committed.
  made_in         xid8 NOT NULL DEFAULT pg_current_xact_id(),
  tried_by        text NOT NULL DEFAULT session_user,
  tried_at        timestamptz NOT NULL DEFAULT now(),
  outcome         text CONSTRAINT outcome_known
                  CHECK (outcome IN ('verified', 'wrong_code', 'locked', 'expired', 'not_pending')),
  judged_at       timestamptz,
  CONSTRAINT judged_with_outcome CHECK ((outcome IS NULL) = (judged_at IS NULL))
);

CREATE INDEX code_tries_verification_idx ON hms2fa.code_tries (verification_id);

-- An identity proof for the account: an identity code to a device on file, confirmed within
-- p_within of the clock (not of the transaction's start) and not spent yet.
CREATE FUNCTION hms2fa.identity_proof(p_account_id text, p_within interval)
RETURNS hms2fa.phone_verifications
  LANGUAGE sql VOLATILE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.phone_verifications v
   WHERE v.account_id = p_account_id AND v.purpose = 'identity' AND v.state = 'verified'
     AND v.used_at IS NULL AND v.ended_at > clock_timestamp() - p_within
   ORDER BY v.ended_at DESC LIMIT 1;
END;

-- Records a new code request after the checks and queues its message (the delivery service
-- makes the code); replaces the person's waiting code for the same number and purpose. At most
-- 3 codes per number per hour, whoever asks.
CREATE FUNCTION hms2fa.start_verification(
  p_purpose text, p_account_id text, p_phone text, p_device_id bigint, p_channel text, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer, message_id bigint)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_recent integer;
  v_oldest timestamptz;
  v_replaced integer;
  v_row hms2fa.phone_verifications;
  v_message bigint;
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

  -- No code yet: the delivery service makes it when it sends the message.
  INSERT INTO hms2fa.phone_verifications
         (purpose, account_id, phone, device_id, channel, code_hash, salt, ticket, expires_at)
  VALUES (p_purpose, v_account.account_id, p_phone, p_device_id, p_channel, NULL, NULL, p_ticket,
          now() + interval '10 minutes')
  RETURNING * INTO v_row;

  v_message := hms2fa.queue_message('phone_code', p_channel, v_account.account_id, p_phone, p_ticket,
    jsonb_build_object('purpose', p_purpose), p_verification_id => v_row.verification_id);

  PERFORM hms2fa.audit('phone.verification_sent', v_account.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v_row.verification_id, 'purpose', p_purpose, 'phone', p_phone,
                       'channel', p_channel, 'device_id', p_device_id, 'replaced', v_replaced,
                       'message_id', v_message));
  RETURN QUERY SELECT v_row.verification_id, v_row.phone, v_row.expires_at, v_replaced, v_message;
END
$$;

-- phone verify: a code to a number the caller says is theirs (ownership).
CREATE FUNCTION hms2fa_api.start_phone_verification(
  p_account_id text, p_phone text, p_channel text, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer, message_id bigint)
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT s.verification_id, s.phone, s.expires_at, s.replaced, s.message_id
    FROM hms2fa.start_verification('ownership', p_account_id, p_phone, NULL::bigint, p_channel, p_ticket) s;
END;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_phone_verification(text,text,text,text) TO hms2fa_tier1;

-- Identity codes only to a device that counts --------------------------------------------------
CREATE FUNCTION hms2fa_api.start_identity_check(
  p_account_id text, p_device_id bigint, p_channel text, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer, device_id bigint,
                 message_id bigint)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_device hms2fa.devices;
BEGIN
  -- Only a phone the person has proven they hold: an activated mobile or tablet, or a landline.
  -- A phone typed in during a setup never finished may be anyone's (the caller's own).
  SELECT * INTO v_device FROM hms2fa.devices d
   WHERE d.account_id = lower(p_account_id) AND d.retired_at IS NULL AND d.phone IS NOT NULL
     AND (d.kind = 'landline' OR (d.kind IN ('mobile', 'tablet') AND d.activated_at IS NOT NULL))
     AND (CASE WHEN p_device_id IS NULL THEN d.is_default ELSE d.device_id = p_device_id END);
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
    IF p_device_id IS NULL THEN
      RAISE EXCEPTION '% has no default device in use with a phone number on file', lower(p_account_id)
        USING ERRCODE = 'H2D07', HINT = 'name a phone of theirs in use with --device (see user show), or verify identity another way';
    END IF;
    RAISE EXCEPTION 'device % is not a phone of % in use (a phone never activated does not count)', p_device_id,
      lower(p_account_id)
      USING ERRCODE = 'H2D07', HINT = 'see user show for the devices on file';
  END IF;
  RETURN QUERY
    SELECT s.verification_id, s.phone, s.expires_at, s.replaced, v_device.device_id, s.message_id
      FROM hms2fa.start_verification('identity', p_account_id, v_device.phone, v_device.device_id,
                                     p_channel, p_ticket) s;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_identity_check(text,bigint,text,text) TO hms2fa_tier1;

-- Step 1 of a confirmation: the code the caller read out, counted against the waiting code's
-- five tries. The caller commits, then asks for the verdict (step 2); a try rolled back was
-- never made, and one committed can't be taken back.
CREATE FUNCTION hms2fa_api.try_code(
  p_account_id text, p_purpose text, p_phone text, p_code text, p_ticket text
) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
  v_try bigint;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_code IS NULL OR p_code !~ '^[0-9]{6}$' THEN
    RAISE EXCEPTION 'a verification code is 6 digits (what the person received)' USING ERRCODE = 'H2U07';
  END IF;
  SELECT * INTO v FROM hms2fa.phone_verifications x
   WHERE x.account_id = lower(p_account_id) AND x.purpose = p_purpose AND x.state = 'pending'
     AND (p_phone IS NULL OR x.phone = p_phone)
   ORDER BY x.verification_id DESC LIMIT 1
     FOR UPDATE;
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
    RAISE EXCEPTION 'no code is waiting for % %', lower(p_account_id),
      CASE WHEN p_phone IS NULL THEN '(identity check)' ELSE 'on ' || p_phone END
      USING ERRCODE = 'H2D05',
            HINT = 'it was used, replaced, cancelled or never sent: send a new one';
  END IF;
  IF v.code_hash IS NULL THEN
    RAISE EXCEPTION 'the code for % has not been sent yet', v.phone
      USING ERRCODE = 'H2D05',
            HINT = 'wait for the person to receive it (hms2fa-admin delivery status shows the queue)';
  END IF;
  IF v.attempts >= 5 THEN
    RAISE EXCEPTION 'the code for % has had its five tries', v.phone
      USING ERRCODE = 'H2D05', HINT = 'send a new one';
  END IF;
  UPDATE hms2fa.phone_verifications x SET attempts = x.attempts + 1
   WHERE x.verification_id = v.verification_id;
  INSERT INTO hms2fa.code_tries (verification_id, candidate_hash)
  VALUES (v.verification_id, sha256(v.salt || convert_to(p_code, 'UTF8')))
  RETURNING try_id INTO v_try;
  RETURN v_try;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.try_code(text,text,text,text,text) TO hms2fa_tier1;

-- Step 2: the verdict on a committed try; with p_release (tier2), the number is released from
-- other accounts, each of which is sent a notice in this transaction.
CREATE FUNCTION hms2fa_api.confirm_verification(p_try_id bigint, p_ticket text, p_release boolean DEFAULT false)
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
  r jsonb;
  v_high_risk text;
  v_holder_ids text[];
  v_message bigint;
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
    -- The holders' accounts, locked in id order (as a reset locks an account before its devices)
    -- so that none turns high risk between this check and the retire.
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
    -- Each former holder hears of it, in this transaction.
    v_message := hms2fa.queue_message('release_notice', 'email', r->>'account_id', r->>'email', p_ticket,
      jsonb_build_object('name', r->>'display_name', 'phone', v.phone, 'at', hms2fa.iso(now())));
    PERFORM hms2fa.audit('phone.released', r->>'account_id', p_ticket, 'number reassigned',
      jsonb_build_object('phone', v.phone, 'device_ids', r->'device_ids',
                         'verified_by_account', v.account_id, 'verification_id', v.verification_id,
                         'message_id', v_message));
    v_released := jsonb_set(v_released, ARRAY[(
      SELECT (e.ordinality - 1)::text FROM jsonb_array_elements(v_released) WITH ORDINALITY e
       WHERE e.value->>'account_id' = r->>'account_id')], r || jsonb_build_object('message_id', v_message));
  END LOOP;

  RETURN QUERY SELECT 'verified'::text, 5 - v.attempts, v.account_id, v.phone, v.purpose, v_holders, v_released;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.confirm_verification(bigint,text,boolean) TO hms2fa_tier1;

-- Cancelling a code: its starter, or a tier-2 agent ----------------------------------------
CREATE FUNCTION hms2fa_api.cancel_verification(p_verification_id bigint, p_ticket text, p_reason text)
  RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v FROM hms2fa.phone_verifications x WHERE x.verification_id = p_verification_id FOR UPDATE;
  IF NOT FOUND OR v.state <> 'pending' THEN
    RETURN false;
  END IF;
  IF v.created_by <> session_user AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'code % was sent by %; only they or a tier-2 agent may cancel it', p_verification_id,
      v.created_by USING ERRCODE = 'H2P06';
  END IF;
  UPDATE hms2fa.phone_verifications x SET state = 'cancelled', ended_at = now()
   WHERE x.verification_id = v.verification_id;
  PERFORM hms2fa.audit('phone.verification_cancelled', v.account_id, p_ticket, p_reason,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone));
  RETURN true;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.cancel_verification(bigint,text,text) TO hms2fa_tier1;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.phone_owner(text) TO hms2fa_tier1;

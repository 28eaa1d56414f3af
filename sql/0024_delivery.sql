-- The delivery service: no secret and no notice passes through a desk agent's hands.
--
-- Desk functions take no token, hash or salt any more. They record the request and queue a
-- message in hms2fa.outbox in the same transaction; so does every change the person must hear
-- about (a reset, a number released from their account), however it was made. The delivery
-- service (`hms2fa-admin delivery run`, role hms2fa_delivery) claims each message, makes its
-- secret from the OS's CSPRNG, stores only the hash (once per attempt), sends it and records the
-- outcome. No staff role can read the outbox or call the delivery functions.
--
-- A code is judged only after the try at it is committed (hms2fa.code_tries), so a rollback
-- can't take a try back: five tries end a code whatever the caller does.

DO $$
BEGIN
  CREATE ROLE hms2fa_delivery NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

SET LOCAL ROLE hms2fa_owner;

GRANT USAGE ON SCHEMA hms2fa_api TO hms2fa_delivery;

-- The secrets are made after the request: their hashes are empty until the service sends them.
ALTER TABLE hms2fa.activation_links ALTER COLUMN token_hash DROP NOT NULL;
ALTER TABLE hms2fa.phone_verifications ALTER COLUMN code_hash DROP NOT NULL;
ALTER TABLE hms2fa.phone_verifications ALTER COLUMN salt DROP NOT NULL;
ALTER TABLE hms2fa.phone_verifications
  ADD CONSTRAINT code_and_salt_together CHECK ((code_hash IS NULL) = (salt IS NULL));

-- Clean text -------------------------------------------------------------------------------

-- Text a person typed that the record keeps: 1 to 500 characters, no C0 or C1 control, DEL,
-- bidirectional override or isolate, or zero-width character (what can hide or reorder text).
CREATE FUNCTION hms2fa.is_clean_text(p_text text) RETURNS boolean
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
RETURN char_length(p_text) <= 500
   AND p_text !~ '[\x01-\x1F\x7F-\x9F\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]';

-- The same text made clean, for text a program wrote (a delivery program's error line).
CREATE FUNCTION hms2fa.clean_text(p_text text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
RETURN left(regexp_replace(p_text, '[\x01-\x1F\x7F-\x9F\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]', ' ', 'g'),
            500);

-- The outbox ----------------------------------------------------------------------------------

CREATE TABLE hms2fa.outbox (
  message_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind            text NOT NULL
                  CONSTRAINT kind_known
                  CHECK (kind IN ('activation_link', 'phone_code', 'reset_notice', 'release_notice')),
  channel         text NOT NULL CONSTRAINT channel_known CHECK (channel IN ('email', 'sms', 'voice')),
  account_id      text NOT NULL REFERENCES hms2fa.accounts,
  -- The email of record or the E.164 number when the message was queued.
  recipient       text NOT NULL,
  link_id         bigint REFERENCES hms2fa.activation_links,
  verification_id bigint REFERENCES hms2fa.phone_verifications,
  ticket          text NOT NULL,
  -- What the message says besides its secret (names, devices, times); cleared a day after the
  -- message ended, the row staying as history.
  body            jsonb,
  queued_by       text NOT NULL DEFAULT session_user,
  queued_at       timestamptz NOT NULL DEFAULT now(),
  state           text NOT NULL DEFAULT 'queued'
                  CONSTRAINT state_known CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
  attempts        integer NOT NULL DEFAULT 0 CONSTRAINT attempts_not_negative CHECK (attempts >= 0),
  -- The attempt whose secret is stored: one secret per attempt.
  secret_attempt  integer,
  -- Queued: when it may go; sending: when the claim lapses, and another attempt may take it.
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text,
  ended_at        timestamptz,
  CONSTRAINT carries_its_secret
    CHECK ((kind = 'activation_link') = (link_id IS NOT NULL)
           AND (kind = 'phone_code') = (verification_id IS NOT NULL)),
  CONSTRAINT channel_fits_kind CHECK ((kind = 'phone_code') = (channel <> 'email')),
  CONSTRAINT ended_when_final CHECK ((state IN ('queued', 'sending')) = (ended_at IS NULL))
);

CREATE INDEX outbox_due_idx ON hms2fa.outbox (next_attempt_at) WHERE state IN ('queued', 'sending');
CREATE INDEX outbox_account_idx ON hms2fa.outbox (account_id, message_id);
CREATE INDEX outbox_ended_idx ON hms2fa.outbox (ended_at) WHERE body IS NOT NULL;

-- Queues a message; the service is woken at commit (NOTIFY is transactional).
CREATE FUNCTION hms2fa.queue_message(
  p_kind text, p_channel text, p_account_id text, p_recipient text, p_ticket text, p_body jsonb,
  p_link_id bigint DEFAULT NULL, p_verification_id bigint DEFAULT NULL
) RETURNS bigint
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_id bigint;
BEGIN
  INSERT INTO hms2fa.outbox (kind, channel, account_id, recipient, link_id, verification_id, ticket, body)
  VALUES (p_kind, p_channel, p_account_id, p_recipient, p_link_id, p_verification_id, p_ticket, p_body)
  RETURNING message_id INTO v_id;
  PERFORM pg_notify('hms2fa_outbox', v_id::text);
  RETURN v_id;
END
$$;

-- Activation links: the request only --------------------------------------------------------

DROP FUNCTION hms2fa_api.create_activation_link(text, bigint, bytea, interval, text);

CREATE FUNCTION hms2fa_api.create_activation_link(
  p_account_id text, p_device_id bigint, p_valid_for interval, p_ticket text
) RETURNS TABLE (link_id bigint, device_id bigint, device_label text, expires_at timestamptz, email text,
                 display_name text, superseded integer, message_id bigint)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_device hms2fa.devices;
  v_pending bigint[];
  v_recent integer;
  v_oldest timestamptz;
  v_link hms2fa.activation_links;
  v_superseded integer;
  v_message bigint;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_valid_for IS NULL OR p_valid_for < interval '5 minutes' OR p_valid_for > interval '7 days' THEN
    RAISE EXCEPTION 'an activation link is valid for 5 minutes to 7 days' USING ERRCODE = 'H2U04';
  END IF;
  v_account := hms2fa.account_for_update(p_account_id);
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; no activation link can be sent', v_account.account_id
      USING ERRCODE = 'H2D03';
  END IF;

  IF p_device_id IS NULL THEN
    SELECT array_agg(d.device_id ORDER BY d.device_id) INTO v_pending
      FROM hms2fa.devices d
     WHERE d.account_id = v_account.account_id AND d.retired_at IS NULL AND d.activated_at IS NULL
       AND d.kind IN ('mobile', 'tablet') AND d.platform IS DISTINCT FROM 'other';
    IF v_pending IS NULL THEN
      RAISE EXCEPTION '% has no mobile device waiting for activation', v_account.account_id
        USING ERRCODE = 'H2D04',
              HINT = 'the person must first choose Mobile phone in "Start setup"';
    ELSIF cardinality(v_pending) > 1 THEN
      RAISE EXCEPTION '% has % devices waiting for activation (%)', v_account.account_id,
        cardinality(v_pending), array_to_string(v_pending, ', ')
        USING ERRCODE = 'H2D04', HINT = 'choose one with --device';
    END IF;
    p_device_id := v_pending[1];
  END IF;
  SELECT * INTO v_device FROM hms2fa.devices d
   WHERE d.device_id = p_device_id AND d.account_id = v_account.account_id;
  IF NOT FOUND OR v_device.retired_at IS NOT NULL OR v_device.activated_at IS NOT NULL
     OR v_device.kind NOT IN ('mobile', 'tablet') OR v_device.platform IS NOT DISTINCT FROM 'other' THEN
    RAISE EXCEPTION 'device % is not a mobile device of % waiting for activation', p_device_id,
      v_account.account_id USING ERRCODE = 'H2D04';
  END IF;

  SELECT count(*), min(l.created_at) INTO v_recent, v_oldest
    FROM hms2fa.activation_links l
   WHERE l.account_id = v_account.account_id AND l.created_at > now() - interval '24 hours';
  IF v_recent >= 5 THEN
    RAISE EXCEPTION 'five activation links were sent to % in the last 24 hours; the next may be sent after % UTC',
      v_account.account_id, to_char((v_oldest + interval '24 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
      USING ERRCODE = 'H2R01';
  END IF;

  -- A new link replaces the device's older ones: only the newest email works.
  UPDATE hms2fa.activation_links l
     SET revoked_at = now(), revoked_reason = 'superseded'
   WHERE l.device_id = v_device.device_id AND l.used_at IS NULL AND l.revoked_at IS NULL;
  GET DIAGNOSTICS v_superseded = ROW_COUNT;

  -- No token yet: the delivery service makes it when it sends the email.
  INSERT INTO hms2fa.activation_links (token_hash, account_id, device_id, ticket, expires_at)
  VALUES (NULL, v_account.account_id, v_device.device_id, p_ticket, now() + p_valid_for)
  RETURNING * INTO v_link;

  v_message := hms2fa.queue_message('activation_link', 'email', v_account.account_id, v_account.email, p_ticket,
    jsonb_build_object('name', v_account.display_name, 'device_label', v_device.label,
                       'expires_at', hms2fa.iso(v_link.expires_at)),
    p_link_id => v_link.link_id);

  PERFORM hms2fa.audit('activation.sent', v_account.account_id, p_ticket, NULL,
    jsonb_build_object('link_id', v_link.link_id, 'device_id', v_device.device_id,
                       'expires_at', hms2fa.iso(v_link.expires_at), 'superseded', v_superseded,
                       'message_id', v_message));

  RETURN QUERY SELECT v_link.link_id, v_device.device_id, v_device.label, v_link.expires_at,
                      v_account.email, v_account.display_name, v_superseded, v_message;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.create_activation_link(text, bigint, interval, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.create_activation_link(text, bigint, interval, text) TO hms2fa_tier1;

-- Codes: the request only -------------------------------------------------------------------

DROP FUNCTION hms2fa_api.start_phone_verification(text, text, text, bytea, bytea, text);
DROP FUNCTION hms2fa_api.start_identity_check(text, bigint, text, bytea, bytea, text);
DROP FUNCTION hms2fa.start_verification(text, text, text, bigint, text, bytea, bytea, text);

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

REVOKE ALL ON FUNCTION hms2fa.start_verification(text, text, text, bigint, text, text) FROM PUBLIC;

CREATE FUNCTION hms2fa_api.start_phone_verification(
  p_account_id text, p_phone text, p_channel text, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer, message_id bigint)
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT s.verification_id, s.phone, s.expires_at, s.replaced, s.message_id
    FROM hms2fa.start_verification('ownership', p_account_id, p_phone, NULL::bigint, p_channel, p_ticket) s;
END;

REVOKE ALL ON FUNCTION hms2fa_api.start_phone_verification(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_phone_verification(text, text, text, text) TO hms2fa_tier1;

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
    SELECT s.verification_id, s.phone, s.expires_at, s.replaced, v_device.device_id, s.message_id
      FROM hms2fa.start_verification('identity', p_account_id, v_device.phone, v_device.device_id,
                                     p_channel, p_ticket) s;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.start_identity_check(text, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.start_identity_check(text, bigint, text, text) TO hms2fa_tier1;

-- Tries at a code, counted so that no rollback takes one back --------------------------------

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

DROP FUNCTION hms2fa_api.pending_verification(text, text, text);
DROP FUNCTION hms2fa_api.confirm_verification(bigint, bytea, text, boolean);
DROP FUNCTION hms2fa.confirm_verification(bigint, bytea, text, boolean);

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

REVOKE ALL ON FUNCTION hms2fa_api.try_code(text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.try_code(text, text, text, text, text) TO hms2fa_tier1;

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

REVOKE ALL ON FUNCTION hms2fa_api.confirm_verification(bigint, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.confirm_verification(bigint, text, boolean) TO hms2fa_tier1;

-- A reset's notice, queued in the reset's own transaction (a direct reset and an approved one
-- both end here).
CREATE OR REPLACE FUNCTION hms2fa.record_reset(
  p_account hms2fa.accounts, p_changes jsonb, p_ticket text, p_verified_via text, p_reason text, p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_retired integer := jsonb_array_length(p_changes->'device_ids');
  v_event bigint;
  v_message bigint;
BEGIN
  v_message := hms2fa.queue_message('reset_notice', 'email', p_account.account_id, p_account.email, p_ticket,
    jsonb_build_object(
      'name', p_account.display_name, 'at', hms2fa.iso(now()),
      'devices', (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', d.kind, 'label', d.label, 'phone', d.phone)
                                            ORDER BY d.device_id), '[]')
                    FROM hms2fa.devices d
                   WHERE d.device_id IN (SELECT x::bigint FROM jsonb_array_elements_text(p_changes->'device_ids') x)),
      'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers'));

  v_event := hms2fa.audit('enrollment.reset', p_account.account_id, p_ticket, p_reason,
    jsonb_build_object('devices_retired', v_retired, 'device_ids', p_changes->'device_ids',
                       'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
                       'codes_cancelled', p_changes->'codes', 'login_action_was', p_account.login_action,
                       'verified_via', p_verified_via, 'message_id', v_message)
    || coalesce(p_details, '{}'));

  RETURN jsonb_build_object(
    'status', 'reset', 'account_id', p_account.account_id, 'event_id', v_event,
    'devices_retired', v_retired, 'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
    'codes_cancelled', p_changes->'codes', 'enrollment', hms2fa.enrollment_of(p_account.account_id),
    'start_setup_visible', hms2fa.enrollment_of(p_account.account_id) = 'not_enrolled',
    'email', p_account.email, 'display_name', p_account.display_name, 'verified_via', p_verified_via,
    'at', hms2fa.iso(now()), 'message_id', v_message);
END
$$;

-- The tool no longer mails notices itself, so it has no failure of its own to record.
DROP FUNCTION hms2fa_api.record_reset_notice_failure(text, text, bigint, text);

-- What a desk agent may know of a message: whether it left, never what it carried -----------

CREATE FUNCTION hms2fa_api.message_state(p_message_id bigint)
  RETURNS TABLE (state text, attempts integer, last_error text, next_attempt_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT o.state, o.attempts, o.last_error, o.next_attempt_at
    FROM hms2fa.outbox o WHERE o.message_id = p_message_id;
END;

REVOKE ALL ON FUNCTION hms2fa_api.message_state(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.message_state(bigint) TO hms2fa_tier1;

-- Messages not sent yet, and those that failed in the last p_days days (delivery status).
CREATE FUNCTION hms2fa_api.delivery_status(p_days integer DEFAULT 7)
  RETURNS TABLE (message_id bigint, kind text, channel text, account_id text, recipient text, ticket text,
                 queued_by text, queued_at timestamptz, state text, attempts integer,
                 next_attempt_at timestamptz, last_error text, ended_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT o.message_id, o.kind, o.channel, o.account_id, o.recipient, o.ticket, o.queued_by, o.queued_at,
         o.state, o.attempts, o.next_attempt_at, o.last_error, o.ended_at
    FROM hms2fa.outbox o
   WHERE o.state IN ('queued', 'sending')
      OR (o.state = 'failed' AND o.ended_at > now() - make_interval(days => p_days))
   ORDER BY o.message_id;
END;

REVOKE ALL ON FUNCTION hms2fa_api.delivery_status(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.delivery_status(integer) TO hms2fa_tier1, hms2fa_operator, hms2fa_delivery;

-- The delivery service's own functions ------------------------------------------------------

-- Claims the next message due, for p_lease (after which another attempt may take it, should
-- this one die). Messages whose secret was revoked, used or ended meanwhile are cancelled on
-- the way. Returns no row when nothing is due.
CREATE FUNCTION hms2fa_api.claim_message(p_lease interval)
  RETURNS TABLE (message_id bigint, kind text, channel text, recipient text, ticket text, body jsonb,
                 attempts integer, queued_at timestamptz, expires_at timestamptz)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m hms2fa.outbox;
  v_expires timestamptz;
  v_live boolean;
BEGIN
  IF p_lease IS NULL OR p_lease < interval '1 second' OR p_lease > interval '1 hour' THEN
    RAISE EXCEPTION 'a claim lasts 1 second to 1 hour' USING ERRCODE = 'H2U04';
  END IF;
  LOOP
    SELECT * INTO m FROM hms2fa.outbox o
     WHERE o.state IN ('queued', 'sending') AND o.next_attempt_at <= now()
     ORDER BY o.next_attempt_at, o.message_id
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
      RETURN;
    END IF;
    v_live := true;
    v_expires := NULL;
    IF m.kind = 'activation_link' THEN
      SELECT l.expires_at, l.used_at IS NULL AND l.revoked_at IS NULL AND l.expires_at > now()
        INTO v_expires, v_live
        FROM hms2fa.activation_links l WHERE l.link_id = m.link_id
         FOR UPDATE;
    ELSIF m.kind = 'phone_code' THEN
      SELECT v.expires_at, v.state = 'pending' AND v.expires_at > now()
        INTO v_expires, v_live
        FROM hms2fa.phone_verifications v WHERE v.verification_id = m.verification_id
         FOR UPDATE;
    END IF;
    IF v_live THEN
      UPDATE hms2fa.outbox o
         SET state = 'sending', attempts = o.attempts + 1, next_attempt_at = now() + p_lease
       WHERE o.message_id = m.message_id;
      RETURN QUERY SELECT m.message_id, m.kind, m.channel, m.recipient, m.ticket, m.body, m.attempts + 1,
                          m.queued_at, v_expires;
      RETURN;
    END IF;
    UPDATE hms2fa.outbox o
       SET state = 'cancelled', ended_at = now(),
           last_error = 'what it carried was used, revoked or ended before it could be sent'
     WHERE o.message_id = m.message_id;
    PERFORM pg_notify('hms2fa_delivery', m.message_id::text);
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.claim_message(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.claim_message(interval) TO hms2fa_delivery;

-- Stores the hash of the secret a claimed message carries (and the salt, for a code): once per
-- attempt, replacing what an earlier attempt stored.
CREATE FUNCTION hms2fa_api.store_message_secret(p_message_id bigint, p_hash bytea, p_salt bytea DEFAULT NULL)
  RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m hms2fa.outbox;
BEGIN
  SELECT * INTO m FROM hms2fa.outbox o WHERE o.message_id = p_message_id FOR UPDATE;
  IF NOT FOUND OR m.state <> 'sending' THEN
    RAISE EXCEPTION 'message % is not being sent', p_message_id USING ERRCODE = 'H2D08';
  END IF;
  IF m.secret_attempt IS NOT DISTINCT FROM m.attempts THEN
    RAISE EXCEPTION 'message % has its secret for this attempt already', p_message_id USING ERRCODE = 'H2D08';
  END IF;
  IF p_hash IS NULL OR length(p_hash) <> 32 THEN
    RAISE EXCEPTION 'a secret is stored as its SHA-256' USING ERRCODE = 'H2U08';
  END IF;
  IF m.kind = 'activation_link' THEN
    UPDATE hms2fa.activation_links l SET token_hash = p_hash
     WHERE l.link_id = m.link_id AND l.used_at IS NULL AND l.revoked_at IS NULL;
  ELSIF m.kind = 'phone_code' THEN
    IF p_salt IS NULL OR length(p_salt) <> 16 THEN
      RAISE EXCEPTION 'a code is stored with a 16-byte salt' USING ERRCODE = 'H2U08';
    END IF;
    UPDATE hms2fa.phone_verifications v SET code_hash = p_hash, salt = p_salt
     WHERE v.verification_id = m.verification_id AND v.state = 'pending';
  ELSE
    RAISE EXCEPTION 'message % carries no secret', p_message_id USING ERRCODE = 'H2D08';
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'what message % carries was used, revoked or ended', p_message_id USING ERRCODE = 'H2D08';
  END IF;
  UPDATE hms2fa.outbox o SET secret_attempt = o.attempts WHERE o.message_id = m.message_id;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.store_message_secret(bigint, bytea, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.store_message_secret(bigint, bytea, bytea) TO hms2fa_delivery;

-- Records what became of an attempt: 'sent'; 'retry' after p_retry_after (a temporary failure);
-- or 'failed' for good, which revokes the link or cancels the code the message carried. Only
-- the claimed attempt counts: once an outcome is recorded, a late report changes nothing.
CREATE FUNCTION hms2fa_api.record_delivery(
  p_message_id bigint, p_attempt integer, p_outcome text, p_error text DEFAULT NULL,
  p_retry_after interval DEFAULT NULL
) RETURNS text
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m hms2fa.outbox;
  -- A delivery program's error line goes into the record cleaned, never refused.
  v_error text := hms2fa.clean_text(p_error);
  v_state text;
BEGIN
  IF p_outcome IS NULL OR p_outcome NOT IN ('sent', 'retry', 'failed') THEN
    RAISE EXCEPTION 'an outcome is sent, retry or failed' USING ERRCODE = 'H2U08';
  END IF;
  SELECT * INTO m FROM hms2fa.outbox o WHERE o.message_id = p_message_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no message %', p_message_id USING ERRCODE = 'H2D08';
  END IF;
  IF m.state <> 'sending' OR m.attempts <> p_attempt THEN
    RETURN m.state;
  END IF;

  IF p_outcome = 'sent' THEN
    v_state := 'sent';
    UPDATE hms2fa.outbox o SET state = 'sent', ended_at = now(), last_error = NULL
     WHERE o.message_id = m.message_id;
  ELSIF p_outcome = 'retry' AND p_retry_after IS NOT NULL THEN
    v_state := 'queued';
    UPDATE hms2fa.outbox o SET state = 'queued', next_attempt_at = now() + p_retry_after, last_error = v_error
     WHERE o.message_id = m.message_id;
  ELSE
    v_state := 'failed';
    UPDATE hms2fa.outbox o SET state = 'failed', ended_at = now(), last_error = v_error
     WHERE o.message_id = m.message_id;
    -- Nothing the person never received may keep working.
    IF m.kind = 'activation_link' THEN
      UPDATE hms2fa.activation_links l SET revoked_at = now(), revoked_reason = 'delivery failed'
       WHERE l.link_id = m.link_id AND l.used_at IS NULL AND l.revoked_at IS NULL;
    ELSIF m.kind = 'phone_code' THEN
      UPDATE hms2fa.phone_verifications v SET state = 'cancelled', ended_at = now()
       WHERE v.verification_id = m.verification_id AND v.state = 'pending';
    END IF;
    PERFORM hms2fa.audit('delivery.failed', m.account_id, m.ticket, v_error,
      jsonb_build_object('message_id', m.message_id, 'kind', m.kind, 'channel', m.channel,
                         'attempts', m.attempts, 'link_id', m.link_id, 'verification_id', m.verification_id));
  END IF;
  PERFORM pg_notify('hms2fa_delivery', m.message_id::text);
  RETURN v_state;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.record_delivery(bigint, integer, text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.record_delivery(bigint, integer, text, text, interval) TO hms2fa_delivery;

-- Spent secrets, cleared by the nightly job ---------------------------------------------------

-- Clears up to p_limit hashes of links and codes that can no longer be used, candidate hashes
-- of tries, and the bodies of messages that ended more than a day ago; the rows stay as
-- history. Returns how many rows it cleared: the caller repeats until 0.
CREATE FUNCTION hms2fa_api.purge_spent_secrets(p_limit integer)
  RETURNS TABLE (links integer, codes integer, tries integer, bodies integer)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_links integer;
  v_codes integer;
  v_tries integer;
  v_bodies integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'a batch is 1 to 100000 rows' USING ERRCODE = 'H2U08';
  END IF;
  UPDATE hms2fa.activation_links l SET token_hash = NULL
   WHERE l.link_id IN (SELECT x.link_id FROM hms2fa.activation_links x
                        WHERE x.token_hash IS NOT NULL
                          AND (x.used_at IS NOT NULL OR x.revoked_at IS NOT NULL OR x.expires_at <= now())
                        LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_links = ROW_COUNT;
  UPDATE hms2fa.phone_verifications v SET code_hash = NULL, salt = NULL
   WHERE v.verification_id IN (SELECT x.verification_id FROM hms2fa.phone_verifications x
                                WHERE x.code_hash IS NOT NULL
                                  AND (x.state <> 'pending' OR x.expires_at <= now())
                                LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_codes = ROW_COUNT;
  UPDATE hms2fa.code_tries t SET candidate_hash = NULL
   WHERE t.try_id IN (SELECT x.try_id FROM hms2fa.code_tries x
                       WHERE x.candidate_hash IS NOT NULL AND x.tried_at <= now() - interval '1 day'
                       LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_tries = ROW_COUNT;
  UPDATE hms2fa.outbox o SET body = NULL
   WHERE o.message_id IN (SELECT x.message_id FROM hms2fa.outbox x
                           WHERE x.body IS NOT NULL AND x.ended_at <= now() - interval '1 day'
                           LIMIT p_limit FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS v_bodies = ROW_COUNT;
  RETURN QUERY SELECT v_links, v_codes, v_tries, v_bodies;
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.purge_spent_secrets(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.purge_spent_secrets(integer) TO hms2fa_batch;

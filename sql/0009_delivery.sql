-- The delivery service: no secret and no notice passes through a desk agent's hands. Desk
-- functions and changes queue messages in hms2fa.outbox in their own transaction; the service
-- claims each, makes its secret from the OS's CSPRNG, stores only the hash (once per attempt),
-- sends it and records the outcome. Serves hms2fa_delivery (claim, store, record),
-- hms2fa_tier1 (a message's state) and hms2fa_tier1, hms2fa_operator, hms2fa_delivery (status).

SET LOCAL ROLE hms2fa_owner;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.store_message_secret(bigint,bytea,bytea) TO hms2fa_delivery;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.record_delivery(bigint,integer,text,text,interval) TO hms2fa_delivery;

-- What a desk agent may know of a message: whether it left, never what it carried -----------
CREATE FUNCTION hms2fa_api.message_state(p_message_id bigint)
  RETURNS TABLE (state text, attempts integer, last_error text, next_attempt_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT o.state, o.attempts, o.last_error, o.next_attempt_at
    FROM hms2fa.outbox o WHERE o.message_id = p_message_id;
END;
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
GRANT EXECUTE ON FUNCTION hms2fa_api.delivery_status(integer) TO hms2fa_delivery, hms2fa_operator, hms2fa_tier1;

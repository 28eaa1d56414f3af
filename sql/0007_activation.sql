-- Activation links, emailed to the email of record when a camera can't scan the QR code; the
-- token is made and sent by the delivery service, and only its hash is kept. Serves
-- hms2fa_tier1 (create, list, revoke) and hms2fa_signin (redeem).

SET LOCAL ROLE hms2fa_owner;

CREATE TABLE hms2fa.activation_links (
  link_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- SHA-256 of the token, stored by the delivery service when it sends it: empty until then.
  token_hash     bytea UNIQUE CONSTRAINT token_hash_is_sha256 CHECK (length(token_hash) = 32),
  account_id     text NOT NULL REFERENCES hms2fa.accounts,
  device_id      bigint NOT NULL REFERENCES hms2fa.devices,
  ticket         text NOT NULL,
  created_by     text NOT NULL DEFAULT session_user,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  used_at        timestamptz,
  revoked_at     timestamptz,
  revoked_reason text,
  CONSTRAINT lifetime_at_most_7_days
    CHECK (expires_at > created_at AND expires_at <= created_at + interval '7 days'),
  CONSTRAINT used_or_revoked_not_both CHECK (used_at IS NULL OR revoked_at IS NULL)
);

CREATE INDEX activation_links_account_idx ON hms2fa.activation_links (account_id, created_at);
CREATE INDEX activation_links_outstanding_idx ON hms2fa.activation_links (device_id)
  WHERE used_at IS NULL AND revoked_at IS NULL;

-- Links not used, not revoked, not expired.
CREATE FUNCTION hms2fa.outstanding_links(p_account_id text)
RETURNS SETOF hms2fa.activation_links
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.activation_links l
   WHERE l.account_id = p_account_id AND l.used_at IS NULL AND l.revoked_at IS NULL
     AND l.expires_at > now()
   ORDER BY l.link_id;
END;

-- activation send: records a link for the person's device waiting for activation and queues it
-- to the email of record; the delivery service makes the token. Revokes the device's earlier
-- outstanding links (superseded).
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
GRANT EXECUTE ON FUNCTION hms2fa_api.create_activation_link(text,bigint,interval,text) TO hms2fa_tier1;

-- activation list: the person's links, newest first, with their state (never a token or hash).
CREATE FUNCTION hms2fa_api.activation_links(p_account_id text)
RETURNS TABLE (link_id bigint, device_id bigint, created_by text, ticket text, created_at timestamptz,
               expires_at timestamptz, used_at timestamptz, revoked_at timestamptz,
               revoked_reason text, state text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
    RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
  END IF;
  RETURN QUERY
    SELECT l.link_id, l.device_id, l.created_by, l.ticket, l.created_at, l.expires_at, l.used_at,
           l.revoked_at, l.revoked_reason,
           CASE WHEN l.used_at IS NOT NULL THEN 'used'
                WHEN l.revoked_at IS NOT NULL THEN 'revoked'
                WHEN l.expires_at <= now() THEN 'expired'
                ELSE 'outstanding' END
      FROM hms2fa.activation_links l
     WHERE l.account_id = lower(p_account_id)
     ORDER BY l.link_id DESC
     LIMIT 50;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.activation_links(text) TO hms2fa_tier1;

-- Revokes the person's outstanding links (or just one, by id); writes activation.revoked when
-- anything was revoked.
CREATE FUNCTION hms2fa_api.revoke_activation_links(
  p_account_id text, p_ticket text, p_reason text DEFAULT NULL, p_link_id bigint DEFAULT NULL
) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_ids bigint[];
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  v_account := hms2fa.account_for_update(p_account_id);
  WITH revoked AS (
    UPDATE hms2fa.activation_links l
       SET revoked_at = now(), revoked_reason = coalesce(p_reason, 'revoked by the service desk')
     WHERE l.account_id = v_account.account_id AND l.used_at IS NULL AND l.revoked_at IS NULL
       AND l.expires_at > now() AND (p_link_id IS NULL OR l.link_id = p_link_id)
    RETURNING l.link_id)
  SELECT array_agg(link_id ORDER BY link_id) INTO v_ids FROM revoked;
  IF v_ids IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM hms2fa.audit('activation.revoked', v_account.account_id, p_ticket, p_reason,
                       jsonb_build_object('link_ids', to_jsonb(v_ids), 'revoked', cardinality(v_ids)));
  RETURN cardinality(v_ids);
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.revoke_activation_links(text,text,text,bigint) TO hms2fa_tier1;

-- The sign-in service's side: the person tapped the link. NULL (and no reason) unless the
-- token is known, unexpired, unrevoked and unused. Concurrent redemptions: the row lock makes
-- the second one see used_at set, so exactly one succeeds.
CREATE FUNCTION hms2fa_api.redeem_activation_link(token text) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_link hms2fa.activation_links;
  v_device_id bigint;
BEGIN
  IF token IS NULL OR length(token) > 200 THEN
    RETURN NULL;
  END IF;
  UPDATE hms2fa.activation_links l
     SET used_at = now()
   WHERE l.token_hash = sha256(convert_to(token, 'UTF8'))
     AND l.used_at IS NULL AND l.revoked_at IS NULL AND l.expires_at > now()
     AND EXISTS (SELECT 1 FROM hms2fa.accounts a
                  WHERE a.account_id = l.account_id AND a.status = 'active')
     AND EXISTS (SELECT 1 FROM hms2fa.devices d
                  WHERE d.device_id = l.device_id AND d.retired_at IS NULL)
  RETURNING * INTO v_link;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  UPDATE hms2fa.devices d SET activated_at = coalesce(d.activated_at, now())
   WHERE d.device_id = v_link.device_id
  RETURNING d.device_id INTO v_device_id;
  PERFORM hms2fa.audit('activation.redeemed', v_link.account_id, v_link.ticket, NULL,
                       jsonb_build_object('link_id', v_link.link_id, 'device_id', v_link.device_id));
  RETURN v_device_id;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.redeem_activation_link(text) TO hms2fa_signin;

-- Looking people up, and the browsers they asked to be remembered on. Serves hms2fa_tier1
-- (the card, finding, listing browsers) and hms2fa_tier2 (revoking them).

SET LOCAL ROLE hms2fa_owner;

-- Look-ups -------------------------------------------------------------------------------

-- One person, everything the desk needs on one screen, in one round trip. Later migrations
-- add sections in hms2fa_api.account_card.
CREATE FUNCTION hms2fa.account_card_base(p_key text) RETURNS jsonb
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_ids text[];
  v_card jsonb;
BEGIN
  IF position('@' IN p_key) > 0 THEN
    SELECT array_agg(a.account_id ORDER BY a.account_id) INTO v_ids
      FROM hms2fa.accounts a WHERE lower(a.email) = lower(p_key);
    IF cardinality(v_ids) > 1 THEN
      RAISE EXCEPTION 'that email of record belongs to % accounts: %', cardinality(v_ids),
        array_to_string(v_ids, ', ')
        USING ERRCODE = 'H2D02', HINT = 'show one of them by its account id';
    END IF;
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE lower(a.email) = lower(p_key);
  ELSE
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE a.account_id = lower(p_key);
  END IF;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;

  v_card := jsonb_build_object(
    'account_id', v_account.account_id,
    'display_name', v_account.display_name,
    'email', v_account.email,
    'status', v_account.status,
    'high_risk', v_account.high_risk,
    'login_action', v_account.login_action,
    'created_at', hms2fa.iso(v_account.created_at),
    'enrollment', hms2fa.enrollment_of(v_account.account_id));
  v_card := v_card || jsonb_build_object(
    'start_setup_visible', v_card->>'enrollment' = 'not_enrolled',
    'devices', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'device_id', d.device_id,
               'kind', d.kind,
               'platform', d.platform,
               'phone', d.phone,
               'label', d.label,
               'state', CASE WHEN d.retired_at IS NOT NULL THEN 'retired'
                             WHEN hms2fa.device_counts(d.kind, d.activated_at) THEN 'active'
                             ELSE 'pending' END,
               'is_default', d.is_default,
               'activated_at', hms2fa.iso(d.activated_at),
               'created_at', hms2fa.iso(d.created_at),
               'last_used_at', hms2fa.iso(d.last_used_at),
               'retired_at', hms2fa.iso(d.retired_at),
               'retired_reason', d.retired_reason)
             ORDER BY d.retired_at IS NOT NULL, d.device_id)
        FROM hms2fa.devices d WHERE d.account_id = v_account.account_id), '[]'),
    'remembered_browsers', (
      SELECT jsonb_build_object(
               'active', count(*) FILTER (WHERE r.revoked_at IS NULL AND r.expires_at > now()),
               'expired', count(*) FILTER (WHERE r.revoked_at IS NULL AND r.expires_at <= now()),
               'revoked', count(*) FILTER (WHERE r.revoked_at IS NOT NULL))
        FROM hms2fa.remembered_browsers r WHERE r.account_id = v_account.account_id),
    'recent_audit', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'event_id', e.event_id, 'at', hms2fa.iso(e.at), 'actor', e.actor,
               'action', e.action, 'ticket', e.ticket, 'reason', e.reason)
             ORDER BY e.event_id DESC)
        FROM (SELECT * FROM hms2fa.audit_events ae
               WHERE ae.account_id = v_account.account_id
               ORDER BY ae.event_id DESC LIMIT 10) e), '[]'));
  RETURN v_card;
END
$$;

-- user show: the card, with outstanding links (never a token or its hash).
CREATE FUNCTION hms2fa_api.account_card(p_key text) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_card jsonb;
BEGIN
  v_card := hms2fa.account_card_base(p_key);
  IF v_card IS NULL THEN
    RETURN NULL;
  END IF;
  RETURN v_card || jsonb_build_object('activation_links', coalesce((
    SELECT jsonb_agg(jsonb_build_object(
             'link_id', l.link_id, 'device_id', l.device_id, 'sent_at', hms2fa.iso(l.created_at),
             'sent_by', l.created_by, 'expires_at', hms2fa.iso(l.expires_at)) ORDER BY l.link_id)
      FROM hms2fa.outstanding_links(v_card->>'account_id') l), '[]'));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.account_card(text) TO hms2fa_tier1;

-- People whose id, email or name starts with the text (case-insensitive).
CREATE FUNCTION hms2fa_api.find_accounts(p_text text, p_limit integer DEFAULT 50)
RETURNS TABLE (account_id text, display_name text, email text, status text, enrollment text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pattern text := replace(replace(replace(lower(btrim(p_text)), '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
  IF btrim(coalesce(p_text, '')) = '' THEN
    RAISE EXCEPTION 'search text is empty' USING ERRCODE = 'H2U03';
  END IF;
  RETURN QUERY
    SELECT a.account_id, a.display_name, a.email, a.status, hms2fa.enrollment_of(a.account_id)
      FROM hms2fa.accounts a
     WHERE a.account_id LIKE v_pattern
        OR lower(a.email) LIKE v_pattern
        OR lower(a.display_name) LIKE v_pattern
     ORDER BY a.account_id
     LIMIT greatest(1, least(coalesce(p_limit, 50), 1000));
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.find_accounts(text,integer) TO hms2fa_tier1;

-- The browsers a person asked to be remembered on, newest first: when, until when, whether
-- revoked (never the token or its hash).
CREATE FUNCTION hms2fa_api.remembered_browsers(p_account_id text)
RETURNS TABLE (browser text, created_at timestamptz, expires_at timestamptz,
               revoked_at timestamptz, state text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
    RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
  END IF;
  -- Never the token hash: the desk has no use for it.
  RETURN QUERY
    SELECT r.browser, r.created_at, r.expires_at, r.revoked_at,
           CASE WHEN r.revoked_at IS NOT NULL THEN 'revoked'
                WHEN r.expires_at <= now() THEN 'expired'
                ELSE 'active' END
      FROM hms2fa.remembered_browsers r
     WHERE r.account_id = lower(p_account_id)
     ORDER BY r.created_at DESC;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.remembered_browsers(text) TO hms2fa_tier1;

-- Revokes every active remembered browser of a person; writes remembered.revoked when there was
-- at least one (nothing to revoke writes nothing).
CREATE FUNCTION hms2fa_api.revoke_remembered_browsers(p_account_id text, p_ticket text, p_reason text DEFAULT NULL)
RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_revoked integer;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  v_account := hms2fa.account_for_update(p_account_id);
  UPDATE hms2fa.remembered_browsers
     SET revoked_at = now()
   WHERE account_id = v_account.account_id AND revoked_at IS NULL AND expires_at > now();
  GET DIAGNOSTICS v_revoked = ROW_COUNT;
  IF v_revoked > 0 THEN
    PERFORM hms2fa.audit('remembered.revoked', v_account.account_id, p_ticket, p_reason,
                         jsonb_build_object('revoked', v_revoked));
  END IF;
  RETURN v_revoked;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.revoke_remembered_browsers(text,text,text) TO hms2fa_tier2;
